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
  Its boot also replaces the tokenizer it is given: it reloads it from the folder (or hub
  name) in ``init_kwargs["name_or_path"]`` with ``add_bos_token=True``, and fills a missing
  EOS with ``"<|endoftext|>"``. That changed how prompts encode (a BOS the checkpoint's
  own tokenizer does not add), lost in-memory edits (a chat template, added tokens), and
  failed for a tokenizer built in memory or a moved folder. `bridge_tokenizer` hands it a
  copy that it leaves as it is; `set_bridge_tokenizer` then puts the caller's tokenizer
  back through the private ``_tokenizer`` (the public setter would run that boot step
  again, and reset ``cfg.d_vocab`` to the tokenizer's size). `suspended_hooks` takes the
  temporary hooks of a ``model.hooks()`` context out of PyTorch's private hook table of
  each ``HookPoint`` (TransformerLens keeps no public way to pause them) for a probe pass.
  For a multimodal checkpoint (Gemma 3's ``Gemma3ForConditionalGeneration``) the boot
  loads an image or audio processor and, when that needs torchvision, runs ``pip install
  torchvision`` in the user's environment, which replaced the locked CPU torch 2.13 with
  a CUDA torch 2.14 in a test here. The workbench reads text only: `quiet_boot` turns the
  private ``load_modality_processor`` of the boot's module off for the boot.
- transformers: the config's ``_name_or_path`` and ``_attn_implementation`` fields; a
  model class's ``_supports_attention_backend`` flag; ``masking_utils.sdpa_mask`` and
  ``integrations.sdpa_attention`` (the workbench's registered attention function gets the
  boolean mask sdpa gets, and calls sdpa itself for layers it does not analyse).
- huggingface_hub: ``utils.tqdm.progress_bar_states`` (its per-group bar settings, put
  back after transformers' bars are switched off for a load).
- TRL: ``GRPOTrainer._generate_and_score_completions`` (the override point for per-token
  advantages) and ``GRPOTrainer._metrics`` (its metric log); transformers'
  ``Trainer._save_checkpoint``, ``_get_output_dir`` and ``_load_optimizer_and_scheduler``
  (where a checkpoint is written and read back: the workbench keeps its own state there).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .provenance import installed_version as _installed

__all__ = [
    "TESTED",
    "UntestedVersionWarning",
    "attention_implementation",
    "bridge_tokenizer",
    "check_versions",
    "grpo_trainer_base",
    "model_name",
    "quiet_boot",
    "register_attention",
    "sdpa_attention",
    "set_bridge_tokenizer",
    "structural_copy",
    "supports_attention_interface",
    "suspended_hooks",
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
    # A bound method set on a module instance patches its behaviour: TRL's fused LM head
    # (`trl.trainer.utils.add_fused_lm_head`) sets `model.forward` to one whose closure
    # calls the *original* model's forward, so the copy ran the original's unhooked
    # modules and the bridge's pattern hooks never fired (all-zero attention). The copy
    # takes its class's forward. (accelerate's device hooks are partials: they stay.)
    for module in shadow.modules():
        if isinstance(module.__dict__.get("forward"), types.MethodType):
            del module.__dict__["forward"]
    # transformers 5 renamed gradient checkpointing to activation checkpointing.
    if hasattr(shadow, "is_activation_checkpointing"):
        if shadow.is_activation_checkpointing:
            shadow.activation_checkpointing_disable()
    elif getattr(shadow, "is_gradient_checkpointing", False):
        shadow.gradient_checkpointing_disable()
    return shadow


_BOOT_MODULE = "transformer_lens.model_bridge.sources.transformers.source"


@contextlib.contextmanager
def quiet_boot() -> Iterator[None]:
    """TransformerLens's boot without its modality processor, so it never installs a
    package (see the module docstring); restored after the block."""
    import importlib

    try:
        source = importlib.import_module(_BOOT_MODULE)
    except ImportError:  # moved: nothing to turn off (tests/core/test_compat.py notices)
        yield
        return
    previous = source.__dict__.get("load_modality_processor")
    source.load_modality_processor = lambda *args, **kwargs: None
    try:
        yield
    finally:
        if previous is not None:
            source.load_modality_processor = previous


def bridge_tokenizer(tokenizer: Any) -> Any:
    """A deep copy of `tokenizer` for TransformerLens's boot to normalise in place.

    ``transformer_lens.utilities.get_tokenizer_with_bos`` returns a tokenizer unchanged
    when its ``init_kwargs`` say ``add_bos_token`` (and reloads it from
    ``init_kwargs["name_or_path"]`` otherwise); the copy says so, so nothing is reloaded
    and the boot's other edits (a padding side, placeholder special tokens) stay on the
    copy. The copy encodes exactly as `tokenizer` does, so the BOS/EOS behaviour the boot
    detects on it (``cfg.tokenizer_prepends_bos``) is the caller's.
    """
    copied = copy.deepcopy(tokenizer)
    kwargs = dict(getattr(copied, "init_kwargs", None) or {})
    kwargs["add_bos_token"] = True
    kwargs.setdefault("name_or_path", getattr(copied, "name_or_path", "") or "")
    copied.init_kwargs = kwargs
    return copied


def set_bridge_tokenizer(bridge: Any, tokenizer: Any) -> None:
    """Make `tokenizer` the bridge's, leaving ``bridge.cfg`` (vocabulary size, BOS/EOS
    flags) as the boot set it from the `bridge_tokenizer` copy."""
    bridge._tokenizer = tokenizer


def _hook_points(model: Any) -> list[Any]:
    """The model's distinct ``HookPoint`` modules."""
    from transformer_lens.hook_points import HookPoint

    points = model.hook_points() if hasattr(model, "hook_points") else model.modules()
    seen: dict[int, Any] = {}
    for hp in points:
        if isinstance(hp, HookPoint):
            seen.setdefault(id(hp), hp)
    return list(seen.values())


@contextlib.contextmanager
def suspended_hooks(model: Any) -> Iterator[None]:
    """Suspend the model's temporary forward hooks (those of ``model.hooks()`` contexts such
    as `intervene`, or added with ``add_hook``) for the duration; permanent hooks stay.

    Each hook point keeps its ``fwd_hooks`` handles; only PyTorch's hook table of the
    module is emptied of the temporary ones and restored afterwards, in its original order,
    so the caller's hooks are neither lost nor re-ordered, even if the body raises.
    """
    saved: list[tuple[Any, dict[int, Any]]] = []
    try:
        for hp in _hook_points(model):
            live = {h.hook.id for h in getattr(hp, "fwd_hooks", []) if not h.is_permanent}
            table = hp._forward_hooks
            if live & table.keys():
                saved.append((hp, dict(table)))
                for key in live & table.keys():
                    del table[key]
        yield
    finally:
        for hp, table in saved:
            hp._forward_hooks.clear()
            hp._forward_hooks.update(table)


@contextlib.contextmanager
def loading_bars() -> Iterator[None]:
    """transformers' bars ("Loading weights", a GGUF conversion, a hub download) under the
    workbench's rule: shown in a notebook or on a terminal, none in a log file (transformers
    shows them wherever stderr goes). Off only while loading; a caller's
    ``transformers.utils.logging.disable_progress_bar()`` is kept either way."""
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import tqdm as hub_tqdm
    from transformers.utils import logging as hf_logging

    from ._progress import bars_shown

    hide = (
        hf_logging.is_progress_bar_enabled()
        and hub_constants.HF_HUB_DISABLE_PROGRESS_BARS is not False  # =0: bars asked for
        and not bars_shown()
    )
    if not hide:
        yield
        return
    # transformers switches the hub's bars too; the hub's own settings (per group) come back
    hub_states = dict(getattr(hub_tqdm, "progress_bar_states", {}))
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        states = getattr(hub_tqdm, "progress_bar_states", None)
        if isinstance(states, dict):
            states.clear()
            states.update(hub_states)


# ---------------------------------------------------------------------------------------
# TRL
# ---------------------------------------------------------------------------------------


@functools.cache
def grpo_trainer_base() -> type:
    """`trl.GRPOTrainer` with three overridable steps: ``after_scoring(batch) -> batch``,
    ``save_extra_state(folder)`` and ``load_extra_state(checkpoint)``.

    TRL has no public hook between scoring a batch and forming the loss; its private
    ``_generate_and_score_completions`` is that point (its output's ``"advantages"`` may be
    ``(B,)`` or ``(B, T)``: the loss accepts both). Nor has transformers' Trainer one for a
    subclass's own state in a checkpoint: ``save_extra_state`` runs (on the process that
    saves) with the checkpoint folder before the Trainer writes its files there, its
    ``trainer_state.json`` last, so a folder that holds that file holds the extra state
    too; ``load_extra_state`` runs with the folder a run resumes from, after the optimizer
    and scheduler are restored, or with None for a run that starts afresh.
    """
    import os

    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
    from trl import GRPOTrainer

    class GRPOTrainerWithScoringHook(GRPOTrainer):
        def after_scoring(self, batch: dict[str, Any]) -> dict[str, Any]:
            return batch

        def save_extra_state(self, folder: str) -> None:
            pass

        def load_extra_state(self, checkpoint: str | None) -> None:
            pass

        def _generate_and_score_completions(self, inputs):
            return self.after_scoring(super()._generate_and_score_completions(inputs))

        def _save_checkpoint(self, model, trial):
            if self.args.should_save:
                folder = os.path.join(
                    self._get_output_dir(trial=trial),
                    f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
                )
                os.makedirs(folder, exist_ok=True)
                self.save_extra_state(folder)
            super()._save_checkpoint(model, trial)

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            self.load_extra_state(checkpoint)

    return GRPOTrainerWithScoringHook
