"""The TransformerLens bridge over a Hugging Face model, and the registries that remember,
for each bridge, the plain model that samples for it (`sampler`) and its name (`model_name`)."""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import _compat
from .._compat import check_versions, structural_copy
from ..errors import WorkbenchError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "bridge_model",
    "check_same_model",
    "context_of",
    "eval_mode",
    "live_hooks",
    "model_name",
    "sampler",
    "text_config",
]

# bridge -> the plain Hugging Face model that samples for it (see `bridge_model`).
_SAMPLERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
# bridge -> the name it was loaded under (see `model_name`).
_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def bridge_model(hf_model: Any, tokenizer: Any, *, name: str | None = None) -> TransformerBridge:
    """Hook a loaded Hugging Face causal LM with a TransformerBridge (eager attention).

    TransformerLens wraps the modules of the model it bridges in place, and a wrapped
    model's cached ``generate`` is not to be trusted (see `workbench._compat`). So the
    bridge is built over a structural copy that shares `hf_model`'s parameters and
    buffers: `hf_model` itself stays a plain Hugging Face model that samples, trains and
    saves as usual, and the bridge always sees its current weights at no extra memory.
    `sampler(bridge)` returns `hf_model`; everything in the workbench that samples
    (`wb.generate`, greedy continuations, RL rollouts) samples on it.

    Args:
        hf_model: a Hugging Face causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer.
        name: the model's name in listings (default: the folder it was loaded from; none
            for a model built in code, whose `model_name` is then None).

    Returns:
        The bridge, in eval mode.
    """
    from transformer_lens.model_bridge import TransformerBridge

    check_versions()
    if hasattr(hf_model, "original_model"):  # failed on the probe's missing .logits
        raise WorkbenchError(
            f"bridge_model needs a Hugging Face causal LM, got a {type(hf_model).__name__}, "
            "which is bridged already",
            "use that bridge as it is, or bridge its Hugging Face model: "
            "bridge_model(workbench.models.sampler(bridge), tokenizer)",
        )
    if not callable(getattr(hf_model, "parameters", None)) or not callable(
        getattr(tokenizer, "decode", None)  # a path: "TransformerLens cannot wrap" it
    ):
        # an AttributeError deep inside the bridge before
        raise WorkbenchError(
            f"bridge_model needs a Hugging Face causal LM and its tokenizer, got "
            f"{type(hf_model).__name__} and {type(tokenizer).__name__}",
            "pass the pair workbench.models.load_hf(...) returns, or use wb.load_model",
        )
    # A model built in code (no name, no folder it was read from) gets no name: "model"
    # passed for one, so two such models passed for the same and a panel offered to reload
    # "model".
    name = name or _compat.model_name(hf_model, default="") or None
    device = str(next(hf_model.parameters()).device)
    arch = type(hf_model).__name__
    try:
        with _compat.quiet_boot():  # no processor: it could pip-install torchvision
            bridge = TransformerBridge.boot_transformers(
                name or "model",
                hf_model=structural_copy(hf_model),
                tokenizer=_compat.bridge_tokenizer(tokenizer),
                device=device,
            )
    except Exception as e:  # TransformerLens names no error type for an architecture it lacks
        raise _unsupported(f"cannot wrap {arch}", e) from e
    _keep_tokenizer(bridge, tokenizer)
    context = context_of(hf_model.config)
    if context is not None and context > (getattr(bridge.cfg, "n_ctx", None) or 0):
        # TransformerLens reads max_position_embeddings alone: a YaRN checkpoint's traces
        # beyond it were refused.
        bridge.cfg.n_ctx = context
    bridge.eval()
    _check_bridge(bridge, hf_model, arch)
    if name is not None:
        _NAMES[bridge] = name
    _SAMPLERS[bridge] = hf_model
    return bridge


#: RoPE types that stretch the positions a model was trained on by their ``factor``
#: (`context_of`). "linear" is left out: its checkpoints (Gemma 3) state the stretched
#: length in ``max_position_embeddings`` already, as "llama3" and "longrope" ones do.
_STRETCHING_ROPE = ("yarn", "dynamic")


def text_config(config: Any) -> Any:
    """The part of a Hugging Face `config` that describes the language model: its text
    config in a multimodal model (Gemma 3, Llava: ``num_hidden_layers`` and the rest are
    nested there), else `config` itself."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def context_of(config: Any) -> int | None:
    """The most positions a Hugging Face model with `config` takes, or None when its config
    states none: ``max_position_embeddings``, or, for a RoPE scaled by YaRN or dynamic
    NTK, ``factor x original_max_position_embeddings`` where that is more (the context such
    a scaling is made for; Qwen's YaRN configs keep ``max_position_embeddings`` at the
    pretrained 32,768 and add ``factor`` 4 for 131,072). With rotary parameters per layer
    type (Gemma 3), the smallest over the types.

    Args:
        config: the model's config (a multimodal one is read through its text config).
    """
    config = text_config(config)
    base = getattr(config, "max_position_embeddings", None)
    if not isinstance(base, int) or isinstance(base, bool) or base < 1:
        return None
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(rope, dict):
        return base
    per_type = [p for p in rope.values() if isinstance(p, dict)] or [rope]
    return min(_stretched(p, base) for p in per_type)


def _stretched(rope: dict, base: int) -> int:
    """`context_of` for one set of rotary parameters."""
    factor = rope.get("factor")
    if rope.get("rope_type", rope.get("type")) not in _STRETCHING_ROPE:
        return base
    if not isinstance(factor, (int, float)) or isinstance(factor, bool):
        return base
    if not 1 < factor < math.inf:
        return base
    original = rope.get("original_max_position_embeddings") or base
    return max(base, int(factor * original))


def _keep_tokenizer(bridge: Any, tokenizer: Any) -> None:
    """Give the bridge the caller's tokenizer, so prompts encode as the checkpoint's do.

    TransformerLens's boot normalised a copy (`_compat.bridge_tokenizer`) and recorded on
    ``bridge.cfg`` whether it prepends a BOS, which its own ``to_tokens`` reads to add one
    (its convention, ``cfg.default_prepend_bos``). The workbench encodes with the tokenizer
    itself: a trace holds the ids the model sees in use, the same as the plain model's
    (`load_hf`, RL), with no BOS the checkpoint does not add. The one edit kept from the
    boot: a tokenizer without a padding token pads with its EOS, as TransformerLens and
    TRL do, so ``to_tokens`` can batch.
    """
    if getattr(tokenizer, "pad_token", None) is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    _compat.set_bridge_tokenizer(bridge, tokenizer)


#: `_check_bridge`'s probe length, and its tolerance on float32 logits (relative to their
#: largest magnitude): the bridge's eager attention and the model's own kernel differ by
#: float rounding only, a mis-wired adapter by the logits' own scale.
_PROBE_TOKENS = 8
_PROBE_RTOL = 1e-3


def _unsupported(what: str, error: BaseException, dtype: Any = None) -> WorkbenchError:
    """The refusal of an architecture (or, with a half-precision `dtype`, of its dtype)."""
    from importlib.metadata import version

    import torch

    detail = " ".join(str(error).split())
    if detail.startswith("Could not determine supported architecture"):
        # its message goes on to list ~100 adapters, cut mid-name at 300 characters
        detail = "it has no adapter for this architecture"
    detail = detail[:300]
    if dtype is None or dtype == torch.float32:
        where, fix = (
            "this architecture",
            "use a checkpoint of an architecture the README lists under 'Architectures', or "
            "upgrade transformer-lens deliberately (`make lock`, then `make test`) if a newer "
            "release supports it",
        )
    else:  # OLMo's adapters, for one, mix float32 and the model's dtype
        where, fix = (
            f"this architecture in {str(dtype).removeprefix('torch.')}",
            "bridge the model in float32 (`hf_model.float()`; wb.load_model always loads float32)",
        )
    return WorkbenchError(
        f"TransformerLens {version('transformer-lens')}'s bridge {what} "
        f"({type(error).__name__}: {detail}), so no hook, map, metric or intervention of "
        f"the workbench can be trusted on {where}",
        fix,
    )


def _check_bridge(bridge: Any, hf_model: Any, arch: str) -> None:
    """Run the bridge and the model on a short probe and compare their logits.

    Catches, at load time, an adapter that fails on this transformers release (an
    exception; in half precision, the fix is float32) or that computes another function
    than the model (float32 logits apart by more than `_PROBE_RTOL` of their scale; other
    dtypes are only run), and a model that is not causal (`_check_causal`: the model is
    run again with the probe's last token changed), and one whose attention computes
    another number of heads than its config states. Costs three forward passes of
    `_PROBE_TOKENS` tokens.
    """
    import torch

    vocab = int(getattr(hf_model.config, "vocab_size", 0) or 0) or _PROBE_TOKENS
    first = next(hf_model.parameters())
    device, dtype = first.device, first.dtype  # the weights' dtype: some models upcast logits
    ids = (torch.arange(_PROBE_TOKENS, device=device) * 7 + 3)[None] % vocab
    was_training = hf_model.training
    hf_model.eval()
    try:
        with torch.no_grad():
            want = hf_model(ids, use_cache=False).logits
            # The probe with its last token changed: a causal model's earlier logits stay.
            changed = ids.clone()
            changed[0, -1] = (changed[0, -1] + 1) % vocab
            later = hf_model(changed, use_cache=False).logits
            heads: set[int] = set()  # what each attention layer's pattern holds

            def look(pattern: Any, hook: Any = None) -> None:
                heads.add(int(pattern.shape[1]))

            try:
                got = bridge.run_with_hooks(
                    ids,
                    return_type="logits",
                    fwd_hooks=[(lambda name: name.endswith(".attn.hook_pattern"), look)],
                )
            except Exception as e:
                raise _unsupported(f"fails in a forward pass of {arch}", e, dtype) from e
    finally:
        hf_model.train(was_training)
    if heads - {bridge.cfg.n_heads}:
        # Every head index (classes, maps, knockouts) counts to cfg.n_heads; a pattern of
        # another width failed deep in the analysis with a shape error.
        raise WorkbenchError(
            f"{arch}'s attention computes {sorted(heads)} head(s) per layer, but its config "
            f"gives {bridge.cfg.n_heads} (num_attention_heads), the count every head index of "
            "the workbench follows",
            "correct the checkpoint's config.json: num_attention_heads must be the number of "
            "heads its attention computes (for JetMoE, num_key_value_heads x "
            "num_experts_per_tok)",
        )
    _check_causal(want, later, arch)
    if dtype != torch.float32:
        # Half-precision rounding and a mis-wired adapter overlap here: bridge against eager
        # attention in bfloat16 measured up to 1.2% of the logits' scale on GLM-4 (0 on most
        # architectures), ALiBi Falcon's wiring error 3.7%.
        return
    scale = float(want.abs().max())
    error = float((got.float() - want).abs().max()) if got.shape == want.shape else float("inf")
    if not error <= _PROBE_RTOL * max(1.0, scale):
        raise _unsupported(
            f"computes other logits than {arch}",
            ValueError(f"largest difference {error:.3g}, logits up to {scale:.3g}"),
        )


#: `_check_causal`'s tolerance: how much the probe's earlier logits may move, relative to
#: how much its last logits moved, when only its last token changes. Causal models measured
#: 0 exactly (same shapes, same kernels); a random BERT loaded as a causal LM, 2.7e-3.
_CAUSAL_RTOL = 1e-4


def _check_causal(want: Any, later: Any, arch: str) -> None:
    """Refuse a model whose earlier logits depend on a later token (bidirectional).

    `AutoModelForCausalLM` loads an encoder checkpoint (BERT, RoBERTa, ...) as its
    ``*ForCausalLM`` class without ``is_decoder``, with a warning only: attention then
    reads future tokens, generation samples nonsense, and every attention metric of the
    workbench (which assume a causal mask) would be computed on the wrong patterns.
    `want` and `later` are the probe's logits and those of the probe with its last token
    changed.
    """
    moved = float((want[0, -1].float() - later[0, -1].float()).abs().max())
    leak = float((want[0, :-1].float() - later[0, :-1].float()).abs().max())
    scale = float(want.float().abs().max())
    if leak > _CAUSAL_RTOL * moved and leak > 1e-6 * max(1.0, scale):
        raise WorkbenchError(
            f"{arch} is not a causal language model: its logits at earlier positions "
            f"change (by up to {leak:.3g}) when only a later token changes, so its "
            "attention reads future tokens (an encoder such as BERT loaded as a causal LM), "
            "and neither generation nor any attention metric of the workbench is valid on it",
            "load a decoder-only causal language model (Llama, Qwen, Mistral, GPT-2, ...; "
            "see the README's 'Architectures')",
        )


def model_name(model: Any) -> str | None:
    """The name a bridge was loaded under (`load_model`'s name or folder, or `bridge_model`'s
    `name`), or None for a model the workbench did not build or one built in code without
    a name (then no check can tell it from another model by name).

    Args:
        model: any object; a bridge from `load_model` / `bridge_model` has a name.
    """
    try:
        return _NAMES.get(model)
    except TypeError:  # not weak-referenceable, so not a bridge
        return None


def check_same_model(recorded: str | None, current: str | None, what: str, fix: str) -> None:
    """Refuse `what` (an analysis, maps), computed by the model named `recorded`, for use
    with the model named `current`.

    Two models of one tokenizer and shape (the tiny reasoner and searcher; a base model and
    its fine-tune) take each other's analyses without an error in any shape, so their
    positions and head classes would be used as this model's without a word. Either name
    None (a model the workbench did not load, an object from before names were recorded)
    passes: there is nothing to compare.

    Args:
        recorded: the name `what` records (`model_name` of the model that computed it).
        current: `model_name` of the model it is used with.
        what: how the error names it, e.g. ``"analyses[0]"``.
        fix: the error's fix.
    """
    if recorded is not None and current is not None and recorded != current:
        raise WorkbenchError(f"{what} was computed by {recorded!r}, not by {current!r}", fix)


def live_hooks(model: Any) -> list[str]:
    """The names of `model`'s hook points that hold a hook now (``[]`` for a plain model).

    Hooks added by ``model.hooks(...)``, ``wb.intervene`` or ``add_hook`` run in the
    bridge's forward passes only: the plain model that samples (`sampler`) never sees
    them.
    """
    hook_dict = getattr(model, "hook_dict", None)
    if not isinstance(hook_dict, dict):
        return []
    names: dict[int, str] = {}  # one name per hook point: TransformerLens lists aliases
    for name in sorted(hook_dict):
        point = hook_dict[name]
        if getattr(point, "fwd_hooks", None) or getattr(point, "bwd_hooks", None):
            names.setdefault(id(point), name)
    return sorted(names.values())


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """`model` in eval mode for the block; each of its modules gets its own mode back after.

    Every measuring forward pass (the analysis, its reference, attention maps, ablation
    effects) runs in it: a model left in train mode (after fine-tuning through the bridge,
    say) applies dropout to the attention, and the numbers change from call to call (on a
    GPT-2 checkpoint, ``attn_pdrop=0.1``, WAAD moved by up to 0.9 of its 0..10 range).
    """
    # The bridge's modules leave out some of its Hugging Face model's own (GPT-2's
    # embedding dropout, `transformer.drop`): both are set.
    found: dict[int, Any] = {}
    for root in (model, getattr(model, "original_model", None)):
        if hasattr(root, "modules"):
            found.update((id(m), m) for m in root.modules())
    modes = [(m, m.training) for m in found.values()]
    for m, _ in modes:
        m.training = False  # what .eval() sets, without its recursion over shared children
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def sampler(model: Any) -> Any:
    """The plain Hugging Face model that samples for `model`.

    Args:
        model: a bridge from `load_model` / `bridge_model`, or a plain Hugging Face
            causal LM (returned as it is).

    Raises:
        WorkbenchError: `model` is a TransformerBridge the workbench did not build: its
            Hugging Face model has been wrapped in place and cannot be trusted to sample.
    """
    try:
        found = _SAMPLERS.get(model)
    except TypeError:  # not weak-referenceable, so not a bridge
        found = None
    if found is not None:
        return found
    if hasattr(model, "original_model"):
        raise WorkbenchError(
            "this TransformerBridge was not built by the workbench, so its Hugging Face "
            "model is wrapped in place and its cached generation cannot be trusted",
            "build it with wb.load_model(...) or workbench.models.bridge_model(hf_model, "
            "tokenizer), which leave the Hugging Face model unwrapped for sampling",
        )
    if not callable(getattr(model, "generate", None)):
        raise WorkbenchError(
            f"cannot sample from a {type(model).__name__}",
            "pass a bridge from wb.load_model or a Hugging Face causal LM",
        )
    return model
