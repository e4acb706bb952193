"""The README's ```python blocks, executed in order in one process, as a user would run them.

Every block runs with the real default model (SmolLM2-135M) and the shipped tiny reasoner,
with the fewest textual substitutions that keep it fast (`SUBSTITUTIONS`): placeholder paths
become the shipped tiny checkpoint, and the RL runs shrink to two steps of a small batch.
A substitution whose text is no longer in the README fails the test (the README moved on:
update the table), and so does a python block under a heading the table does not know.

Each block is run statement by statement, so a failure names the README line that failed.
After a block, a few assertions check what the README's comments say (shapes, NaN outside
the response, no new forward pass, what is written to disk).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(os.environ.get("WORKBENCH_REPO", Path(__file__).resolve().parents[2]))
README = ROOT / "README.md"
TINY = str(ROOT / "workbench" / "tiny" / "checkpoint")

_SMALL_RL = "per_device_train_batch_size=8, eval_size=4, eval_samples=1, max_completion_length=48"

#: heading of the section holding a block -> (old, new) substitutions, applied in order.
#: The blocks under "Your own model" and "Many GPUs" run in a namespace of their own, so
#: they do not rebind `model` for the blocks after them.
SUBSTITUTIONS: dict[str, list[tuple[str, str]]] = {
    "Quickstart": [("max_new_tokens=128", "max_new_tokens=48")],
    "Your own model": [('"/path/to/checkpoint"', repr(TINY))],
    "Analyse": [],
    "Intervene": [],
    "Train": [
        ("max_steps=40), out=", f"max_steps=2, {_SMALL_RL}), out="),
        (
            '["none", "random", "global", "coupled"], seeds=[0, 1, 2], out="runs/exp", '
            "max_steps=40",
            f'["none", "coupled"], seeds=[0, 1], out="runs/exp", max_steps=2, {_SMALL_RL}',
        ),
    ],
    "Many GPUs: TRL and accelerate": [
        ('"path/to/Qwen3-4B"', repr(TINY)),
        ("task.generate(5000)", "task.generate(16)"),
        (
            "per_device_train_batch_size=8, num_generations=8",
            "per_device_train_batch_size=4, num_generations=4",
        ),
        (
            "bf16=True, logging_steps=1",
            "bf16=False, logging_steps=1, max_steps=1, max_completion_length=16, "
            'report_to="none", save_strategy="no"',
        ),
    ],
}
OWN_NAMESPACE = {"Your own model", "Many GPUs: TRL and accelerate"}


def readme_blocks() -> list[tuple[str, int, str]]:
    """``(heading, first line number, source)`` of every ```python block, in order."""
    blocks, heading = [], None
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"#{2,4} (.+)", line):
            heading = m.group(1).strip()
        if line.strip() == "```python":
            start, body = i + 2, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((heading, start, "\n".join(body) + "\n"))
        i += 1
    return blocks


def run_block(source: str, namespace: dict, heading: str, first_line: int) -> None:
    """Execute `source` statement by statement, naming the README line of a failure."""
    tree = ast.parse(source)
    for node in tree.body:
        code = compile(ast.Module([node], []), f"README.md ({heading})", "exec")
        try:
            exec(code, namespace)
        except Exception as e:
            line = first_line + node.lineno - 1
            snippet = ast.get_source_segment(source, node)
            raise AssertionError(
                f"README.md:{line} ({heading}) failed: {type(e).__name__}: {e}\n{snippet}"
            ) from e


def substituted(heading: str, source: str) -> str:
    assert heading in SUBSTITUTIONS, (
        f"a new ```python block under '{heading}': add it to SUBSTITUTIONS in this test"
    )
    for old, new in SUBSTITUTIONS[heading]:
        assert old in source, f"README block '{heading}' no longer contains {old!r}"
        source = source.replace(old, new)
    return source


def check_after(heading: str, ns: dict, forward_calls: dict[str, int]) -> None:
    """What the README's comments in the block just run say."""
    if heading == "Quickstart":
        trace = ns["trace"]
        assert trace.ids.ndim == 1 and 0 < trace.prompt_len < len(trace.ids)
        assert len(trace.tokens) == len(trace.ids) and trace.text.strip()
        assert ns["pasted"].prompt_len < len(ns["pasted"].ids)
        assert torch.equal(ns["wb"].Trace.load("trace.json").ids, trace.ids)
    elif heading == "Your own model":
        assert ns["model"].cfg.n_layers == 4  # the tiny reasoner, loaded from its folder
    elif heading == "Analyse":
        a, trace = ns["a"], ns["trace"]
        n, p = len(trace.ids), trace.prompt_len
        for x in (a.waad, a.fai, a.delta, a.gamma("coupled")):
            assert x.shape == (n,)
        for x in (a.waad, a.fai, a.delta):  # [pos], NaN outside the response
            assert torch.isnan(x[:p]).all() and not torch.isnan(x[p:]).all()
        n_heads = a.heads_frame().shape[0]
        assert len(a.local_heads) == len(a.global_heads) == round(0.3 * n_heads)
        assert a.to_frame().shape[0] == n
        assert forward_calls["after_with_params"] == forward_calls["before_with_params"]
        analyses = ns["analyses"]
        assert analyses[0].local_heads == analyses[1].local_heads  # heads_from="batch"
        assert ns["wb"].waad(ns["cache"]["pattern", 12][0], p).shape == (n,)
    elif heading == "Intervene":
        assert len(ns["frame"]) and {"family", "kl_mean"} <= set(ns["frame"].columns)
        assert len(ns["summary"])
    elif heading == "Train":
        run, exp = ns["run"], ns["exp"]
        assert run.status == "finished" and run.step == 2
        for name in ("config.json", "provenance.json", "metrics.jsonl"):
            assert (Path("runs/coupled") / name).is_file(), name
        assert not (Path("runs/coupled") / "resumes.json").exists()  # resumed when finished
        assert set(exp.summary()["strategy"]) == {"none", "coupled"}
        assert set(exp.summary("eval_sampled_accuracy")["strategy"]) == {"none", "coupled"}
    elif heading == "Many GPUs: TRL and accelerate":
        logged = ns["trainer"].state.log_history[0]
        assert "credit/gamma_mean" in logged and "credit/amplified_frac" in logged


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the RL block writes runs/ relative to the working directory
    blocks = readme_blocks()
    assert [h for h, _, _ in blocks] == list(SUBSTITUTIONS), (
        f"the README's python blocks are now under {[h for h, _, _ in blocks]}"
    )
    ns: dict = {}
    calls = {"plain": 0}
    for heading, first_line, source in blocks:
        source = substituted(heading, source)
        target = dict(ns) if heading in OWN_NAMESPACE else ns
        if heading == "Analyse":
            # Count forward passes of the plain model around with_params/select_heads.
            from workbench.models import sampler

            sampler(ns["model"]).register_forward_hook(
                lambda *_: calls.__setitem__("plain", calls["plain"] + 1)
            )
            head, tail = source.split("b = a.with_params", 1)
            run_block(head, target, heading, first_line)
            calls["before_with_params"] = calls["plain"]
            mid, rest = ("b = a.with_params" + tail).split("p = wb.RhythmParams", 1)
            run_block(mid, target, heading, first_line + head.count("\n"))
            calls["after_with_params"] = calls["plain"]
            rest = "p = wb.RhythmParams" + rest
            run_block(rest, target, heading, first_line + (head + mid).count("\n"))
        else:
            run_block(source, target, heading, first_line)
        check_after(heading, target, calls)
