"""The layers import only downward, and only the UI imports ipywidgets (import-linter).

The contracts live in pyproject.toml (``[tool.importlinter]``): cli / ui / report, batch,
tiny / rl / ablation / viz / attention / trace / models / the base modules, top to bottom.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency (lock/requirements.txt)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_every_import_contract_is_kept():
    proc = _lint()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.slow
def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package whose engine imports the UI is refused."""
    shutil.copytree(ROOT / "workbench", tmp_path / "workbench")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    engine = tmp_path / "workbench" / "attention" / "engine.py"
    engine.write_text(engine.read_text() + "\nfrom ..ui import panel  # noqa\n")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); "
         "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "workbench.attention is not allowed to import workbench.ui" in proc.stdout
