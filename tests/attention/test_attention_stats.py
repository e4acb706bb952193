"""Rhythm statistics (Table 2) on hand-made metric vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.attention.stats import (
    Curves,
    PeakDetector,
    entropy_at_waad_peaks,
    fai_follows_waad,
    receiver_global_overlap,
    rhythm_statistics,
)

NAN = float("nan")


def test_peak_detector_rules():
    x = torch.tensor([NAN, 1.0, 3.0, 2.0, 2.0, 5.0, 5.0, 1.0, NAN])
    # mean of defined = 19/7 = 2.71: peaks are local maxima >= mean: 2 (3.0) and 5 (first
    # of the 5.0 plateau); 6 is not (not strictly above its left neighbour).
    assert PeakDetector()(x) == [2, 5]
    # radius 2: 2 has 5.0 within two to the right? no (positions 3, 4) -> still a peak.
    assert PeakDetector(radius=2)(x) == [2, 5]
    # a high z threshold keeps only the top.
    assert PeakDetector(min_z=1.0)(x) == [5]
    with pytest.raises(wb.WorkbenchError, match="radius"):
        PeakDetector(radius=0)
    # an integer read off an array is an integer (it was refused as "must be an integer")
    assert PeakDetector(radius=np.int64(2)) == PeakDetector(radius=2)


def fake(waad, fai, entropy, receiver_fai) -> Curves:
    def t(x):
        return torch.tensor(x, dtype=torch.float64)

    return Curves(1, t(waad), t(fai), t(receiver_fai), t(entropy))


def test_statistics_by_hand():
    #          pos: 0    1    2    3    4    5    6    7
    waad = [NAN, 0.0, 5.0, 0.0, 0.0, 6.0, 0.0, 0.0]  # peaks 2, 5
    fai = [NAN, 0.0, 0.0, 4.0, 0.0, 4.0, 0.0, 0.0]  # peaks 3 (follows 2), 5 (coincides)
    rec = [NAN, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 3.0]  # peaks 3, 7: overlap {3} = 1 of 2
    ent = [NAN, 1.0, 4.0, 1.0, 1.0, 2.0, 1.0, 1.0]  # at peaks: (4 + 2) / 2 = 3; mean 11/7
    a = fake(waad, fai, ent, rec)
    e = entropy_at_waad_peaks([a])
    assert e["n_peaks"] == 2 and math.isclose(e["peak_entropy"], 3.0)
    assert math.isclose(e["relative_increase"], 3.0 / (11 / 7) - 1)
    f = fai_follows_waad([a], n_shuffles=50)
    assert f["share"] == 1.0 and f["n_fai_peaks"] == 2 and 0 <= f["shuffled_share"] < 1
    assert fai_follows_waad([a], lags=(0,))["share"] == 0.5
    r = receiver_global_overlap([a], n_shuffles=50)
    assert r["overlap"] == 0.5 and r["chance"] < 0.5
    df = rhythm_statistics([a, a], n_shuffles=10)
    assert len(df) == 3 and np.isfinite(df["value"]).all()
    # what each value counts over, beside it (two copies of the trace: twice the peaks)
    assert df["n"].tolist() == [
        entropy_at_waad_peaks([a, a])["n_peaks"],
        2 * f["n_fai_peaks"],
        receiver_global_overlap([a, a], n_shuffles=10)["n_global_peaks"],
    ]
    with pytest.raises(wb.WorkbenchError, match="non-empty"):
        rhythm_statistics([])
    # the item that is not an analysis is named (a trace passed by mistake)
    with pytest.raises(wb.WorkbenchError, match="item 1 is a dict"):
        rhythm_statistics([a, {"waad": []}])


def by_hand() -> Curves:
    nan8 = [NAN, 0.0, 5.0, 0.0, 0.0, 6.0, 0.0, 0.0]
    return fake(nan8, [NAN, 0.0, 0.0, 4.0, 0.0, 4.0, 0.0, 0.0], [NAN] + [1.0] * 7, nan8)


def test_statistics_pool_a_list_of_traces_not_one():
    with pytest.raises(wb.WorkbenchError, match="got one Curves") as e:
        rhythm_statistics(by_hand())
    assert "[analysis]" in e.value.fix


def test_entropy_statistics_need_entropies():
    # analysed with entropy=False: every response entropy is NaN, so the ratio is undefined
    no_entropy = fake([NAN, 0.0, 5.0, 0.0], [NAN, 0.0, 4.0, 0.0], [NAN] * 4, [NAN, 0.0, 4.0, 0.0])
    with pytest.raises(wb.WorkbenchError, match="no entropies") as e:
        entropy_at_waad_peaks([no_entropy])
    assert "entropy=True" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match="no entropies"):
        rhythm_statistics([by_hand(), no_entropy])


def test_zero_mean_entropy_gives_nan_not_a_crash():
    zero = fake([NAN, 0.0, 5.0, 0.0], [NAN, 0.0, 4.0, 0.0], [NAN, 0.0, 0.0, 0.0], [NAN] * 4)
    assert math.isnan(rhythm_statistics([zero], n_shuffles=2)["value"].iloc[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_shuffles=0), "n_shuffles must be at least 1"),
        (dict(n_shuffles=2.5), "n_shuffles must be an integer"),
        (dict(seed=-1), "seed must be at least 0"),
        (dict(lags=1), "lags must be a list"),
        (dict(lags=(0, 0.5)), "lag must be an integer"),
    ],
)
def test_bad_control_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(wb.WorkbenchError, match=match):
        fai_follows_waad([by_hand()], **kwargs)
    if "lags" not in kwargs:
        with pytest.raises(wb.WorkbenchError, match=match):
            receiver_global_overlap([by_hand()], **kwargs)
    # a negative lag is a question too: does the FAI peak come just before a WAAD peak?
    assert fai_follows_waad([by_hand()], lags=(-1,), n_shuffles=2)["share"] == 0.0


@pytest.mark.parametrize("min_z", [NAN, math.inf, "1"])
def test_a_peak_threshold_must_be_a_finite_number(min_z):
    # with min_z=NaN the threshold compared false everywhere and every local maximum passed
    with pytest.raises(wb.WorkbenchError, match="min_z"):
        PeakDetector(min_z=min_z)


def test_a_peak_radius_is_not_a_bool():
    with pytest.raises(wb.WorkbenchError, match="radius"):
        PeakDetector(radius=True)


@pytest.mark.parametrize(
    "detector, match",
    [
        ("peaks", "detector must be a callable"),  # raw TypeError
        # the class itself: "PeakDetector.radius must be an integer, got tensor([...])"
        (PeakDetector, "the class PeakDetector, not a detector"),
        (lambda x: [-1], r"not a list of response positions \(1\.\.7\)"),  # the last token
        (lambda x: [0], "not a list of response positions"),  # a prompt token: NaN
        (lambda x: [100], "not a list of response positions"),  # IndexError, or counted
        (lambda x: [1.5], "not a list of response positions"),
        (lambda x: None, "not a list of response positions"),
        (lambda x: [True], "not a list of response positions"),
    ],
)
def test_a_bad_detector_is_refused(detector, match):
    for stat in (entropy_at_waad_peaks, fai_follows_waad, receiver_global_overlap):
        with pytest.raises(wb.WorkbenchError, match=match) as e:
            stat([by_hand()], detector=detector)
        assert e.value.fix


@pytest.mark.parametrize(
    "build, match",
    [
        # curves of different lengths were read as one trace (numbers, or an IndexError)
        (lambda c: Curves(1, c.waad[:5], c.fai, c.receiver_fai, c.entropy), "positions"),
        (lambda c: Curves(1, c.waad, c.fai, c.receiver_fai, c.entropy[:5]), "positions"),
        (lambda c: Curves(-1, c.waad, c.fai, c.receiver_fai, c.entropy), "at least 0"),
        (lambda c: Curves(100, c.waad, c.fai, c.receiver_fai, c.entropy), "leaves no response"),
        (lambda c: Curves(1.5, c.waad, c.fai, c.receiver_fai, c.entropy), "an integer"),
        (lambda c: Curves(1, c.waad[None], c.fai, c.receiver_fai, c.entropy), "a \\[pos\\]"),
        (lambda c: Curves(1, None, c.fai, c.receiver_fai, c.entropy), "a \\[pos\\]"),
        # a prompt value entered the peak thresholds, or failed as the detector's fault
        (lambda c: Curves(2, c.waad, c.fai, c.receiver_fai, c.entropy), "before prompt_len=2"),
    ],
)
def test_bad_curves_are_refused(build, match):
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        build(by_hand())
    assert e.value.fix


def test_peak_detector_refuses_what_is_no_curve():
    # inf made the threshold NaN, so every local maximum passed; 2-D/0-d: raw errors
    with pytest.raises(wb.WorkbenchError, match="infinite"):
        PeakDetector(min_z=1.0)(torch.tensor([float("inf"), float("-inf"), 1.0, 0.0]))
    for x in (torch.zeros(2, 3), torch.tensor(3.0), None):
        with pytest.raises(wb.WorkbenchError, match=r"needs a \[pos\] curve"):
            PeakDetector()(x)


def test_statistics_read_an_iterator_once_and_refuse_empty_lags():
    # The first statistic spent the iterator; the next said "need a non-empty list".
    df = rhythm_statistics(iter([by_hand()]), n_shuffles=5)
    assert df["value"].notna().all()
    with pytest.raises(wb.WorkbenchError, match="lags is empty"):
        fai_follows_waad([by_hand()], lags=[])  # share 0 without a word


def test_traces_without_receiver_heads_are_left_out_of_the_overlap():
    # A response of 10-12 tokens has FAI at 1-3 tokens: too few for any head's kurtosis,
    # so no receiver heads and a receiver FAI that is NaN everywhere. Its global FAI peaks
    # went into the denominator: the overlap and the chance level both fell.
    no_receivers = fake(
        [NAN, 0.0, 5.0, 0.0, 0.0], [NAN, 4.0, 0.0, 3.0, NAN], [NAN, 1.0, 1.0, 1.0, 1.0], [NAN] * 5
    )
    alone = receiver_global_overlap([by_hand()], n_shuffles=20)
    pooled = receiver_global_overlap([by_hand(), no_receivers, no_receivers], n_shuffles=20)
    assert pooled == {**alone, "n_traces_without_receivers": 2}
    assert alone["overlap"] == 0.5 and alone["n_traces_without_receivers"] == 0
    only = receiver_global_overlap([no_receivers], n_shuffles=5)
    assert math.isnan(only["overlap"]) and math.isnan(only["chance"])
    assert only["n_global_peaks"] == 0


def test_a_detector_cannot_change_the_curves():
    # A "NaN-safe" detector that filled NaN in place rewrote the trace's FAI: the controls'
    # pool then took in the prompt and the undefined tail, and every later call changed.
    c = fake(
        [NAN, 0.0, 5.0, 0.0, 0.0, 6.0, 0.0, 0.0],
        [NAN, 0.0, 0.0, 4.0, 0.0, 4.0, NAN, NAN],
        [NAN] + [1.0] * 7,
        [NAN, 0.0, 0.0, 4.0, 0.0, 0.0, NAN, NAN],
    )
    before = fai_follows_waad([c], n_shuffles=50)

    def fills_nan(x):
        x[torch.isnan(x)] = 0.0
        return [p for p in PeakDetector()(x) if p >= 1]

    fai_follows_waad([c], detector=fills_nan, n_shuffles=5)
    assert int(torch.isnan(c.fai).sum()) == 3
    assert fai_follows_waad([c], n_shuffles=50) == before


@pytest.mark.parametrize(
    "detector, match",
    [
        # FAI's undefined last tokens are response positions: they were counted as peaks
        (lambda x: [len(x) - 1], r"undefined \(NaN\): \[7\]"),
        # a repeated position counted twice (and drew twice as many random positions)
        (lambda x: PeakDetector()(x) * 2, "position twice"),
    ],
)
def test_a_detector_must_return_distinct_defined_positions(detector, match):
    c = fake(
        [NAN, 0.0, 5.0, 0.0, 0.0, 6.0, 0.0, 0.0],
        [NAN, 0.0, 0.0, 4.0, 0.0, 4.0, 0.0, NAN],
        [NAN] + [1.0] * 7,
        [NAN, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, NAN],
    )
    for stat in (fai_follows_waad, receiver_global_overlap):
        with pytest.raises(wb.WorkbenchError, match=match) as e:
            stat([c], detector=detector, n_shuffles=2)
        assert "PeakDetector" in e.value.fix


def test_an_entropy_missing_at_some_response_tokens_is_refused():
    # one NaN made both means NaN without a word
    gap = fake([NAN, 0.0, 5.0, 0.0], [NAN, 0.0, 4.0, 0.0], [NAN, 1.0, NAN, 1.0], [NAN] * 4)
    with pytest.raises(wb.WorkbenchError, match=r"no entropy at response positions \[2\]"):
        entropy_at_waad_peaks([gap])


def _naive_peaks(v, radius=1, min_z=0.0):
    """The module docstring's rule, written out with plain lists."""
    v = [float(a) for a in v]
    d = [a for a in v if a == a]
    if not d:
        return []
    m = sum(d) / len(d)
    thr = m + min_z * math.sqrt(sum((a - m) ** 2 for a in d) / len(d))
    out = []
    for t, a in enumerate(v):
        if a != a or a < thr:
            continue
        left = [v[u] for u in range(max(0, t - radius), t) if v[u] == v[u]]
        right = [v[u] for u in range(t + 1, min(len(v), t + radius + 1)) if v[u] == v[u]]
        if all(a > y for y in left) and all(a >= y for y in right):
            out.append(t)
    return out


def _random_trace(rng):
    """Ties, NaN FAI tails, peaks at the first/last token, one-token responses."""
    pl, n = int(rng.integers(0, 3)), int(rng.integers(1, 16))
    tail = int(rng.integers(0, n + 1)) if rng.random() < 0.4 else 0

    def curve(tail=0):
        vals = rng.integers(0, 3, n).astype(float) if rng.random() < 0.5 else rng.random(n)
        v = np.concatenate([np.full(pl, NAN), vals])
        v[len(v) - tail :] = NAN
        return torch.tensor(v)

    return Curves(pl, curve(), curve(tail), curve(tail), curve() + 0.1)


def test_statistics_match_a_hand_written_reimplementation():
    rng = np.random.default_rng(0)
    for _ in range(30):
        cs = [_random_trace(rng) for _ in range(int(rng.integers(1, 5)))]
        pk, tok, hits, n_fai, inter, n_glob, exp_f, exp_r = [], [], 0, 0, 0, 0, 0.0, 0.0
        for c in cs:
            w, f, r = (_naive_peaks(x) for x in (c.waad, c.fai, c.receiver_fai))
            e = c.entropy.tolist()
            pk += [e[p] for p in w]
            tok += e[c.prompt_len :]
            hits += sum(p in w or p - 1 in w for p in f)
            n_fai += len(f)
            pool = [i for i, a in enumerate(c.fai.tolist()) if a == a]
            exp_f += len(f) * sum(q in w or q - 1 in w for q in pool) / max(1, len(pool))
            if any(a == a for a in c.receiver_fai.tolist()):  # traces with receivers
                inter += len(set(f) & set(r))
                n_glob += len(f)
                exp_r += len(r) * len(set(f) & set(pool)) / max(1, len(pool))
        e = entropy_at_waad_peaks(cs)
        assert e["n_peaks"] == len(pk) and e["n_tokens"] == len(tok)
        assert math.isclose(e["peak_entropy"], sum(pk) / len(pk))
        assert math.isclose(e["mean_entropy"], sum(tok) / len(tok))
        fo = fai_follows_waad(cs, n_shuffles=200, seed=1)
        ov = receiver_global_overlap(cs, n_shuffles=200, seed=1)
        assert fo["n_fai_peaks"] == n_fai and ov["n_global_peaks"] == n_glob
        if n_fai:
            assert fo["share"] == hits / n_fai
            # the control's mean is within 5 of its standard errors of the exact expectation
            assert abs(fo["shuffled_share"] - exp_f / n_fai) <= 5 * 0.5 / math.sqrt(200 * n_fai)
        if n_glob:
            assert ov["overlap"] == inter / n_glob
            assert abs(ov["chance"] - exp_r / n_glob) <= 5 * 0.5 / math.sqrt(200 * n_glob)
        # seeded: the same seed gives the same control
        assert fai_follows_waad(cs, n_shuffles=200, seed=1) == fo
