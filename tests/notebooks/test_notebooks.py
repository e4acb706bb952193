"""Every notebook runs top to bottom with small parameters and passes its own checks.

papermill executes each notebook in a fresh kernel of this venv; a failing cell fails the
test with that cell's error in the message.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from workbench.batch import recorded

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

SMALL = {
    "01_quickstart.ipynb": {"max_new_tokens": 32, "layers": "middle"},
    "02_heads.ipynb": {
        "prompts": ["What is 6 times 7? Think step by step.", "Name three colours."],
        "max_new_tokens": 32,
        "n_shuffles": 20,
    },
    "03_anchors.ipynb": {"n_problems": 3, "n_random": 2},
    "04_credit_rl.ipynb": {
        "strategies": ["none", "coupled"],
        "max_steps": 2,
        "per_device_train_batch_size": 8,
        "eval_size": 8,
    },
    "05_batch.ipynb": {"max_new_tokens": 24, "layers": "middle"},
    "06_workshop_solutions.ipynb": {},
}


def _execute(name: str, params: dict, tmp_path: Path):
    import papermill as pm

    params = dict(params)
    if "out_dir" in _parameter_names(NOTEBOOKS / name):
        params["out_dir"] = str(tmp_path / "out")
    out = tmp_path / name
    pm.execute_notebook(
        str(NOTEBOOKS / name),
        str(out),
        parameters=params,
        cwd=str(tmp_path),
        progress_bar=False,
        kernel_name="python3",
    )
    return out


def _parameter_names(path: Path) -> str:
    nb = nbformat.read(str(path), as_version=4)
    return "".join(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_each_notebook_is_parameterised_and_checks_itself(name):
    nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "assert" in nb.cells[-1].source or "check_" in "".join(c.source for c in nb.cells[-4:])
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit clean"
    assert name in SMALL or name == "06_workshop.ipynb", "give every notebook small test params"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, tmp_path):
    out = _execute(name, SMALL[name], tmp_path)
    values = recorded(out)
    assert values, "the notebook's last cell records its key numbers"
    if name == "06_workshop_solutions.ipynb":
        assert values == {"workshop_passed": True}


@pytest.mark.slow
def test_unfilled_workshop_fails_with_a_helpful_message(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        _execute("06_workshop.ipynb", {}, tmp_path)
    assert "my_waad is not implemented yet" in str(e.value)
    assert "replace `raise NotImplementedError`" in str(e.value)
