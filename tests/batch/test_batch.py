"""The batch runner: papermill over a grid, an index, failures isolated, reruns skip."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import nbformat
import pytest

import workbench.batch
from workbench.batch import _read_index, _write_index, parse_grid, recorded, run_batch
from workbench.errors import WorkbenchError
from workbench.provenance import provenance


def _notebook(path, *, tag=True):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nfail = False")
    if tag:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("import workbench as wb\nwb.record(double=x * 2, label=f'x{x}')"),
        nbformat.v4.new_code_cell("if fail:\n    raise ValueError(f'asked to fail at x={x}')"),
        nbformat.v4.new_code_cell("wb.record(finished=True)"),
    ]
    nbformat.write(nb, str(path))
    return path


class TestGrid:
    def test_product_of_axes_with_coercion(self):
        grid = parse_grid(["model=a,b", "window=5,10", "flag=true"])
        assert len(grid) == 4
        assert grid[0] == {"model": "a", "window": 5, "flag": True}
        assert grid[-1] == {"model": "b", "window": 10, "flag": True}

    def test_semicolons_separate_values_with_commas(self):
        assert parse_grid(["layers=[1,2];[3]", "q=0.4"]) == [
            {"layers": [1, 2], "q": 0.4},
            {"layers": [3], "q": 0.4},
        ]

    @pytest.mark.parametrize("spec", ["novalue=", "=1,2", "bad key=1", "x"])
    def test_bad_specs_are_named(self, spec):
        with pytest.raises(WorkbenchError, match="bad grid spec"):
            parse_grid([spec])

    def test_repeated_key(self):
        with pytest.raises(WorkbenchError, match="given twice"):
            parse_grid(["a=1", "a=2"])


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", tag=False)
    with pytest.raises(WorkbenchError, match="0 cells tagged 'parameters'"):
        run_batch(nb, ["x=1"], tmp_path / "out", progress=False)


def test_a_grid_key_the_notebook_does_not_take_is_refused_before_any_run(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb")
    with pytest.raises(WorkbenchError, match=r"has no parameter\(s\) \['bogus'\]") as e:
        run_batch(nb, ["x=1,2", "bogus=1"], tmp_path / "out", progress=False)
    assert "['fail', 'x']" in e.value.fix
    assert not (tmp_path / "out").exists()


def test_index_keeps_each_rows_provenance_as_json(tmp_path):
    path = tmp_path / "index.csv"
    old = {**provenance(), "commit": "a" * 40}
    _write_index(path, [{"run_id": "r1", "x": 1, "status": "ok", "provenance": old}])
    with open(path) as f:
        assert json.loads(next(csv.DictReader(f))["provenance"]) == old
    assert _read_index(path)["r1"]["provenance"] == old


@pytest.mark.slow
def test_grid_with_a_failing_run_then_resume(tmp_path, monkeypatch):
    nb = _notebook(tmp_path / "nb.ipynb")
    out = tmp_path / "out"
    result = run_batch(nb, ["x=1,2", "fail=false,true"], out, workers=2, progress=False)

    assert len(result.rows) == 4 and not result.ok
    by = {(r["x"], r["fail"]): r for r in result.to_frame().to_dict("records")}
    assert by[(1, False)]["status"] == "ok" and by[(2, False)]["double"] == 4
    assert by[(2, False)]["finished"] is True
    failed = by[(2, True)]
    assert failed["status"] == "failed" and "asked to fail at x=2" in failed["error"]
    assert failed["double"] == 4  # values recorded before the failing cell are kept
    for r in result.rows:
        assert (out / r["notebook"]).is_file()
    assert recorded(out / by[(1, False)]["notebook"]) == {
        "double": 2,
        "label": "x1",
        "finished": True,
    }
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir())
    with open(out / "index.csv") as f:
        index = list(csv.DictReader(f))
    assert [r["status"] for r in index] == [r["status"] for r in result.rows]
    assert all(json.loads(r["provenance"]) == provenance() for r in index)

    ok_nb = out / by[(1, False)]["notebook"]
    failed_nb = out / failed["notebook"]
    ok_mtime, failed_mtime = ok_nb.stat().st_mtime_ns, failed_nb.stat().st_mtime_ns
    # The rerun happens "after a new commit": skipped rows keep what produced them.
    later = {**provenance(), "commit": "b" * 40}
    monkeypatch.setattr(workbench.batch, "provenance", lambda: dict(later))
    again = run_batch(nb, ["x=1,2", "fail=false,true"], out, progress=False)
    assert ok_nb.stat().st_mtime_ns == ok_mtime, "a run that succeeded must be skipped"
    assert failed_nb.stat().st_mtime_ns != failed_mtime, "a failed run is tried again"
    assert [r["status"] for r in again.rows] == [r["status"] for r in result.rows]
    prov = {r["notebook"]: r["provenance"] for r in again.rows}
    assert prov[ok_nb.name] == provenance() and prov[failed_nb.name] == later


@pytest.mark.slow
def test_cli_exit_code_and_index(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench",
            "batch",
            str(nb),
            "--grid",
            "x=3",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "1/1 runs succeeded" in proc.stdout and (tmp_path / "o" / "index.csv").is_file()
