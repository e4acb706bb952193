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
    with pytest.raises(wb.WorkbenchError, match="non-empty"):
        rhythm_statistics([])


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
