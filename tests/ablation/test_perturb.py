"""The perturbation test (`wb.perturbation_test`, `perturb_position`), read as a user who
reproduces the paper's claim would: a hand-written version of the protocol on the tiny
reasoner gives the same positions and Jaccards, and bad input is refused by name."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.ablation import logits_of, perturb_position, perturbation_test
from workbench.ablation.perturb import STOPWORDS
from workbench.attention import FaiRowsWarning
from workbench.tasks import get_task


@pytest.fixture(scope="module")
def setup(tiny):
    problems = get_task("countdown").generate(3, split="test", seed=0)
    traces = [
        wb.generate(tiny, p.prompt, max_new_tokens=64, temperature=0.7, seed=i)
        for i, p in enumerate(problems)
    ]
    return traces, [wb.analyze(tiny, t) for t in traces]


def _naive(model, traces, analyses, n_pairs, top_k, max_new_tokens, min_after):
    """The protocol written out by hand: full forward passes, argmax, no KV cache."""
    tok = model.tokenizer
    special = set(tok.all_special_ids)
    hf = wb.models.sampler(model)

    def words(text):
        return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}

    def jac(a, b):
        x, y = words(a), words(b)
        return 1.0 if not x and not y else len(x & y) / len(x | y)

    @torch.no_grad()
    def greedy(ids):
        ids, out = list(ids), []
        for _ in range(max_new_tokens):
            t = int(hf(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(t)
            out.append(t)
            if t == tok.eos_token_id:
                break
        return tok.decode(out, skip_special_tokens=True)

    rows = []
    for i, (tr, an) in enumerate(zip(traces, analyses, strict=True)):
        n, fai = len(tr), an.fai.double().numpy()
        ok = [
            p
            for p in range(tr.prompt_len, n)
            if not np.isnan(fai[p]) and p + min_after < n and int(tr.ids[p]) not in special
        ]
        m = min(n_pairs, len(ok) // 2)
        hi = sorted(ok, key=lambda p: (-fai[p], p))[:m]
        lo = sorted((p for p in ok if p not in hi), key=lambda p: (fai[p], p))[:m]
        with torch.no_grad():
            lg = hf(tr.ids[None]).logits[0].float()

        def mean_jaccard(p, ids=tr.ids, lg=lg):
            orig = int(ids[p])
            order = sorted(range(len(lg[p - 1])), key=lambda t: (-float(lg[p - 1, t]), t))
            alts = [t for t in order if t != orig and t not in special][:top_k]
            base = greedy([*ids[:p].tolist(), orig])
            return np.mean([jac(base, greedy([*ids[:p].tolist(), a])) for a in alts])

        pairs = zip(hi, lo, strict=True)
        rows += [(i, ph, pl, mean_jaccard(ph), mean_jaccard(pl)) for ph, pl in pairs]
    return rows


def test_the_test_is_the_protocol_written_out_by_hand(tiny, setup):
    """Positions: the i-th highest against the i-th lowest FAI of the eligible response
    positions; alternatives: the top-k of row p - 1 other than the original token and the
    special tokens; greedy continuations compared by content-word Jaccard."""
    traces, analyses = setup
    kw = {"n_pairs": 2, "top_k": 2, "max_new_tokens": 8, "min_after": 4}
    trials, summary = perturbation_test(tiny, traces, analyses, progress=False, **kw)
    naive = _naive(tiny, traces, analyses, **kw)
    assert len(trials) == len(naive) == summary["n_trials"] == 6
    got = trials[["trace", "high_pos", "low_pos", "jaccard_high", "jaccard_low"]]
    np.testing.assert_allclose(got.to_numpy(float), np.array(naive, float), atol=1e-12)
    for row in trials.itertuples():  # response positions only, never the prompt
        assert traces[row.trace].prompt_len <= min(row.high_pos, row.low_pos)
    assert (trials["high_fai"] >= trials["low_fai"]).all()
    assert summary["frac_high_more_disruptive"] == pytest.approx(
        (trials["jaccard_high"] < trials["jaccard_low"]).mean()
    )
    # Where the two kinds of position sit in their responses, which the pairs do not match:
    for kind in ("high", "low"):
        depth = [
            (getattr(r, f"{kind}_pos") - traces[r.trace].prompt_len)
            / (len(traces[r.trace]) - traces[r.trace].prompt_len)
            for r in trials.itertuples()
        ]
        np.testing.assert_allclose(trials[f"{kind}_depth"], depth)
        assert summary[f"depth_{kind}"] == pytest.approx(np.mean(depth))
    # The same call again gives the same frame: nothing in the protocol is random.
    again, _ = perturbation_test(tiny, traces, analyses, progress=False, **kw)
    assert again.equals(trials)


def test_logits_as_an_array_are_read_like_the_tensor(tiny, setup):
    """A NumPy array of the right shape passed the shape check and then met a raw
    TypeError inside torch.argsort."""
    tr = setup[0][0]
    p = tr.prompt_len + 1
    lg = logits_of(tiny, tr.ids)
    want = perturb_position(tiny, tr, p, logits=lg, max_new_tokens=4)
    got = perturb_position(tiny, tr, p, logits=lg.numpy(), max_new_tokens=4)
    assert got["alternatives"] == want["alternatives"] and got["jaccards"] == want["jaccards"]


def test_tied_logits_force_the_lower_token_ids(tiny, setup):
    """Integer logits tie as a bf16 model's often do: argsort is not stable, and picked
    ids [17, 10, 47] where the lower ids among the tied are [17, 10, 18]."""
    tr = setup[0][0]
    p = tr.prompt_len + 2
    lg = logits_of(tiny, tr.ids)
    lg[p - 1] = torch.round(lg[p - 1] / 4)
    row = lg[p - 1]
    skip = {int(tr.ids[p]), *tiny.tokenizer.all_special_ids}
    ids = [t for t in range(len(row)) if t not in skip]
    want = sorted(ids, key=lambda t: (-float(row[t]), t))[:3]
    assert len({float(row[t]) for t in want}) < 3 or float(row[want[2]]) == float(
        row[sorted(ids, key=lambda t: (-float(row[t]), t))[3]]
    )  # the case holds a tie among (or at the edge of) the three
    got = perturb_position(tiny, tr, p, top_k=3, max_new_tokens=2, logits=lg)
    assert got["alternatives"] == [tiny.tokenizer.decode([t]) for t in want]


def test_nan_logits_are_refused_not_ranked(tiny, setup):
    """NaN logits ranked arbitrary tokens as the 'most likely' alternatives."""
    tr = setup[0][0]
    p = tr.prompt_len + 1
    lg = logits_of(tiny, tr.ids)
    lg[p - 1, 5] = float("nan")
    with pytest.raises(wb.WorkbenchError, match="hold NaN") as e:
        perturb_position(tiny, tr, p, logits=lg, max_new_tokens=2)
    assert "logits_of" in e.value.fix


def test_no_new_tokens_is_refused_not_a_table_of_ties(tiny, setup):
    """max_new_tokens=0 compared two empty continuations: every trial a tie at Jaccard 1.0,
    frac_high_more_disruptive 0.0 and disruption_p 1.0, read as 'FAI makes no difference'."""
    traces, analyses = setup
    with pytest.raises(wb.WorkbenchError, match="max_new_tokens must be at least 1"):
        perturbation_test(tiny, traces, analyses, max_new_tokens=0, progress=False)
    with pytest.raises(wb.WorkbenchError, match="max_new_tokens must be at least 1"):
        perturb_position(tiny, traces[0], traces[0].prompt_len, max_new_tokens=0)


def test_traces_left_out_are_named(tiny, setup):
    """A trace with fewer than two eligible positions left the summary silently (all NaN
    when no trace was left)."""
    traces, analyses = setup
    with pytest.warns(UserWarning, match=r"left out 3 of 3 trace\(s\).*min_after=1000"):
        trials, summary = perturbation_test(
            tiny, traces, analyses, min_after=1000, max_new_tokens=2, progress=False
        )
    assert len(trials) == 0 and summary["n_traces"] == 0 and np.isnan(summary["jaccard_high"])
    short = wb.Trace.from_text(tiny, traces[0].prompt, "3+4=7")
    with pytest.warns(FaiRowsWarning):  # too short for fai_min_rows=10: no FAI at all
        short_analysis = wb.analyze(tiny, short)
    with pytest.warns(UserWarning, match=r"left out 1 of 2 trace\(s\) \(traces \[1\]\)"):
        trials, summary = perturbation_test(
            tiny,
            [traces[0], short],
            [analyses[0], short_analysis],
            max_new_tokens=2,
            progress=False,
        )
    assert summary["n_traces"] == 1 and set(trials["trace"]) == {0}


@pytest.mark.parametrize("model", [None, "tiny-reasoner"])
def test_a_model_that_is_not_loaded_is_refused(model, tiny, setup):
    """None or a model name met a raw AttributeError ('no attribute tokenizer')."""
    traces, analyses = setup
    with pytest.raises(wb.WorkbenchError, match="no TransformerLens hooks"):
        perturbation_test(model, traces, analyses, progress=False)
    with pytest.raises(wb.WorkbenchError, match="no TransformerLens hooks"):
        perturb_position(model, traces[0], traces[0].prompt_len)


def test_progress_must_be_true_or_false(tiny, setup):
    """progress='no' was truthy and drew the bar."""
    traces, analyses = setup
    with pytest.raises(wb.WorkbenchError, match="progress must be True or False"):
        perturbation_test(tiny, traces, analyses, progress="no")


def test_equal_mean_jaccards_are_a_tie_whatever_their_order(tiny, setup, monkeypatch):
    """The mean of [1/3, 1, 1] is one ulp below the mean of [1, 1, 1/3]: the high position
    counted as more disruptive and the tie was missing from n_ties."""
    import workbench.ablation.perturb as perturb

    traces, analyses = setup
    scripted = iter([1 / 3, 1.0, 1.0, 1.0, 1.0, 1 / 3])  # high's three, then low's three
    monkeypatch.setattr(perturb, "jaccard", lambda a, b: next(scripted))
    trials, summary = perturbation_test(
        tiny, traces[:1], analyses[:1], top_k=3, max_new_tokens=2, progress=False
    )
    assert trials["jaccard_high"][0] == pytest.approx(trials["jaccard_low"][0], abs=1e-15)
    assert not trials["high_more_disruptive"][0]
    assert summary["n_ties"] == 1 and summary["frac_high_more_disruptive"] == 0.0


def test_no_bar_is_written_to_a_log_file(tiny, setup, capsys):
    """The one progress rule of the workbench: with stderr not a terminal (a log file),
    no bar; tqdm wrote a line per trace there."""
    traces, analyses = setup
    perturbation_test(tiny, traces[:2], analyses[:2], top_k=1, max_new_tokens=1)
    assert "perturb" not in capsys.readouterr().err
