"""Sampling from a model: `sample_completions` (the lean decoder of `.decoder` on
Llama-family models, ``generate`` in length-bucketed batches on the others), `generate`
(one response as a `Trace`) and the degeneracy checks on a generated response."""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, no_type_check

import numpy as np
import torch

from .. import _validate
from .._progress import progress_bar
from ..errors import WorkbenchError
from ..models import (
    DEFAULT_MODEL,
    DEMO_PROBLEM,
    context_of,
    live_hooks,
    model_device,
    model_name,
    sampler,
    text_config,
)
from .decoder import (
    LeanDecoder,
    check_cache_fits,
    cut_at_eos,
    layer_windows,
    unsupported_reason,
)
from .record import Trace, check_trace
from .tokens import (
    applies_chat_template,
    check_context,
    check_template_kwargs,
    context_length,
    encode_prompt,
    eos_token_ids,
    model_tokenizer,
    template_meta,
    token_strings,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["check_not_degenerate", "degeneracy", "generate", "sample_completions"]

#: The smallest positive temperature `generate` samples with: logits divided by a smaller
#: one can exceed float32's range (3.4e38; a logit of 14 at temperature 1e-45 does), and
#: sampling then failed inside torch on a NaN probability. Long before that, sampling is
#: the argmax, which temperature 0 gives.
MIN_TEMPERATURE = 1e-30


#: The most completions one `sample_completions` call samples (prompts x
#: num_generations). Each is at least one decode step of a batch of ``batch_limit``: a
#: million is hours of sampling, and far more than the RL trainer or an evaluation asks
#: for; ``num_generations=10**12`` built its list of rows without bound before sampling.
MAX_COMPLETIONS = 1_000_000

#: The longest sequence (prompt + max_new_tokens) sampled from a model that states no
#: context (a bridge's ``cfg.n_ctx`` is checked first, as `generate` does, and a plain
#: Hugging Face model's context, `context_of`, after this). A longer one failed
#: allocating its positions and KV cache (a raw OverflowError from torch at
#: ``max_new_tokens=10**20``, out of memory below that).
MAX_SEQUENCE = 2**20

#: `generate`'s response length when none is given and the context leaves room for it.
DEFAULT_NEW_TOKENS = 256


@contextlib.contextmanager
def seeded(model: Any, seed: int) -> Iterator[None]:
    """Run the block with torch's RNG seeded by `seed` alone, and leave the caller's RNG
    as it was: the CPU generator and, for a model on CUDA, that device's generator (where
    sampling draws; `torch.manual_seed` reseeds it too, so it must be restored as well)."""
    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
@no_type_check  # validates its arguments itself, with messages that name the fix
def sample_completions(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_generations: int = 1,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    batch_limit: int = 64,
    tokenizer: Any = None,
    decoder: str = "auto",
    on_token: Callable[[], None] | None = None,
) -> list[list[int]]:
    """Sample `num_generations` completions for each prompt.

    Samples from the plain Hugging Face model `workbench.models.sampler` returns, never a
    model TransformerLens has wrapped, with the global torch RNG: seed it (e.g. under
    `torch.random.fork_rng`) for reproducibility. Two decoders, both with a KV cache:

    - ``"lean"`` (`workbench.trace.decoder.LeanDecoder`): Llama, Mistral, Qwen2 and Qwen3
      models, every prompt length in one left-padded batch; a decode step costs a few dozen
      tensor operations (2.5-4x faster than ``generate`` on the tiny models);
    - ``"hf"``: the model's ``generate``, one call per prompt length (no padding).

    ``"auto"`` takes the lean decoder wherever `decoder.unsupported_reason` allows (not on
    other architectures, hooked models, or generation configs with more than
    temperature/top-p) and ``generate`` otherwise. On a batch of one prompt length the two
    draw the same tokens from the same seed; mixed lengths share one batch in the lean
    decoder, so they consume the RNG in a different order than the bucketed ``generate``.
    Greedy results of both equal the argmax of full forward passes, prompt by prompt, up to
    float rounding.

    Args:
        model: a bridge from `wb.load_model` (its `sampler` generates) or a plain
            Hugging Face causal LM (then pass `tokenizer`).
        prompt_ids: token ids of each prompt.
        num_generations: completions per prompt (at most `MAX_COMPLETIONS` in all).
        max_new_tokens: length cap; the longest prompt plus it must fit the model's
            context (a bridge's ``cfg.n_ctx``, a plain model's `context_of` its config,
            and at most `MAX_SEQUENCE` tokens).
        temperature, top_p: sampling settings (ignored when `greedy`).
        greedy: greedy decoding.
        batch_limit: most sequences generated in one call.
        tokenizer: the tokenizer (default: ``model.tokenizer``).
        decoder: ``"auto"``, ``"lean"`` (an error names why when the model does not
            qualify) or ``"hf"``.
        on_token: called after each decoding step of each batch (one new token in every
            sequence of the batch), e.g. to advance a progress bar.

    Returns:
        ``len(prompt_ids) * num_generations`` token-id lists, prompt-major (the completions
        of prompt 0 first), each ending at its first EOS (included) or at the cap.
    """
    if decoder not in ("auto", "lean", "hf"):
        raise WorkbenchError(f"decoder={decoder!r}", 'use decoder="auto", "lean" or "hf"')
    num_generations = _validate.integer("num_generations", num_generations, minimum=1, example=8)
    max_new_tokens = _validate.integer("max_new_tokens", max_new_tokens, minimum=1, example=96)
    batch_limit = _validate.integer("batch_limit", batch_limit, minimum=1, example=64)
    greedy = _validate.flag("greedy", greedy)
    if on_token is not None and not callable(on_token):
        # it was first called after the prompts' prefill and the first draw, as a raw
        # "'int' object is not callable" from inside the decoder
        raise WorkbenchError(
            f"on_token must be a function called after each decoding step, or None, got "
            f"{type(on_token).__name__} {on_token!r}"[:200],
            "pass a function of no arguments (e.g. a progress bar's update), or leave it out",
        )
    if not greedy:
        temperature = _validate.number("temperature", temperature, low=0, example=1.0)
        if temperature == 0:  # what generate's temperature=0 means, asked of the sampler
            raise WorkbenchError(
                "temperature must be in (0, inf) to sample, got 0: temperature=0 asks for "
                "greedy decoding, which sample_completions does with greedy=True",
                "pass greedy=True, or a temperature above 0 (e.g. temperature=1.0)",
            )
        _check_temperature(temperature, "pass greedy=True for greedy decoding")
        top_p = _validate.number("top_p", top_p, low=0, high=1, low_open=True, example=0.95)
    if isinstance(prompt_ids, str | bytes) or not isinstance(prompt_ids, Iterable):
        raise WorkbenchError(
            f"prompt_ids must be a list of token-id lists, got {type(prompt_ids).__name__}",
            "pass one list of token ids per prompt, e.g. [encode_prompt(model, text)]",
        )
    prompt_ids = list(prompt_ids)  # checked, then read again: a generator would be spent
    if len(prompt_ids) * num_generations > MAX_COMPLETIONS:
        raise WorkbenchError(
            f"{len(prompt_ids)} prompts x num_generations={num_generations} is "
            f"{len(prompt_ids) * num_generations} completions, more than the "
            f"{MAX_COMPLETIONS} one call samples",
            "sample fewer completions per call (split the prompts, or lower num_generations)",
        )
    hf = sampler(model)
    hooked = live_hooks(model)
    if hooked:
        raise WorkbenchError(
            f"{len(hooked)} hook(s) are live on this bridge (e.g. {hooked[0]}, from "
            "wb.intervene or model.hooks), but sampling runs on the plain Hugging Face "
            "model behind it, which would ignore them",
            "sample outside the with block, or decode under the hooks with "
            "wb.ablation.greedy_continue(model, prefix, interventions=[...])",
        )
    prompt_ids = _check_prompt_ids(prompt_ids, hf.get_input_embeddings().num_embeddings)
    if prompt_ids:
        _check_room(model, max(len(p) for p in prompt_ids), max_new_tokens, hf)
    _check_generation_config(hf)
    tokenizer = tokenizer if tokenizer is not None else model_tokenizer(model)
    device = model_device(hf)
    eos = eos_token_ids(tokenizer, hf)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    rows: list[tuple[int, Sequence[int]]] = [
        (i, p) for i, p in enumerate(prompt_ids) for _ in range(num_generations)
    ]
    lean = None
    if decoder != "hf":
        reason = unsupported_reason(hf)
        if reason is not None and decoder == "lean":
            raise WorkbenchError(
                f"the lean decoder cannot sample for this model: {reason}",
                'pass decoder="hf" (or "auto") to sample with the model\'s generate',
            )
        lean = LeanDecoder(hf) if reason is None else None
    if lean is not None:
        return _sample_lean(
            lean, rows, batch_limit, max_new_tokens, eos, pad, greedy, temperature, top_p, on_token
        )
    by_len: dict[int, list[int]] = defaultdict(list)
    for r, (_, p) in enumerate(rows):
        by_len[len(p)].append(r)
    out: list[list[int]] = [[] for _ in rows]
    settings: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos or None,
        "pad_token_id": pad,
        "do_sample": not greedy,
        # The ids of one completion per row, even where the model's generation config asks
        # for a dict of outputs (slicing that failed with a raw TypeError) or for several
        # sequences per prompt (num_generations says how many here; generate failed with a
        # raw ValueError). Set on a copy of the config: generate validates the model's own
        # config before it applies keyword arguments.
        "return_dict_in_generate": False,
        "num_return_sequences": 1,
        # Sampling draws from the policy and greedy is the argmax: a config's beam search
        # ran instead of either without a word (and beam sampling returns the best beam,
        # not a draw, which RL's log-probs would treat as one).
        "num_beams": 1,
        "num_beam_groups": 1,
        # Outputs the ids do not need (the model's forward computed them at every step).
        "output_scores": False,
        "output_logits": False,
        "output_attentions": False,
        "output_hidden_states": False,
    }
    if not greedy:
        settings.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    config = _generation_config(hf, settings)
    was_training = hf.training
    hf.eval()
    try:
        for length in sorted(by_len):
            members = by_len[length]
            for start in range(0, len(members), batch_limit):
                chunk = members[start : start + batch_limit]
                _check_hf_memory(hf, len(chunk), length + max_new_tokens, max_new_tokens)
                ids = torch.tensor([list(rows[r][1]) for r in chunk], device=device)
                gen = hf.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=config,
                    streamer=None if on_token is None else _steps(on_token),
                )[:, length:].cpu()
                for r, seq in zip(chunk, gen.tolist(), strict=True):
                    out[r] = cut_at_eos(seq, eos)
    finally:
        hf.train(was_training)
    return out


def _generation_config(hf: Any, settings: dict[str, Any]) -> Any:
    """A copy of `hf`'s generation config (the defaults when it has none) with `settings`."""
    from transformers import GenerationConfig

    base = getattr(hf, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    for key, value in settings.items():
        setattr(config, key, value)
    return config


def _check_room(model: Any, prompt_len: int, max_new_tokens: int, hf: Any = None) -> None:
    """Refuse a `prompt_len`-token prompt plus `max_new_tokens` that does not fit the
    model's context (a bridge's ``cfg.n_ctx``), `MAX_SEQUENCE`, or, for a plain Hugging
    Face model `hf` with no ``cfg``, its config's context (`context_of`), before
    anything is sampled (a plain GPT-2 failed past its positions with a raw IndexError, and
    a RoPE model sampled past its context without a word)."""
    n = prompt_len + max_new_tokens
    what = f"a {prompt_len}-token prompt plus max_new_tokens={max_new_tokens}"
    check_context(model, n, what=what, fix=_room_fix(prompt_len, context_length(model)))
    if n > MAX_SEQUENCE:
        raise WorkbenchError(
            f"{what} needs {n} tokens, more than the {MAX_SEQUENCE} this workbench samples "
            "in one sequence",
            "lower max_new_tokens",
        )
    config = getattr(hf, "config", None)
    if context_length(model) is None and config is not None:
        limit = context_of(config)
        if limit is not None and n > limit:
            text = text_config(config)
            source = "max_position_embeddings"
            if limit != text.max_position_embeddings:
                source += " stretched by its RoPE scaling"
            raise WorkbenchError(
                f"{what} needs {n} tokens but the model's context holds {limit} (its "
                f"config's {source})",
                _room_fix(prompt_len, limit),
            )


def _room_fix(prompt_len: int, n_ctx: int | None) -> str:
    """The fix for a prompt plus new tokens beyond a context of `n_ctx` tokens: lowering
    max_new_tokens cannot help a prompt that fills the context by itself (it was named)."""
    if n_ctx is not None and prompt_len >= n_ctx:
        return (
            f"shorten the prompt: its {prompt_len} tokens leave no room for a response in the "
            f"model's {n_ctx}-token context"
        )
    return "shorten the prompt or lower max_new_tokens"


def _check_hf_memory(hf: Any, rows: int, total: int, max_new_tokens: int) -> None:
    """Refuse a `generate` call whose KV cache cannot fit, before it starts (the cache grew
    until the process was killed part-way, a dead notebook kernel after a long wait).

    The cache needs at least ``2 x rows x kv_heads x d_head x sum_l n_l`` values in the
    model's dtype, where a full-attention layer holds ``n_l = total`` positions, a sliding
    layer ``min(total, window)``, and a layer of another kind (a state-space mixer) none.
    A lower bound, so nothing that might fit is refused; a config that does not say its
    shapes is not checked."""
    cfg = text_config(hf.config)
    heads = getattr(cfg, "num_attention_heads", None)
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    layers = getattr(cfg, "num_hidden_layers", None)
    d_head = getattr(cfg, "head_dim", None)
    if not d_head and _validate.is_index(heads) and heads:
        d_head = getattr(cfg, "hidden_size", 0) // heads
    if not all(_validate.is_index(v) and v > 0 for v in (kv, layers, d_head)):
        return
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * layers
    windows = layer_windows(cfg, layers)
    positions = sum(
        min(total, w) if _validate.is_index(w) and w > 0 else total
        for t, w in zip(types, windows, strict=True)
        if t in ("full_attention", "sliding_attention")
    )
    need = 2 * rows * kv * d_head * positions * next(hf.parameters()).element_size()
    check_cache_fits(need, model_device(hf), rows, total, max_new_tokens)


def _check_generation_config(hf: Any) -> None:
    """Refuse a generation config with stop strings: ``generate`` needs the tokenizer to
    honour them (it failed with a raw ValueError), and the completions end at EOS only."""
    stops = getattr(getattr(hf, "generation_config", None), "stop_strings", None)
    if stops:
        raise WorkbenchError(
            f"the model's generation config sets stop_strings={stops!r}, which sampling "
            "here does not honour (completions end at the first EOS or at max_new_tokens)",
            "clear them before sampling: model.generation_config.stop_strings = None (for "
            "a bridge, on workbench.models.sampler(model)), and cut the text at the stop "
            "string afterwards",
        )


def _check_temperature(temperature: float, greedy: str) -> None:
    """Refuse a positive temperature below `MIN_TEMPERATURE` (`greedy`: how to ask for the
    argmax, which is what such a temperature means)."""
    if 0 < temperature < MIN_TEMPERATURE:
        raise WorkbenchError(
            f"temperature={temperature!r} is too close to 0 to sample with: the logits divided by "
            "it can overflow float32 (sampling then fails on NaN probabilities)",
            f"{greedy} (what such a temperature means), or a temperature of at least "
            f"{MIN_TEMPERATURE}",
        )


def _check_prompt_ids(prompt_ids: Any, n_vocab: int) -> list[list[int]]:
    """The prompts as lists of ints, or a `WorkbenchError` for prompts that are not
    non-empty lists of token ids of the model's vocabulary (they failed deep inside torch:
    "index out of range in self", "cannot reshape"; a prompt given as an iterator was spent
    by the check and then failed on its length)."""
    out = []
    fix = (
        "pass one list of token ids per prompt, from this model's tokenizer, e.g. "
        "[encode_prompt(model, text) for text in prompts]"
    )
    for i, p in enumerate(prompt_ids):
        try:
            ids = [_validate.integer("a token id", t) for t in p]
        except (TypeError, WorkbenchError):
            raise WorkbenchError(
                f"prompt {i} is not a sequence of integer token ids", fix
            ) from None
        if not ids:
            raise WorkbenchError(f"prompt {i} is empty: there is nothing to continue", fix)
        bad = next((t for t in ids if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise WorkbenchError(
                f"prompt {i} holds token id {bad}, outside the model's vocabulary "
                f"(0..{n_vocab - 1})",
                fix,
            )
        out.append(ids)
    return out


def _sample_lean(
    lean: LeanDecoder,
    rows: list[tuple[int, Sequence[int]]],
    batch_limit: int,
    max_new_tokens: int,
    eos: list[int],
    pad: int,
    greedy: bool,
    temperature: float,
    top_p: float,
    on_token: Callable[[], None] | None = None,
) -> list[list[int]]:
    # Rows sorted by prompt length (stably) so a batch_limit chunk pads little.
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][1]))
    out: list[list[int]] = [[] for _ in rows]
    for start in range(0, len(order), batch_limit):
        chunk = order[start : start + batch_limit]
        new = lean.generate(
            [rows[r][1] for r in chunk],
            max_new_tokens=max_new_tokens,
            eos=eos,
            pad=pad,
            greedy=greedy,
            temperature=temperature,
            top_p=top_p,
            on_token=on_token,
        )
        for r, seq in zip(chunk, new, strict=True):
            out[r] = seq
    return out


def _steps(on_token: Callable[[], None]) -> Any:
    """A ``generate`` streamer that calls `on_token` once per decoding step (``generate``
    puts the prompt first, then each step's new tokens, one per row)."""
    from transformers.generation import BaseStreamer

    class Steps(BaseStreamer):
        prompt_seen = False

        def put(self, value: Any) -> None:
            if self.prompt_seen:
                on_token()
            self.prompt_seen = True

        def end(self) -> None:
            pass

    return Steps()


@torch.no_grad()
@no_type_check  # validates its arguments itself, with messages that name the fix
def generate(
    model: TransformerBridge,
    prompt: str,
    *,
    max_new_tokens: int | None = None,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    chat: bool = True,
    chat_template_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> Trace:
    """Sample a response and return it as a `Trace`.

    Sampling runs on the plain Hugging Face model behind the bridge (`sample_completions`:
    its KV cache, no hooks), under
    a private RNG seeded by `seed`, so the same seed gives the same trace and the global
    torch RNG is untouched. Generation stops at the end-of-sequence token, which is kept
    as the last response token (as in TRL's completion ids).

    Args:
        model: a bridge from `wb.load_model`.
        prompt: the question; wrapped in the chat template when `chat` and the tokenizer
            has one.
        max_new_tokens: at most this many response tokens; default `DEFAULT_NEW_TOKENS`
            (256), or what the model's context leaves after the prompt when that is less
            (the tiny models hold 256 tokens in all). The trace's meta records the value.
        temperature: sampling temperature; 0 means greedy decoding.
        top_p: nucleus sampling mass in (0, 1].
        seed: RNG seed.
        chat: apply the chat template.
        chat_template_kwargs: further template variables (e.g. ``{"enable_thinking":
            False}`` for Qwen3), recorded in the trace's meta when the template applies.
        progress: a bar of the tokens generated, for a generation that takes more than a
            second (in a notebook or a terminal, none in a log file; 200 tokens of
            SmolLM2-135M take about 10 s on a CPU).

    Returns:
        A `Trace` with ``prompt_len`` at the first generated token.
    """
    # The normalised values (a NumPy or torch integer seed becomes an int) are what samples
    # and what `meta` records, so the trace saves as JSON.
    if max_new_tokens is not None:
        max_new_tokens = _validate.integer("max_new_tokens", max_new_tokens, minimum=1, example=128)
    temperature = _validate.number("temperature", temperature, low=0, example=0.7)
    top_p = _validate.number("top_p", top_p, low=0, high=1, low_open=True, example=0.95)
    seed = _validate.seed("seed", seed)
    chat = _validate.flag("chat", chat)  # recorded in meta: a NumPy bool would not save as JSON
    progress = _validate.flag("progress", progress)
    _check_temperature(temperature, "pass temperature=0 for greedy decoding")
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError(
            f"the prompt is empty or not text ({type(prompt).__name__})",
            "pass the question or task text the model should answer, as a string",
        )
    tokenizer = model_tokenizer(model)
    template_kwargs = check_template_kwargs(chat_template_kwargs)
    prompt_ids = encode_prompt(model, prompt, chat=chat, chat_template_kwargs=template_kwargs)
    if max_new_tokens is None:
        # The default fits the context (256 new tokens failed on the tiny models for any
        # prompt); a prompt that fills it is refused here, naming the prompt.
        n_ctx = context_length(model)
        room = DEFAULT_NEW_TOKENS if n_ctx is None else n_ctx - len(prompt_ids)
        if room < 1:  # named as "plus max_new_tokens=1", a value the caller never gave
            raise WorkbenchError(
                f"the prompt is {len(prompt_ids)} tokens long and the model's context holds "
                f"{n_ctx}: no room is left for a response",
                _room_fix(len(prompt_ids), n_ctx),
            )
        max_new_tokens = min(DEFAULT_NEW_TOKENS, room)
    # delay: a quick answer shows no bar at all
    bar = progress_bar(
        total=max_new_tokens, desc="generate", unit="tok", progress=progress, leave=False, delay=1.0
    )
    with bar, seeded(sampler(model), seed):
        completion = sample_completions(
            model,
            [prompt_ids],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            greedy=temperature == 0,
            on_token=bar.update,
        )[0]
        # An answer that ended before max_new_tokens (its EOS) is complete: a notebook draws a
        # bar closed short of its total red, as failed, and leaves it on screen.
        bar.total = bar.n
    if not completion:
        raise WorkbenchError(  # pragma: no cover - generate always emits one token
            "the model generated no tokens", "raise max_new_tokens"
        )
    new = torch.tensor(completion, dtype=torch.long)
    ids = torch.cat([torch.tensor(prompt_ids, dtype=torch.long), new.long()])
    return Trace(
        ids=ids,
        tokens=token_strings(tokenizer, ids),
        prompt_len=len(prompt_ids),
        text=tokenizer.decode(new, skip_special_tokens=True),
        prompt=prompt,
        meta={
            "model": model_name(model),
            "source": "generate",
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "chat": applies_chat_template(model, chat),  # as encoded: False without a template
            **template_meta(model, chat, template_kwargs),
        },
    )


@no_type_check  # checks its ids itself, with a message that names the fix
def degeneracy(ids: Sequence[int] | torch.Tensor) -> dict[str, float]:
    """How repetitive a token sequence is.

    Returns:
        ``{"n": length, "distinct_share": distinct tokens / length, "longest_run": the
        longest run of one token repeated back to back}``. A coherent answer of SmolLM2
        to the demo problem (112 tokens) has a distinct share of 0.34 and runs of at most 2; a
        sampler that ignores its KV cache produced ``1-----...``: 2 distinct tokens in 160.
    """
    seq = _id_list(ids)
    longest = run = 0
    for i, t in enumerate(seq):
        run = run + 1 if i and t == seq[i - 1] else 1
        longest = max(longest, run)
    return {
        "n": len(seq),
        "distinct_share": len(set(seq)) / len(seq) if seq else 1.0,
        "longest_run": longest,
    }


def _id_list(ids: Any) -> list[int]:
    """`ids` as a list of ints, or a `WorkbenchError`: floats were truncated (1.5 and 1.7
    counted as one token repeated), strings and batches failed with raw errors."""
    if isinstance(ids, torch.Tensor | np.ndarray) and ids.ndim != 1:
        raise WorkbenchError(
            f"degeneracy needs a 1-D sequence of token ids, got shape {tuple(ids.shape)}",
            "pass one sequence, e.g. trace.response_ids",
        )
    try:
        if isinstance(ids, str | bytes):
            raise TypeError
        return [_validate.as_index(i) for i in ids]
    except TypeError:
        raise WorkbenchError(
            f"degeneracy needs a sequence of integer token ids, got {type(ids).__name__}"
            + (f" {ids!r}"[:60] if isinstance(ids, list | tuple) else ""),
            "pass token ids, e.g. trace.response_ids",
        ) from None


@no_type_check  # validates its arguments itself, with messages that name the fix
def check_not_degenerate(
    trace: Trace, *, min_tokens: int = 16, min_distinct: float = 0.15, max_run: int = 12
) -> None:
    """Raise a `WorkbenchError` when a trace's response looks like a broken sampler's output.

    A response of at least `min_tokens` tokens is degenerate when fewer than
    `min_distinct` of its tokens are distinct, or one token repeats more than `max_run`
    times in a row (see `degeneracy`). The demo and the notebooks call this so that a
    broken sampler fails loudly instead of being analysed as if it were reasoning.

    The error blames the installation only for a trace known to come out coherent with
    the locked environment (`_known_coherent`: the default model's greedy answer to the
    demo's problem). Any other degenerate answer may be the model's own (a small model
    off its training distribution repeats itself), and the error says what to try.
    """
    check_trace(trace)
    # A NaN min_distinct never compared true (the check was silently off), a string failed
    # in the comparison.
    min_tokens = _validate.integer("min_tokens", min_tokens, minimum=0, example=16)
    min_distinct = _validate.number("min_distinct", min_distinct, low=0, high=1, example=0.15)
    max_run = _validate.integer("max_run", max_run, minimum=1, example=12)
    stats = degeneracy(trace.response_ids)
    if stats["n"] < min_tokens:
        return
    if stats["distinct_share"] < min_distinct or stats["longest_run"] > max_run:
        problem = (
            f"the model's answer is degenerate ({stats['n']} tokens, "
            f"{stats['distinct_share']:.0%} distinct, a token repeated "
            f"{stats['longest_run']} times in a row): {trace.text[:60]!r}"
        )
        if _known_coherent(trace):
            raise WorkbenchError(
                problem,
                "the sampler is probably broken by an untested dependency version: reinstall "
                "the locked environment (`make clean-venv && make demo`)",
            )
        raise WorkbenchError(
            problem,
            "small models repeat themselves on prompts unlike those they were trained on: "
            "try a prompt of the model's own kind (the tiny models: a task from wb.tasks, "
            "with chat=False), sampling (temperature=0.7) or a larger model; `workbench demo` "
            "with its defaults checks the installation itself",
        )


def _known_coherent(trace: Trace) -> bool:
    """Whether `trace` is the demo's reference answer: the default model, greedy, on the
    demo's problem in its chat template. The lock is tested to answer it coherently
    (tests/core/test_sampling.py), so there a degenerate answer means a broken sampler.
    Elsewhere nothing is known: `workbench demo --model tiny-reasoner` was told to
    reinstall for a tiny model's answer to a word problem it was never trained on."""
    meta = trace.meta or {}
    return (
        meta.get("model") == DEFAULT_MODEL
        and meta.get("source") == "generate"
        and meta.get("temperature") == 0
        and meta.get("chat") is True
        and trace.prompt == DEMO_PROBLEM
    )
