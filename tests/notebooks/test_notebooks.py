"""Every notebook runs top to bottom with small parameters, passes its own checks and
records the numbers it should.

papermill executes each notebook in a fresh kernel of this venv; a failing cell fails the
test with that cell's error in the message. The numbers a notebook records (`wb.record`)
are then checked here: their names, their ranges, the files the notebook wrote, and for
the quickstart and the anchors notebook the same numbers recomputed in this process with
the notebook's parameters.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench._progress import ENV as PROGRESS_ENV
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
    # as `workbench batch` runs them: nobody watches the kernel, so it shows no bars
    before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "off"
    try:
        pm.execute_notebook(
            str(NOTEBOOKS / name),
            str(out),
            parameters=params,
            cwd=str(tmp_path),
            progress_bar=False,
            kernel_name="python3",
        )
    finally:
        if before is None:
            del os.environ[PROGRESS_ENV]
        else:
            os.environ[PROGRESS_ENV] = before
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


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_papermill_reads_every_parameter_with_its_help(name):
    """`papermill --help-notebook` lists each parameter; a comment holding "=" made it
    warn "Unable to parse line" and drop that parameter's help (05_batch)."""
    import warnings

    import papermill as pm

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = pm.inspect_notebook(str(NOTEBOOKS / name))
    assert set(found) == set(_parameters(name))


def _parameters(name: str) -> dict:
    """The notebook's default parameters (its 'parameters' cell, run)."""
    namespace: dict = {}
    exec(_parameter_names(NOTEBOOKS / name), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def _top_q(n: int) -> int:
    """At most this many anchors (or preplan tokens) among `n` response tokens (q = 0.4)."""
    return max(1, round(0.4 * n))


def _check_quickstart(values, p, out, request):
    assert set(values) == {"response_tokens", "n_anchors", "n_preplan", "mean_waad"}
    n = values["response_tokens"]
    assert 1 <= n <= p["max_new_tokens"]
    assert 1 <= values["n_anchors"] <= _top_q(n) and 1 <= values["n_preplan"] <= _top_q(n)
    assert 0 < values["mean_waad"] <= p["window"]
    # the same generation and analysis here give the same numbers
    smol = request.getfixturevalue("smol")
    trace = wb.generate(
        smol, p["prompt"], max_new_tokens=p["max_new_tokens"], temperature=p["temperature"],
        seed=p["seed"],
    )  # fmt: skip
    a = wb.analyze(smol, trace, layers=p["layers"], window=p["window"], sink=p["sink"])
    assert values == {
        "response_tokens": trace.response_len,
        "n_anchors": len(a.anchors),
        "n_preplan": len(a.preplan),
        "mean_waad": pytest.approx(float(a.waad[trace.prompt_len :].mean()), rel=1e-4),
    }


def _check_heads(values, p, out, request):
    assert set(values) == {"local_span", "global_span", "stat_0", "stat_1", "stat_2"}
    assert 0 <= values["local_span"] < values["global_span"]  # local heads reach less far
    assert values["stat_0"] > 0  # entropy at WAAD peaks / mean entropy
    assert 0 <= values["stat_1"] <= 1 and 0 <= values["stat_2"] <= 1  # shares of peaks


def _check_anchors(values, p, out, request):
    assert set(values) == {"anchor_minus_random_kl", "n_traces"}
    assert values["n_traces"] == p["n_problems"]
    assert math.isfinite(values["anchor_minus_random_kl"])
    # the notebook's pipeline, here: greedy answers, analyses, knockouts, summary
    tiny = request.getfixturevalue("tiny")
    task = wb.tasks.get_task(p["task_name"])
    problems = task.generate(p["n_problems"], split="test", seed=p["seed"])
    traces = [
        wb.generate(tiny, q.prompt, max_new_tokens=96, temperature=0.0, chat=False)
        for q in problems
    ]
    frame = wb.ablation.run_ablations(
        tiny, traces, analyses=wb.analyze_many(tiny, traces), interventions=["knockout"],
        n_random=p["n_random"], seed=p["seed"], progress=False,
    )  # fmt: skip
    s = wb.ablation.summarize(frame, "kl_mean")
    row = s[(s.family == "anchors") & (s.comparison == "set - random")]
    assert values["anchor_minus_random_kl"] == pytest.approx(row.estimate.iloc[0], rel=1e-3)


def _check_credit_rl(values, p, out, request):
    assert set(values) == {f"final_{s}" for s in p["strategies"]}
    for strategy in p["strategies"]:
        finals = []
        for seed in p["seeds"]:
            run = out / strategy / f"seed-{seed}"
            status = json.loads((run / "status.json").read_text())
            assert status == {"status": "finished", "step": p["max_steps"]}
            lines = (run / "metrics.jsonl").read_text().splitlines()
            evals = [m for m in map(json.loads, lines) if "eval_accuracy" in m]
            assert [m["step"] for m in evals] == list(range(0, p["max_steps"] + 1, 2))
            finals.append(evals[-1]["eval_accuracy"])
        final = values[f"final_{strategy}"]
        assert final == pytest.approx(float(np.mean(finals)), abs=1e-12), strategy
        assert 0 <= final <= 1
        k = final * p["eval_size"] * len(p["seeds"])  # a share of eval_size problems
        assert k == pytest.approx(round(k), abs=1e-9), (strategy, final)


def _check_batch(values, p, out, request):
    summary = pd.read_csv(out / "summary.csv")
    tokens = pd.read_csv(out / "tokens.csv")
    assert values == {
        "n_prompts": 2,  # the built-in prompts
        "mean_anchor_fai": pytest.approx(summary.anchor_fai.mean(), rel=1e-12),
        "mean_waad": pytest.approx(summary.mean_waad.mean(), rel=1e-12),
    }
    assert summary.prompt.tolist() == [0, 1]
    assert summary.response_tokens.between(1, p["max_new_tokens"]).all()
    for r in summary.itertuples():
        assert 1 <= r.anchors <= _top_q(r.response_tokens), r
        assert 0 < r.anchor_fai <= 1 and 0 < r.mean_waad <= p["window"], r
    # tokens.csv: one row per token, the response rows of each prompt as counted above
    per_prompt = tokens[tokens.response].groupby("prompt").size()
    assert per_prompt.tolist() == summary.response_tokens.tolist()
    assert tokens[tokens.response].waad.between(0, p["window"]).all()


def _check_workshop(values, p, out, request):
    assert values == {"workshop_passed": True}


CHECKS = {
    "01_quickstart.ipynb": _check_quickstart,
    "02_heads.ipynb": _check_heads,
    "03_anchors.ipynb": _check_anchors,
    "04_credit_rl.ipynb": _check_credit_rl,
    "05_batch.ipynb": _check_batch,
    "06_workshop_solutions.ipynb": _check_workshop,
}


def test_every_notebook_run_has_its_checks():
    assert set(CHECKS) == set(SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, tmp_path, request):
    out = _execute(name, SMALL[name], tmp_path)
    _assert_no_bars_or_widgets(out)
    if name == "01_quickstart.ipynb":  # one execution serves both checks
        _assert_html_draws_charts_offline(out, charts=3)  # rhythm curves, text view, maps
    values = recorded(out)
    params = {**_parameters(name), **SMALL[name]}
    CHECKS[name](values, params, tmp_path / "out", request)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _assert_no_bars_or_widgets(out: Path) -> None:
    """The saved notebook keeps no progress bar and shows no widget: tqdm's bars (widgets
    under papermill, their text stuck at the first update, "Loading weights: 0%") were left
    in the outputs (``WORKBENCH_PROGRESS=off``, as `workbench batch` sets it, now hides them), and charts were ``JupyterChart`` widgets that nbconvert's page drew
    only with the widget manager from unpkg."""
    nb = nbformat.read(str(out), as_version=4)
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            assert WIDGET_VIEW not in o.get("data", {}), (i, o["data"].get("text/plain"))
            text = o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
            assert not re.search(r"\d+%\|", text), (i, text[:200])


def _assert_html_draws_charts_offline(out: Path, charts: int) -> None:
    """``jupyter nbconvert --to html`` of an executed notebook: each chart is in the page
    with Vega inlined, none is a widget (drawn with the widget manager from unpkg)."""
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_filename(str(out))
    assert page.count('class="workbench-chart"') == charts
    assert "window.vegaEmbed=" in page.replace(" ", "")
    assert '<script type="application/vnd.jupyter.widget-view+json">' not in page
    sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page)
    # nbconvert's own template loads require.js and MathJax: nothing that draws a chart
    assert all("cdnjs.cloudflare.com/ajax/libs/" in s for s in sources), sources
    assert not re.search(r"(unpkg\.com|jsdelivr\.net)/(vega|anywidget)", page)


@pytest.mark.slow
def test_unfilled_workshop_fails_with_a_helpful_message(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as e:
        _execute("06_workshop.ipynb", {}, tmp_path)
    assert "my_waad is not implemented yet" in str(e.value)
    assert "replace `raise NotImplementedError`" in str(e.value)
