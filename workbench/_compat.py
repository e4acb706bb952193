"""The one seam between the workbench and what its dependencies do not promise to keep.

Every use of a private API of transformers, TransformerLens or TRL (private modules,
internal class names, private methods and attributes) lives here and nowhere else, so an
upgrade that breaks one of them breaks it in one file, under one test
(``tests/core/test_compat.py``), instead of silently somewhere in the analysis.

The workbench is tested with the versions pinned in ``lock/requirements.txt``. `TESTED`
states the ranges this seam is known to work with; `check_versions` (called on first use,
when a model is loaded or bridged, and when the TRL trainer is imported) warns once with
an `UntestedVersionWarning` when an installed version is outside them, naming the
versions and how to get the tested ones. ``make test-latest`` runs the fast tests against
the newest releases, which is how a range is widened: a deliberate commit that re-locks
and passes the tests.

What is private here, and why it is used:

- TransformerLens: ``TransformerBridge`` wraps the Hugging Face model's modules *in
  place*; the wrapped model must not be used to sample (with transformers 5.24 its cached
  ``generate`` ignores the KV cache, because the attention bridge reads ``past_key_values``
  while transformers now passes ``cache``). `structural_copy` gives the bridge its own
  module tree over the model's own parameters, so the model that samples stays plain.
- transformers: the config's ``_name_or_path`` and ``_attn_implementation`` fields; a
  model class's ``_supports_attention_backend`` flag; ``masking_utils.sdpa_mask`` and
  ``integrations.sdpa_attention`` (the workbench's registered attention function gets the
  boolean mask sdpa gets, and calls sdpa itself for layers it does not analyse).
- TRL: ``GRPOTrainer._generate_and_score_completions`` (the override point for per-token
  advantages) and ``GRPOTrainer._metrics`` (its metric log).
"""

from __future__ import annotations

import copy
import functools
import itertools
import warnings
from collections.abc import Callable
from typing import Any

from .provenance import installed_version as _installed

__all__ = [
    "TESTED",
    "UntestedVersionWarning",
    "attention_implementation",
    "check_versions",
    "grpo_trainer_base",
    "model_name",
    "register_attention",
    "sdpa_attention",
    "structural_copy",
    "supports_attention_interface",
    "untested_versions",
    "without_load_path",
]

#: Version ranges (PEP 440 specifiers) this seam is tested with; the lock pins inside them.
TESTED: dict[str, str] = {
    "torch": ">=2.13,<2.14",
    "transformers": ">=5.24,<5.25",
    "transformer-lens": ">=4.3,<4.4",
    "trl": ">=1.16,<1.17",
}


class UntestedVersionWarning(UserWarning):
    """An installed dependency is outside the versions the workbench is tested with."""


def untested_versions() -> dict[str, tuple[str, str]]:
    """``{distribution: (installed, tested range)}`` for each one outside `TESTED`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    out: dict[str, tuple[str, str]] = {}
    for dist, spec in TESTED.items():
        have = _installed(dist)
        # A local build tag ("2.13.0+cpu") is the same release for this purpose.
        if have is not None and Version(have).public not in SpecifierSet(spec):
            out[dist] = (have, spec)
    return out


@functools.cache
def check_versions() -> dict[str, tuple[str, str]]:
    """Warn once (`UntestedVersionWarning`) if a dependency is outside `TESTED`.

    Returns:
        The untested distributions, as in `untested_versions` (empty when all are tested).
    """
    bad = untested_versions()
    if bad:
        listed = ", ".join(f"{d} {have} (tested: {spec})" for d, (have, spec) in bad.items())
        warnings.warn(
            f"the workbench is not tested with {listed}; sampling or metrics may be wrong. "
            "Install the tested versions with `make clean-venv && make test` (or `pip install "
            "--no-deps -r lock/requirements.txt`), or run `make test-latest` to check these.",
            UntestedVersionWarning,
            stacklevel=3,
        )
    return bad


# ---------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------


def model_name(hf_model: Any, default: str = "model") -> str:
    """The name or folder a Hugging Face model was loaded from (``config._name_or_path``)."""
    return getattr(getattr(hf_model, "config", None), "_name_or_path", "") or default


def without_load_path(config_dict: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the private ``_name_or_path`` record of where it was loaded."""
    return {k: v for k, v in config_dict.items() if k != "_name_or_path"}


def attention_implementation(hf_model: Any) -> str | None:
    """The attention implementation a Hugging Face model runs now (``"sdpa"``, ``"eager"``...)."""
    return getattr(hf_model.config, "_attn_implementation", None)


def supports_attention_interface(hf_model: Any) -> bool:
    """Whether a model class routes its attention through transformers' AttentionInterface."""
    return bool(getattr(type(hf_model), "_supports_attention_backend", False))


def register_attention(name: str, function: Callable[..., Any]) -> None:
    """Register an attention function, and sdpa's boolean mask for it, under `name`.

    The function then receives ``attention_mask`` as sdpa would: a ``[batch, 1, query,
    key]`` boolean mask (True = attend; sliding windows included), or None where the mask
    is plain causal.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)


def sdpa_attention() -> Callable[..., Any]:
    """transformers' sdpa attention function (``(module, q, k, v, mask, ...) -> (out, None)``)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def structural_copy(hf_model: Any) -> Any:
    """A copy of `hf_model` with its own modules but the model's own parameters and buffers.

    TransformerLens wraps the modules of the model it bridges in place; bridging this copy
    leaves `hf_model` a plain Hugging Face model that samples, trains and saves as usual,
    while the bridge always sees its current weights and costs no extra memory. Training
    switches (activation checkpointing) are turned off in the copy: it only runs
    inference.
    """
    shared = {id(t): t for t in itertools.chain(hf_model.parameters(), hf_model.buffers())}
    shadow = copy.deepcopy(hf_model, memo=shared)
    # transformers 5 renamed gradient checkpointing to activation checkpointing.
    if hasattr(shadow, "is_activation_checkpointing"):
        if shadow.is_activation_checkpointing:
            shadow.activation_checkpointing_disable()
    elif getattr(shadow, "is_gradient_checkpointing", False):
        shadow.gradient_checkpointing_disable()
    return shadow


# ---------------------------------------------------------------------------------------
# TRL
# ---------------------------------------------------------------------------------------


@functools.cache
def grpo_trainer_base() -> type:
    """`trl.GRPOTrainer` with one overridable step, ``after_scoring(batch) -> batch``.

    TRL has no public hook between scoring a batch and forming the loss; its private
    ``_generate_and_score_completions`` is that point (its output's ``"advantages"`` may be
    ``(B,)`` or ``(B, T)``: the loss accepts both).
    """
    from trl import GRPOTrainer

    class GRPOTrainerWithScoringHook(GRPOTrainer):
        def after_scoring(self, batch: dict[str, Any]) -> dict[str, Any]:
            return batch

        def _generate_and_score_completions(self, inputs):
            return self.after_scoring(super()._generate_and_score_completions(inputs))

    return GRPOTrainerWithScoringHook
