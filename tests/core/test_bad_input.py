"""Every bad input gets a clear error that names the problem: the sweep, as a table.

Each row is ``(call, error class, substring of the message)``; the call gets a context of
real objects (the shipped tiny reasoner, one of its traces and its analysis, a scratch
folder). A `WorkbenchError` also carries a fix, so every row of that class checks one is
given. Rows cover loading, traces, generation, analysis, ablation, RL, batch, viz and the
CLI; add one for every new entry point.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from safetensors.torch import load_file, save_file

import workbench as wb
from workbench import cli, viz
from workbench.ablation import perturb_position, run_ablations, target_sets
from workbench.attention import CreditParams, RhythmParams
from workbench.batch import run_batch
from workbench.errors import WorkbenchError
from workbench.report import write_report
from workbench.rl import GRPOConfig, resume, train
from workbench.tiny import CHECKPOINT_DIR

pytestmark = pytest.mark.slow  # loads the tiny reasoner, edits checkpoints, runs the CLI


@dataclass
class Ctx:
    model: Any
    trace: Any
    other: Any  # another trace of the same model
    analysis: Any
    tmp: Path
    broken: dict[str, Path]  # damaged checkpoint folders by kind
    notebook: Path


def _damaged(tmp: Path, kind: str, edit) -> Path:
    folder = tmp / kind
    shutil.copytree(CHECKPOINT_DIR, folder)
    if edit is not None:
        tensors = load_file(folder / "model.safetensors")
        save_file(edit(tensors), folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def ctx(tiny, tmp_path_factory) -> Ctx:
    tmp = tmp_path_factory.mktemp("bad")
    trace = wb.Trace.from_text(tiny, "Countdown: 3 7 25 -> 72", "25*3=75\n75-3=72", chat=False)
    other = wb.Trace.from_text(tiny, "12+7=", "12+7=19", chat=False)
    analysis = wb.analyze(tiny, trace)
    nan_key = "model.layers.1.mlp.up_proj.weight"
    broken = {
        "missing": _damaged(tmp, "missing", lambda t: {k: v for k, v in t.items() if ".1." not in k}),
        "nan": _damaged(
            tmp, "nan", lambda t: {k: v.fill_(float("nan")) if k == nan_key else v for k, v in t.items()}
        ),
        "tokenizer": _damaged(tmp, "tokenizer", None),
        "extra": _damaged(tmp, "extra", None),
    }  # fmt: skip
    # Weights of more layers than the config names: transformers would drop the last ones.
    config = json.loads((broken["extra"] / "config.json").read_text())
    config["num_hidden_layers"] -= 1
    (broken["extra"] / "config.json").write_text(json.dumps(config))
    # A tokenizer from a model with a larger vocabulary than these weights.
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (broken["tokenizer"] / name).unlink(missing_ok=True)
    shutil.copy(wb.models.model_path("smollm2-135m") / "tokenizer.json", broken["tokenizer"])
    shutil.copy(wb.models.model_path("smollm2-135m") / "tokenizer_config.json", broken["tokenizer"])
    (tmp / "empty").mkdir()
    (tmp / "a-file").write_text("not a folder")
    (tmp / "no-weights").mkdir()
    (tmp / "no-weights" / "config.json").write_text("{}")
    run = tmp / "bad-json-run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    never = tmp / "never-checkpointed"
    never.mkdir()
    (never / "config.json").write_text(json.dumps(GRPOConfig().to_dict()))
    (never / "status.json").write_text(json.dumps({"status": "failed", "step": 0}))
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, str(tmp / "nb.ipynb"))
    return Ctx(tiny, trace, other, analysis, tmp, broken, tmp / "nb.ipynb")


def _foreign_trace(c: Ctx):
    ids = torch.tensor([1, 5, 7, 40_000, 9])  # id 40000: from a 49k-token tokenizer
    return wb.Trace(ids=ids, tokens=["?"] * 5, prompt_len=2, text="")


def _cli(*argv: str):
    code = cli.main(list(argv))
    if code:
        raise SystemExit(code)


def _chart(c: Ctx):
    return viz.rhythm_curves(c.analysis)


def _small_rl(**changes):
    return GRPOConfig(
        max_steps=1, per_device_train_batch_size=8, num_generations=4, eval_size=4,
        eval_samples=0, max_completion_length=16,
    ).replace(**changes)  # fmt: skip


# (id, call, error class, substring of the message)
CASES = [
    # -- loading ------------------------------------------------------------------------
    ("load None", lambda c: wb.load_model(None), WorkbenchError, "expected a model name"),
    ("load int", lambda c: wb.load_model(123), WorkbenchError, "expected a model name"),
    ("load empty name", lambda c: wb.load_model(""), WorkbenchError, "unknown model"),
    ("load unknown", lambda c: wb.load_model("no-such-model"), WorkbenchError, "unknown model"),
    ("load file", lambda c: wb.load_model(c.tmp / "a-file"), WorkbenchError, "is a file"),
    ("load empty dir", lambda c: wb.load_model(c.tmp / "empty"), WorkbenchError, "no config.json"),
    ("load no weights", lambda c: wb.load_model(c.tmp / "no-weights"), WorkbenchError,
     "no .safetensors"),
    ("load hub name", lambda c: wb.load_model("org/model"), WorkbenchError, "hub name"),
    ("load device tpu", lambda c: wb.load_model("tiny-reasoner", device="tpu"), WorkbenchError,
     "is not a device"),
    ("load device cuda", lambda c: wb.load_model("tiny-reasoner", device="cuda"),
     WorkbenchError, "CUDA is not available"),
    ("load missing layer", lambda c: wb.load_model(c.broken["missing"]), WorkbenchError,
     "weight(s) missing"),
    ("load unused weights", lambda c: wb.load_model(c.broken["extra"]), WorkbenchError,
     "its config.json has no place for"),
    ("load NaN weights", lambda c: wb.load_model(c.broken["nan"]), WorkbenchError,
     "model.layers.1.mlp.up_proj.weight holds"),
    ("load foreign tokenizer", lambda c: wb.load_model(c.broken["tokenizer"]), WorkbenchError,
     "do not belong together"),
    ("load_hf NaN weights", lambda c: wb.models.load_hf(c.broken["nan"]), WorkbenchError,
     "not finite"),
    # -- traces -------------------------------------------------------------------------
    ("trace list ids", lambda c: wb.Trace(ids=[1, 2, 3], tokens=["a"] * 3, prompt_len=1, text=""),
     WorkbenchError, "1-D integer torch.Tensor"),
    ("trace float ids", lambda c: wb.Trace(ids=torch.ones(3), tokens=["a"] * 3, prompt_len=1,
     text=""), WorkbenchError, "integer torch.Tensor"),
    ("trace 2-D ids", lambda c: wb.Trace(ids=torch.ones(2, 3, dtype=torch.long),
     tokens=["a"] * 2, prompt_len=1, text=""), WorkbenchError, "must be 1-D"),
    ("trace negative id", lambda c: wb.Trace(ids=torch.tensor([1, -4]), tokens=["a"] * 2,
     prompt_len=1, text=""), WorkbenchError, "negative token id"),
    ("trace tokens mismatch", lambda c: wb.Trace(ids=torch.tensor([1, 2]), tokens=["a"],
     prompt_len=1, text=""), WorkbenchError, "token strings"),
    ("trace prompt_len 0", lambda c: wb.Trace(ids=torch.tensor([1, 2]), tokens=["a"] * 2,
     prompt_len=0, text=""), WorkbenchError, "prompt_len=0"),
    ("trace prompt_len str", lambda c: wb.Trace(ids=torch.tensor([1, 2]), tokens=["a"] * 2,
     prompt_len="1", text=""), WorkbenchError, "prompt_len"),
    ("trace load missing", lambda c: wb.Trace.load(c.tmp / "nope.json"), WorkbenchError,
     "cannot read a trace"),
    ("trace load not json", lambda c: wb.Trace.load(c.tmp / "a-file"), WorkbenchError,
     "cannot read a trace"),
    ("trace from_text empty prompt", lambda c: wb.Trace.from_text(c.model, "", "x"),
     WorkbenchError, "prompt is empty"),
    # -- generation ---------------------------------------------------------------------
    ("generate seed str", lambda c: wb.generate(c.model, "12+7=", seed="x"), WorkbenchError,
     "seed must be an integer"),
    ("generate negative seed", lambda c: wb.generate(c.model, "12+7=", seed=-1),
     WorkbenchError, "seed must be at least 0"),
    ("generate max_new_tokens 0", lambda c: wb.generate(c.model, "12+7=", max_new_tokens=0),
     WorkbenchError, "max_new_tokens must be at least 1"),
    ("generate temperature", lambda c: wb.generate(c.model, "12+7=", temperature=-1),
     WorkbenchError, "temperature must be in"),
    ("generate top_p", lambda c: wb.generate(c.model, "12+7=", top_p=1.5), WorkbenchError,
     "top_p must be in"),
    ("generate prompt int", lambda c: wb.generate(c.model, 123), WorkbenchError,
     "prompt is empty"),
    ("generate too long", lambda c: wb.generate(c.model, "1" * 50, max_new_tokens=10_000),
     WorkbenchError, "context holds"),
    # -- analysis -----------------------------------------------------------------------
    ("analyze not a trace", lambda c: wb.analyze(c.model, "12+7=19"), WorkbenchError,
     "expected a wb.Trace"),
    ("analyze not a model", lambda c: wb.analyze("tiny", c.trace), WorkbenchError,
     "no TransformerLens hooks"),
    ("analyze foreign ids", lambda c: wb.analyze(c.model, _foreign_trace(c)), WorkbenchError,
     "token id 40000 at position 3"),
    ("analyze layer out of range", lambda c: wb.analyze(c.model, c.trace, layers=[99]),
     WorkbenchError, "out of range"),
    ("analyze layer name", lambda c: wb.analyze(c.model, c.trace, layers="first"),
     WorkbenchError, "not a layer selection"),
    ("analyze head out of range", lambda c: wb.analyze(c.model, c.trace, heads=[(0, 99)]),
     WorkbenchError, "head"),
    ("analyze window 0", lambda c: wb.analyze(c.model, c.trace, window=0), WorkbenchError,
     "window must be at least 1"),
    ("analyze horizon", lambda c: wb.analyze(c.model, c.trace, fai_horizon=(5, 2)),
     WorkbenchError, "H_hi must be at least 5"),
    ("analyze quantiles", lambda c: wb.analyze(c.model, c.trace, head_quantiles=(0.7, 0.7)),
     WorkbenchError, "sum to more than 1"),
    ("analyze top_q", lambda c: wb.analyze(c.model, c.trace, top_q=2), WorkbenchError,
     "top_q must be in"),
    ("analyze path", lambda c: wb.analyze(c.model, c.trace, path="fast"), WorkbenchError,
     "is not a path"),
    ("analyze typo", lambda c: wb.analyze(c.model, c.trace, windw=3), WorkbenchError,
     "no setting(s) ['windw']"),
    ("analyze params type", lambda c: wb.analyze(c.model, c.trace, {"window": 3}),
     WorkbenchError, "params must be a wb.RhythmParams"),
    ("analyze max_window", lambda c: wb.analyze(c.model, c.trace, window=12, max_window=5),
     WorkbenchError, "max_window must be at least 12"),
    ("analysis window beyond kept", lambda c: c.analysis.with_params(window=64),
     WorkbenchError, "max_window"),
    ("analysis gamma strategy", lambda c: c.analysis.gamma("bogus"), WorkbenchError,
     "unknown credit strategy"),
    ("analysis gamma_amp 0", lambda c: c.analysis.gamma("coupled", gamma_amp=0),
     WorkbenchError, "gamma_amp must be in"),
    ("analysis select unknown head", lambda c: c.analysis.select_heads([(9, 9)]),
     WorkbenchError, "not analysed"),
    ("analysis is immutable", lambda c: setattr(c.analysis, "waad", None), AttributeError,
     "immutable"),
    ("analyze_many empty", lambda c: wb.analyze_many(c.model, []), WorkbenchError,
     "no traces"),
    ("analyze_many batch 0", lambda c: wb.analyze_many(c.model, [c.trace], batch_size=0),
     WorkbenchError, "batch_size must be at least 1"),
    ("gamma_many strategy", lambda c: wb.gamma_many(c.model, [c.trace], "bogus"),
     WorkbenchError, "unknown credit strategy"),
    ("rhythm params", lambda c: RhythmParams(k=0), WorkbenchError, "k must be at least 1"),
    ("credit params layers", lambda c: CreditParams(layers=[]), WorkbenchError,
     "not a layer selection"),
    # -- ablation -----------------------------------------------------------------------
    ("ablate other trace's analysis", lambda c: run_ablations(c.model, [c.other],
     analyses=[c.analysis]), WorkbenchError, "is not an analysis of traces[0]"),
    ("ablate counts", lambda c: run_ablations(c.model, [c.trace, c.other],
     analyses=[c.analysis]), WorkbenchError, "2 traces but 1 analyses"),
    ("ablate intervention", lambda c: run_ablations(c.model, [c.trace],
     interventions=["bogus"]), WorkbenchError, "bogus"),
    ("ablate no traces", lambda c: run_ablations(c.model, []), WorkbenchError, "no traces"),
    ("ablate foreign ids", lambda c: run_ablations(c.model, [_foreign_trace(c)]),
     WorkbenchError, "token id 40000 at position 3"),
    ("perturb foreign ids", lambda c: perturb_position(c.model, _foreign_trace(c), 3),
     WorkbenchError, "token id 40000 at position 3"),
    ("targets family", lambda c: target_sets(c.analysis, families=["bogus"]), WorkbenchError,
     "bogus"),
    ("targets n_random", lambda c: target_sets(c.analysis, n_random=-1), WorkbenchError,
     "n_random must be at least 0"),
    ("perturb prompt position", lambda c: perturb_position(c.model, c.trace, 0),
     WorkbenchError, "not a response position"),
    ("perturb top_k", lambda c: perturb_position(c.model, c.trace, c.trace.prompt_len, top_k=0),
     WorkbenchError, "top_k must be at least 1"),
    ("perturbation_test pairs", lambda c: wb.perturbation_test(c.model, [c.other],
     [c.analysis]), WorkbenchError, "is not an analysis of traces[0]"),
    # -- RL -----------------------------------------------------------------------------
    ("rl max_steps str", lambda c: GRPOConfig().replace(max_steps="10"), WorkbenchError,
     "max_steps must be an integer"),
    ("rl gamma_amp negative", lambda c: GRPOConfig().replace(gamma_amp=-2), WorkbenchError,
     "gamma_amp must be in"),
    ("rl strategy", lambda c: GRPOConfig().replace(strategy="bogus"), WorkbenchError,
     "unknown credit strategy"),
    ("rl window", lambda c: GRPOConfig().replace(window=0), WorkbenchError,
     "window must be at least 1"),
    ("rl device", lambda c: GRPOConfig().replace(device="tpu"), WorkbenchError,
     "is not a device"),
    ("rl unknown key", lambda c: GRPOConfig().replace(bogus=1), WorkbenchError,
     "unknown GRPO settings"),
    ("rl batch multiple", lambda c: GRPOConfig().replace(per_device_train_batch_size=6,
     num_generations=4), WorkbenchError, "multiple of num_generations"),
    ("rl lr", lambda c: GRPOConfig().replace(learning_rate=0), WorkbenchError,
     "learning_rate must be in"),
    ("rl credit layer out of range", lambda c: train(_small_rl(credit_layers=[99]),
     out=c.tmp / "rl-layers", progress=False), WorkbenchError, "out of range"),
    ("rl out is a file", lambda c: train(_small_rl(), out=c.tmp / "a-file", progress=False),
     WorkbenchError, "is a file"),
    ("rl resume bad json", lambda c: resume(c.tmp / "bad-json-run"), WorkbenchError,
     "not a readable JSON config"),
    ("rl resume not a run", lambda c: resume(c.tmp / "empty"), WorkbenchError,
     "not a run directory"),
    ("rl resume never checkpointed", lambda c: resume(c.tmp / "never-checkpointed"),
     WorkbenchError, "never reached its first checkpoint"),
    ("rl train into failed start", lambda c: train(_small_rl(), out=c.tmp / "never-checkpointed",
     progress=False), WorkbenchError, "never reached its first checkpoint"),
    ("rl unknown task", lambda c: GRPOConfig().replace(task=""), WorkbenchError,
     "task must be a non-empty string"),
    # -- batch --------------------------------------------------------------------------
    ("batch no notebook", lambda c: run_batch(c.tmp / "nope.ipynb", ["x=1"], c.tmp / "b1"),
     WorkbenchError, "no notebook"),
    ("batch unknown key", lambda c: run_batch(c.notebook, ["bogus=1"], c.tmp / "b2"),
     WorkbenchError, "has no parameter(s) ['bogus']"),
    ("batch bad spec", lambda c: run_batch(c.notebook, ["x"], c.tmp / "b3"), WorkbenchError,
     "x"),
    ("batch out is a file", lambda c: run_batch(c.notebook, ["x=1"], c.tmp / "a-file"),
     WorkbenchError, "is a file"),
    ("batch workers", lambda c: run_batch(c.notebook, ["x=1"], c.tmp / "b4", workers=0),
     WorkbenchError, "workers must be at least 1"),
    ("batch grid string", lambda c: run_batch(c.notebook, "x=1", c.tmp / "b5"), WorkbenchError,
     "grid specs must be a list"),
    ("batch timeout fraction", lambda c: run_batch(c.notebook, ["x=1"], c.tmp / "b6",
     timeout=2.5), WorkbenchError, "whole seconds"),
    # -- report -------------------------------------------------------------------------
    ("report other trace's analysis", lambda c: write_report(c.model, c.other, c.analysis,
     c.tmp / "rep1"), WorkbenchError, "the analysis is not of this trace"),
    ("report not a trace", lambda c: write_report(c.model, None, c.analysis, c.tmp / "rep2"),
     WorkbenchError, "expected a wb.Trace"),
    ("report out None", lambda c: write_report(c.model, c.trace, c.analysis, None),
     WorkbenchError, "write_report's out must be a folder path"),
    # -- viz ----------------------------------------------------------------------------
    ("viz format", lambda c: viz.save(_chart(c), c.tmp / "x.pdf"), WorkbenchError,
     "cannot save a chart as 'pdf'"),
    ("viz folder is a file", lambda c: viz.save(_chart(c), c.tmp / "a-file" / "x.png"),
     WorkbenchError, "is a file, not the chart's folder"),
    ("viz scale 0", lambda c: viz.save(_chart(c), c.tmp / "x.png", scale=0), WorkbenchError,
     "scale must be in"),
    ("viz not a chart", lambda c: viz.save("chart", c.tmp / "x.svg"), WorkbenchError,
     "expected an altair chart"),
    # -- CLI ----------------------------------------------------------------------------
    ("cli rl without out", lambda c: _cli("rl", "--strategy", "coupled"), SystemExit, "2"),
    ("cli rl resume with flags", lambda c: _cli("rl", "--resume", str(c.tmp / "empty"),
     "--strategy", "bogus"), SystemExit, "2"),
    ("cli rl resume bad json", lambda c: _cli("rl", "--resume", str(c.tmp / "bad-json-run")),
     SystemExit, "2"),
    ("cli rl out is a file", lambda c: _cli("rl", "--out", str(c.tmp / "a-file"), "--steps",
     "1"), SystemExit, "2"),
    ("cli rl bad strategy", lambda c: _cli("rl", "--out", str(c.tmp / "r9"), "--strategy",
     "bogus"), SystemExit, "2"),
    ("cli batch unknown key", lambda c: _cli("batch", str(c.notebook), "--grid", "bogus=1",
     "--out", str(c.tmp / "b5")), SystemExit, "2"),
    # without --grid it ran nothing and exited 0; now argparse names the missing flag
    ("cli batch without grid", lambda c: _cli("batch", str(c.notebook), "--out",
     str(c.tmp / "b7")), SystemExit, "2"),
    ("cli rl config not json", lambda c: _cli("rl", "--config", str(c.tmp / "a-file"),
     "--out", str(c.tmp / "r10")), SystemExit, "2"),
]  # fmt: skip


def test_the_table_is_broad():
    areas = {"load", "trace", "generate", "analy", "ablate", "rl", "batch", "viz", "cli"}
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES), "case ids are unique"
    assert all(any(c[0].startswith(a) for c in CASES) for a in areas)


@pytest.mark.parametrize(
    ("call", "error", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_a_clear_error(ctx, call, error, words, capsys):
    with pytest.raises(error) as info:
        call(ctx)
    if error is SystemExit:  # the CLI: exit code 2 and a message, never a traceback
        assert str(info.value.code) == words
        err = capsys.readouterr().err
        assert "error:" in err.lower() and "Traceback" not in err
        return
    assert words in str(info.value)
    if error is WorkbenchError:
        assert info.value.fix, "every WorkbenchError says how to fix it"
