"""`provenance()`: the versions and git commit recorded next to every artefact."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import workbench as wb
from workbench import provenance as prov_mod
from workbench.provenance import provenance

ROOT = Path(__file__).resolve().parents[2]
KEYS = [
    "python",
    "torch",
    "transformers",
    "transformer-lens",
    "trl",
    "workbench",
    "commit",
    "dirty",
]


def test_keys_and_versions_match_the_installed_packages():
    p = provenance()
    assert list(p) == KEYS
    assert p["python"] == platform.python_version()
    for dist in ("torch", "transformers", "transformer-lens", "trl"):
        assert p[dist] == importlib.metadata.version(dist)
    assert p["workbench"] == wb.__version__


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_commit_is_this_checkouts_head():
    p = provenance()
    assert re.fullmatch(r"[0-9a-f]{40}", p["commit"])
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert p["commit"] == head
    assert isinstance(p["dirty"], bool)


def test_cached_and_each_call_gets_its_own_copy():
    a = provenance()
    a["torch"] = "changed by a caller"
    b = provenance()
    assert b["torch"] == importlib.metadata.version("torch")
    assert prov_mod._collect.cache_info().hits >= 1


def test_a_missing_package_is_none():
    assert prov_mod.installed_version("no-such-distribution-xyz") is None


def test_no_commit_outside_the_top_of_a_work_tree(tmp_path):
    assert prov_mod._commit(tmp_path) == (None, None)  # not a git tree at all
    if (ROOT / ".git").exists():
        # Inside the checkout but not its top level (like a package under a project's .venv).
        assert prov_mod._commit(ROOT / "workbench") == (None, None)
        sha, dirty = prov_mod._commit(ROOT)
        assert re.fullmatch(r"[0-9a-f]{40}", sha) and isinstance(dirty, bool)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_of_a_work_tree_whose_path_has_spaces(tmp_path):
    # "My Projects/workbench" is a common place for a checkout; its commit is still known.
    top = tmp_path / "My Projects" / "workbench"
    top.mkdir(parents=True)

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(top), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    (top / "f.txt").write_text("x")
    git("add", "f.txt")
    git("commit", "-qm", "one")
    assert prov_mod._commit(top) == (git("rev-parse", "HEAD"), False)


def test_git_missing_or_failing_gives_none(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable
    assert prov_mod._commit(ROOT) == (None, None)

    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(prov_mod.subprocess, "run", hang)
    assert prov_mod._commit(ROOT) == (None, None)
