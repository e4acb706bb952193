"""Prompt encoding and token helpers shared by `Trace.from_text` and generation: the chat
template (`encode_prompt`), the ids that end a response (`eos_token_ids`), the context check."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, no_type_check

import torch

from .. import _validate
from ..errors import WorkbenchError, warn_user

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "UnknownTokensWarning",
    "check_context",
    "check_ids",
    "check_trace_tokens",
    "context_length",
    "count_unknown",
    "encode_prompt",
    "eos_token_ids",
    "model_tokenizer",
    "token_strings",
    "warn_unknown",
]


class UnknownTokensWarning(UserWarning):
    """Text held characters the tokenizer cannot encode: they became its unknown token,
    which the model and the metrics see and which decodes to nothing (`warn_unknown`). A
    workbench warning, so a panel shows it in its status line."""


def model_tokenizer(model: TransformerBridge):
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise WorkbenchError(
            "the model has no tokenizer",
            "load it with wb.load_model, or set model.tokenizer",
        )
    return tokenizer


def context_length(model: TransformerBridge) -> int | None:
    """The most tokens `model` takes in one sequence (a bridge's ``cfg.n_ctx``), or None
    when it states none."""
    return getattr(getattr(model, "cfg", None), "n_ctx", None)


def check_context(
    model: TransformerBridge,
    n: int,
    *,
    what: str,
    fix: str = "shorten the prompt or lower max_new_tokens",
) -> None:
    """Refuse `n` tokens (`what`) beyond the model's context, with the caller's `fix`."""
    n_ctx = context_length(model)
    if n_ctx is not None and n > n_ctx:
        raise WorkbenchError(f"{what} needs {n} tokens but the model's context holds {n_ctx}", fix)


def applies_chat_template(model: TransformerBridge, chat: bool) -> bool:
    """Whether `encode_prompt(model, ..., chat=chat)` wraps the prompt in a chat template
    (the tokenizer's; one without a template encodes the raw prompt): what a trace's
    ``meta["chat"]`` records, so it is rebuilt as it was encoded."""
    return bool(chat) and bool(getattr(model_tokenizer(model), "chat_template", None))


def check_ids(model: TransformerBridge, ids: torch.Tensor, *, what: str = "the trace") -> None:
    """Refuse token ids the model's vocabulary does not hold (negative, or a trace from
    another tokenizer), naming the first such position, instead of an IndexError deep in
    torch."""
    if len(ids) and int(ids.min()) < 0:
        pos = int((ids < 0).nonzero()[0])
        raise WorkbenchError(
            f"{what} holds a negative token id ({int(ids[pos])}) at position {pos}",
            "pass token ids of this model's tokenizer (0 or more)",
        )
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if d_vocab is None or len(ids) == 0:
        return
    bad = (ids >= d_vocab).nonzero()
    if len(bad):
        pos = int(bad[0])
        raise WorkbenchError(
            f"{what} holds token id {int(ids[pos])} at position {pos}, but the model's "
            f"vocabulary has {d_vocab} tokens: it was tokenized for another model",
            "rebuild it with this model's tokenizer: wb.Trace.from_text(model, prompt, "
            "response) or wb.generate(model, prompt)",
        )


#: The most pieces one character can span: UTF-8 spells a character in at most 4 bytes.
UTF8_MAX_BYTES = 4


@no_type_check  # checks its ids itself, with a message that names the fix
def token_strings(tokenizer: Any, ids: torch.Tensor | Sequence[int]) -> list[str]:
    """The text each token adds to the decoded sequence, so that ``"".join(strings)``
    is ``tokenizer.decode(ids)`` (incremental detokenization, as in transformers'
    ``TextStreamer``).

    Decoding one id at a time is wrong for two families of tokenizers:
    - SentencePiece decoders (Llama 2, Mistral, Phi-3) strip the leading space of the first
      token decoded, so every word came out glued to the last (``"Thecatsat"``);
    - byte-level pieces of one character (a CJK character, an emoji) each decode to
      ``"\ufffd"``. The character is now given to the piece that completes it and the
      pieces before it add ``""`` (charts show the empty token as ``∅``).

    Each token is decoded in a window that starts at the previous token that completed
    its text, so the cost stays linear in the length. A character is held over at most
    `UTF8_MAX_BYTES` pieces (a longer run of bytes that never completes one, from a broken
    sampler, would make the windows grow with the length); such bytes, and pieces still
    incomplete at the end, keep what the tokenizer gives them (``"\ufffd"``).

    Raises:
        WorkbenchError: `ids` is not one sequence of token ids (0 or more).
    """
    ids = _id_list(ids)
    out: list[str] = []
    start = done = 0  # window start; end of the tokens whose text is settled
    for i in range(len(ids)):
        before = tokenizer.decode(ids[start:done])
        text = tokenizer.decode(ids[start : i + 1])
        if text.endswith("\ufffd") and i + 1 < len(ids) and i + 1 - done < UTF8_MAX_BYTES:
            out.append("")  # part of a character that a later piece completes
        elif text.startswith(before):
            out.append(text[len(before) :])
            start, done = done, i + 1
        else:  # the window's text changed behind it (a cleanup rule): fall back
            out.append(tokenizer.decode(ids[done : i + 1]))
            start = done = i + 1
    return out


def _id_list(ids: Any) -> list[int]:
    """`ids` as a list of ints for `token_strings`, or a `WorkbenchError`: ``1.5`` was
    truncated to 1 (another token's text), a negative id failed with a raw OverflowError,
    a string or a batch with a raw ValueError."""
    fix = "pass one sequence of token ids, e.g. trace.ids or tokenizer(text)['input_ids']"
    if getattr(ids, "ndim", 1) != 1:
        raise WorkbenchError(
            f"token_strings needs a 1-D sequence of token ids, got shape {tuple(ids.shape)}", fix
        )
    try:
        if isinstance(ids, str | bytes):
            raise TypeError
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise TypeError
            ids = ids.tolist()
        out = [_validate.as_index(i) for i in ids]
    except TypeError:
        raise WorkbenchError(
            f"token_strings needs integer token ids, got {type(ids).__name__}"
            + (f" {ids!r}"[:60] if isinstance(ids, list | tuple | str) else ""),
            fix,
        ) from None
    bad = next((i for i in out if i < 0), None)
    if bad is not None:
        raise WorkbenchError(f"token_strings got a negative token id ({bad})", fix)
    return out


def check_template_kwargs(value: Any) -> dict[str, Any] | None:
    """`chat_template_kwargs` as a plain dict of JSON values (it is recorded in a trace's
    meta), or None; anything else is refused with the fix."""
    if value is None:
        return None
    fix = "pass e.g. chat_template_kwargs={'enable_thinking': False} (Qwen3's switch)"
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WorkbenchError(
            f"chat_template_kwargs must be a dict with string keys, got {value!r}", fix
        )
    plain = (str, int, float, bool, type(None))
    odd = [k for k, v in value.items() if not isinstance(v, plain)]
    if odd:
        raise WorkbenchError(
            f"chat_template_kwargs[{odd[0]!r}] is a {type(value[odd[0]]).__name__}: the "
            "trace records these settings, so they must be strings, numbers, booleans or None",
            fix,
        )
    # refused only by the trace's meta, after a whole generation, as a NaN in Trace.meta
    odd = [k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)]
    if odd:
        raise WorkbenchError(
            f"chat_template_kwargs[{odd[0]!r}] is {value[odd[0]]!r}: the trace records these "
            "settings as JSON, which has no NaN or infinity",
            fix,
        )
    return dict(value)


def template_meta(model: TransformerBridge, chat: bool, kwargs: dict[str, Any] | None) -> dict:
    """What a trace's meta records of `kwargs`: ``{"chat_template_kwargs": kwargs}`` when
    they were given and the template applied, else nothing."""
    if kwargs and applies_chat_template(model, chat):
        return {"chat_template_kwargs": dict(kwargs)}
    return {}


@no_type_check  # checks its prompt itself, with a message that names the fix
def encode_prompt(
    model: TransformerBridge,
    prompt: str,
    *,
    chat: bool = True,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[int]:
    """Token ids of the prompt, in the chat template's user turn when `chat` applies.

    Args:
        model: the model whose tokenizer to use.
        prompt: the prompt text (must not be empty).
        chat: use the tokenizer's chat template (with the assistant header appended) when
            it has one; tokenizers without a template encode the raw prompt.
        chat_template_kwargs: further variables for the template, passed to
            ``tokenizer.apply_chat_template`` (e.g. ``{"enable_thinking": False}`` for
            Qwen3); they apply only where the template is used.

    Returns:
        The prompt's token ids (with the tokenizer's BOS when it adds one).
    """
    chat = _validate.flag("chat", chat)
    template_kwargs = check_template_kwargs(chat_template_kwargs) or {}
    if not isinstance(prompt, str):
        raise WorkbenchError(
            f"the prompt must be text, got {type(prompt).__name__}",
            "pass the question or task text as a str",
        )
    if not prompt.strip():
        raise WorkbenchError(
            "the prompt is empty",
            "pass the question or task text the model should answer",
        )
    tokenizer = model_tokenizer(model)
    if applies_chat_template(model, chat):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            tokenize=False,
            add_generation_prompt=True,
            **template_kwargs,
        )
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        text, ids = prompt, list(tokenizer(prompt)["input_ids"])
    warn_unknown(tokenizer, text, ids, "prompt")
    return ids


def count_unknown(tokenizer: Any, text: str, ids: Sequence[int]) -> tuple[int, Any]:
    """How many of `ids`, the encoding of `text`, are the tokenizer's unknown token for
    characters it cannot encode (the unknown token written out in `text` is not counted),
    and that token's text; ``(0, None)`` for a tokenizer without one."""
    unk, name = getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "unk_token", None)
    if unk is None:
        return 0, None
    return sum(1 for i in ids if i == unk) - (
        text.count(name) if isinstance(name, str) else 0
    ), name


def warn_unknown(tokenizer: Any, text: str, ids: Sequence[int], what: str) -> None:
    """Warn (`UnknownTokensWarning`, at the user's line) when `ids`, the encoding of
    `text`, hold the tokenizer's unknown token for characters it cannot encode (a tab or an
    accented letter for the tiny models' character tokenizer): they became ``<unk>``
    without a word and decode to nothing. The unknown token written out in `text` itself
    is not counted."""
    n, name = count_unknown(tokenizer, text, ids)
    if n > 0:
        warn_user(
            f"{n} token(s) of the {what} are the tokenizer's unknown token {name!r}: "
            "characters it cannot encode, which the model and the metrics see as that one "
            "token and which decode to nothing; rewrite them with characters the tokenizer "
            "knows (the tiny models know ASCII letters, digits, space, newline and "
            "+ - * / ( ) = > : . , ? !)",
            UnknownTokensWarning,
        )


def check_trace_tokens(model: Any, trace: Any) -> None:
    """Refuse a trace whose ids are not this model's tokens: ids beyond its vocabulary
    (`check_ids`), or a trace tokenized for another model whose ids happen to fit it.

    A trace of another tokenizer with a larger vocabulary than its ids (the tiny reasoner's
    ids under SmolLM2) passes `check_ids` and would be analysed (or ablated) as other
    tokens than its ``tokens`` show. Only a trace recorded under another model's name is
    decoded again (a checkpoint of the same tokenizer, a base model and its fine-tune,
    passes; the RL credit's traces carry no name). `trace` may be a `wb.Analysis` too.
    """
    from ..models.bridge import model_name

    check_ids(model, trace.ids)

    meta = getattr(trace, "meta", None) or {}
    if isinstance(meta.get("trace"), dict):  # a `wb.Analysis` keeps its trace's meta there
        meta = meta["trace"]
    recorded, name = meta.get("model"), model_name(model)
    tokenizer = getattr(model, "tokenizer", None)
    if recorded is None or name is None or recorded == name or tokenizer is None:
        return
    mine = token_strings(tokenizer, trace.ids)
    bad = [i for i, (a, b) in enumerate(zip(mine, trace.tokens, strict=True)) if a != b]
    if bad:
        pos = bad[0]
        kwargs = meta.get("chat_template_kwargs")
        extra = f", chat_template_kwargs={kwargs!r}" if kwargs else ""
        raise WorkbenchError(
            f"the trace was tokenized for {recorded!r}, and the tokenizer of {name!r} reads its "
            f"ids differently (position {pos}: {trace.tokens[pos]!r} in the trace, "
            f"{mine[pos]!r} for this model)",
            "rebuild it with this model's tokenizer: wb.Trace.from_text(model, trace.prompt, "
            f"trace.text, chat={bool(meta.get('chat', True))}{extra}), or "
            "wb.generate(model, prompt)",
        )


def eos_token_ids(tokenizer: Any, hf_model: Any = None) -> list[int]:
    """The ids that end a response: the tokenizer's EOS and the generation config's."""
    if not hasattr(tokenizer, "eos_token_id"):
        raise WorkbenchError(
            f"expected a tokenizer, got {type(tokenizer).__name__}",
            "pass the model's tokenizer, e.g. model.tokenizer",
        )
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(hf_model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return sorted(ids)
