"""The shared scalar validators: what counts as an integer setting, and a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench._validate import (
    SEED_MAX,
    as_index,
    curve,
    env_flag,
    integer,
    is_index,
    number,
    seed,
)
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), torch.tensor(3)])
def test_integers_include_numpy_and_torch_integer_scalars(value):
    """Positions often come out of arrays: a NumPy or torch integer is an integer, returned
    as a plain ``int`` (JSON-ready)."""
    got = integer("position", value, minimum=0)
    assert got == 3 and type(got) is int


@pytest.mark.parametrize(
    "value", [True, np.bool_(True), 3.0, np.float64(3), torch.tensor(3.0), "3", None]
)
def test_booleans_floats_and_text_are_not_integers(value):
    with pytest.raises(WorkbenchError, match="position must be an integer") as info:
        integer("position", value, example=12)
    assert info.value.fix == "pass e.g. position=12"


def test_a_minimum_is_named():
    with pytest.raises(WorkbenchError, match=r"at least 1, got np.int64\(0\)"):
        integer("max_steps", np.int64(0), minimum=1)


def test_a_seed_is_an_integer_torch_can_take():
    """Up to 2**63 - 1 a seed reaches torch's generators; beyond it torch raised "Overflow
    when unpacking long long" after the work before the draw (a panel's forward passes)."""
    assert seed("seed", SEED_MAX) == SEED_MAX
    torch.Generator().manual_seed(SEED_MAX)
    with pytest.raises(WorkbenchError, match=r"seed=2\*\*70|too large") as info:
        seed("seed", 2**70)
    assert "2**63 - 1" in info.value.fix
    with pytest.raises(WorkbenchError, match="at least 0"):
        seed("seed", -1)


@pytest.mark.parametrize("value", [0.4, np.float32(0.4), np.float64(0.4), np.int64(0)])
def test_numbers_include_numpy_scalars(value):
    """A setting read off an array (``np.float32(0.4)``) was "not a finite number"."""
    got = number("top_q", value, low=0, high=1)
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize("value", [True, np.bool_(True), "0.4", None, float("nan"), np.inf])
def test_booleans_text_and_non_finite_values_are_not_numbers(value):
    with pytest.raises(WorkbenchError, match="top_q must be a finite number"):
        number("top_q", value, example=0.4)


def test_a_number_out_of_range_names_the_range_in_its_fix():
    """Its fix said "pass a number top_q" for a number."""
    with pytest.raises(WorkbenchError, match=r"top_q must be in \(0, 1\], got 1.5") as e:
        number("top_q", 1.5, low=0, high=1, low_open=True)
    assert e.value.fix == "pass top_q in (0, 1]"


def test_a_curve_has_one_dimension_unless_told():
    """`curve` checks the dimension count its callers need: 1 by default (one sequence's
    values), 2 for a ``[layer, head]`` grid (`HeadClasses.from_span`, the same check)."""
    got = curve("waad", [1, 2, 3], "fix it")
    assert got.dtype == torch.float64 and got.shape == (3,)
    with pytest.raises(WorkbenchError, match=r"waad needs a \[pos\] curve of one sequence, got"):
        curve("waad", [[1.0, 2.0]], "fix it")
    grid = curve("span", [[1, 2], [3, 4]], "fix it", ndim=2, want="a [layer, head] grid")
    assert grid.shape == (2, 2) and grid.dtype == torch.float64
    for bad, got in [([1.0], "list of shape (1,)"), ("abc", "str")]:
        with pytest.raises(WorkbenchError, match=r"needs a \[layer, head\] grid") as e:
            curve("span", bad, "fix it", ndim=2, want="a [layer, head] grid")
        assert str(e.value).split("\n")[0].endswith(got) and e.value.fix == "fix it"
    with pytest.raises(WorkbenchError, match="needs a 3-D tensor"):
        curve("x", [1.0], "fix it", ndim=3)


@pytest.mark.parametrize("value", [torch.tensor([1]), torch.tensor([[1]]), np.array([1])])
def test_a_one_element_array_is_no_index(value):
    """torch reads a one-element tensor of any shape as its element (``operator.index``):
    ``layers=torch.tensor([[1]])`` was layer 1."""
    assert not is_index(value)
    with pytest.raises(TypeError):
        as_index(value)
    with pytest.raises(WorkbenchError, match="layer must be an integer"):
        integer("layer", value)
    assert as_index(torch.tensor(1)) == as_index(np.array(1)) == as_index(np.int64(1)) == 1


def test_an_unbounded_side_reads_as_open():
    """ "[0, inf]" said infinity was allowed, which the same check refuses."""
    with pytest.raises(WorkbenchError, match=r"temperature must be in \[0, inf\), got -1"):
        number("temperature", -1, low=0)
    with pytest.raises(WorkbenchError, match=r"shift must be in \(-inf, 0\], got 2"):
        number("shift", 2, high=0)


def test_complex_values_are_not_a_curve():
    """They were cast to their real part with only torch's warning."""
    with pytest.raises(WorkbenchError, match="waad holds complex numbers"):
        curve("waad", torch.tensor([1 + 2j, 3 + 0j]), "fix it")


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        *[("1", True), ("on", True), (" Yes ", True), ("TRUE", True)],
        *[("0", False), ("off", False), ("No", False), ("false", False)],
        *[("", "default"), ("  ", "default")],
    ],
)
def test_an_environment_switch_reads_every_usual_spelling(monkeypatch, raw, want):
    monkeypatch.setenv("WB_TEST_SWITCH", raw)
    for default in (False, True):
        assert env_flag("WB_TEST_SWITCH", default) is (default if want == "default" else want)
    monkeypatch.delenv("WB_TEST_SWITCH")
    assert env_flag("WB_TEST_SWITCH", True) is True


@pytest.mark.parametrize("raw", ["y", "2", "enable", "of"])
def test_an_environment_switch_that_is_neither_is_refused_by_name(monkeypatch, raw):
    monkeypatch.setenv("WB_TEST_SWITCH", raw)
    with pytest.raises(WorkbenchError, match=f"WB_TEST_SWITCH={raw!r} is neither on nor off"):
        env_flag("WB_TEST_SWITCH", False)
