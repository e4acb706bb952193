"""A reasoning trace: prompt + response token ids with the boundary between them.

Everything downstream (metrics, charts, ablations, RL credit) consumes a `Trace`. It is
built either by sampling from a model (`generate`) or from text pasted from elsewhere
(`Trace.from_text`). Prompt and response are tokenised separately and concatenated, so the
boundary `prompt_len` is exact (as in TRL, where completion ids follow prompt ids).

Instruct models get their chat template (``chat=True``): the prompt becomes a user turn plus
the assistant header, and the response is the assistant's text. Tokenizers without a chat
template (such as the tiny reasoner's) use the raw prompt.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int

from ._io import atomic_write_json
from .errors import WorkbenchError
from .models import model_name, sampler

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "Trace",
    "check_not_degenerate",
    "degeneracy",
    "encode_prompt",
    "eos_token_ids",
    "generate",
    "sample_completions",
]


@dataclass(frozen=True, eq=False)
class Trace:
    """Token ids of prompt + response, and where the response starts.

    Attributes:
        ids: ``[pos]`` token ids of prompt followed by response (1-D, int64, CPU).
        tokens: the string of each token (``len(tokens) == len(ids)``).
        prompt_len: index of the first response token; response positions are
            ``range(prompt_len, len(ids))``.
        text: the decoded response (special tokens skipped).
        prompt: the prompt as given (before any chat template).
        meta: free-form details (model name, sampling settings, seed).
    """

    ids: torch.Tensor  # [pos]; validated in __post_init__ with a clear error
    tokens: list[str]
    prompt_len: int
    text: str
    prompt: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ids.ndim != 1:
            raise WorkbenchError(
                f"Trace.ids must be 1-D [pos], got shape {tuple(self.ids.shape)}",
                "pass one sequence; for a batch build one Trace per row",
            )
        if len(self.tokens) != len(self.ids):
            raise WorkbenchError(
                f"Trace has {len(self.ids)} ids but {len(self.tokens)} token strings",
                "build traces with wb.generate or Trace.from_text",
            )
        if not 0 < self.prompt_len <= len(self.ids):
            raise WorkbenchError(
                f"Trace.prompt_len={self.prompt_len} is outside 1..{len(self.ids)}",
                "the prompt must hold at least one token and end inside the sequence",
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def response_len(self) -> int:
        """Number of response tokens."""
        return len(self.ids) - self.prompt_len

    @property
    def response(self) -> range:
        """Response positions, ``range(prompt_len, len(ids))``."""
        return range(self.prompt_len, len(self.ids))

    @property
    def response_ids(self) -> Int[torch.Tensor, " response_pos"]:
        """Token ids of the response only."""
        return self.ids[self.prompt_len :]

    @property
    def response_tokens(self) -> list[str]:
        """Token strings of the response only."""
        return self.tokens[self.prompt_len :]

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (
            f"Trace(prompt_len={self.prompt_len}, response_len={self.response_len}, text={text!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ids as a list); `Trace.from_dict` inverts it."""
        return {
            "ids": [int(i) for i in self.ids],
            "tokens": list(self.tokens),
            "prompt_len": self.prompt_len,
            "text": self.text,
            "prompt": self.prompt,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        """Rebuild a trace from `to_dict` output."""
        try:
            return cls(
                ids=torch.tensor(d["ids"], dtype=torch.long),
                tokens=list(d["tokens"]),
                prompt_len=int(d["prompt_len"]),
                text=d.get("text", ""),
                prompt=d.get("prompt", ""),
                meta=dict(d.get("meta", {})),
            )
        except (KeyError, TypeError) as e:
            raise WorkbenchError(
                f"not a saved trace: missing or malformed field {e}",
                "pass a dict written by Trace.to_dict (or a file written by Trace.save)",
            ) from e

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace written by `save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            if isinstance(e, WorkbenchError):
                raise
            raise WorkbenchError(
                f"cannot read a trace from {path}: {e}", "pass a file written by Trace.save"
            ) from e

    @classmethod
    def from_text(
        cls,
        model: TransformerBridge,
        prompt: str,
        response: str,
        *,
        chat: bool = True,
    ) -> Trace:
        """Build a trace from a prompt and a response written elsewhere, without generating.

        Args:
            model: the model whose tokenizer (and chat template) to use.
            prompt: the user's prompt.
            response: the model's (or anyone's) response text.
            chat: wrap the prompt in the chat template when the tokenizer has one.

        Returns:
            A `Trace` whose response tokens are ``tokenizer(response)`` without special
            tokens.
        """
        tokenizer = _tokenizer(model)
        if not isinstance(response, str) or not response.strip():
            raise WorkbenchError(
                "the response is empty: there is nothing to analyse",
                "pass the response text the model produced (or use wb.generate)",
            )
        prompt_ids = encode_prompt(model, prompt, chat=chat)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor(list(prompt_ids) + list(response_ids), dtype=torch.long)
        _check_context(model, len(ids), what="the trace")
        return cls(
            ids=ids,
            tokens=_token_strings(tokenizer, ids),
            prompt_len=len(prompt_ids),
            text=response,
            prompt=prompt,
            meta={"model": model_name(model), "source": "text"},
        )


def _tokenizer(model: TransformerBridge):
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise WorkbenchError(
            "the model has no tokenizer",
            "load it with wb.load_model, or set model.tokenizer",
        )
    return tokenizer


def _n_ctx(model: TransformerBridge) -> int | None:
    return getattr(getattr(model, "cfg", None), "n_ctx", None)


def _check_context(model: TransformerBridge, n: int, *, what: str) -> None:
    n_ctx = _n_ctx(model)
    if n_ctx is not None and n > n_ctx:
        raise WorkbenchError(
            f"{what} needs {n} tokens but the model's context holds {n_ctx}",
            "shorten the prompt or lower max_new_tokens",
        )


def _token_strings(tokenizer, ids: torch.Tensor) -> list[str]:
    # Decode one id at a time so each string is readable ("Ġthe" -> " the").
    return [tokenizer.decode([int(i)]) for i in ids]


def encode_prompt(model: TransformerBridge, prompt: str, *, chat: bool = True) -> list[int]:
    """Token ids of the prompt, in the chat template's user turn when `chat` applies.

    Args:
        model: the model whose tokenizer to use.
        prompt: the prompt text (must not be empty).
        chat: use the tokenizer's chat template (with the assistant header appended) when
            it has one; tokenizers without a template encode the raw prompt.

    Returns:
        The prompt's token ids (with the tokenizer's BOS when it adds one).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError(
            "the prompt is empty",
            "pass the question or task text the model should answer",
        )
    tokenizer = _tokenizer(model)
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def eos_token_ids(tokenizer: Any, hf_model: Any = None) -> list[int]:
    """The ids that end a response: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(hf_model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return sorted(ids)


@torch.no_grad()
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
) -> list[list[int]]:
    """Sample `num_generations` completions for each prompt.

    Uses ``generate`` (KV cache) of the plain Hugging Face model `workbench.models.sampler`
    returns, never a model TransformerLens has wrapped, so no hooks fire; and the global
    torch RNG: seed it (e.g. under `torch.random.fork_rng`) for reproducibility.

    Args:
        model: a bridge from `wb.load_model` (its `sampler` generates) or a plain
            Hugging Face causal LM (then pass `tokenizer`).
        prompt_ids: token ids of each prompt.
        num_generations: completions per prompt.
        max_new_tokens: length cap.
        temperature, top_p: sampling settings (ignored when `greedy`).
        greedy: greedy decoding.
        batch_limit: most sequences generated in one call.
        tokenizer: the tokenizer (default: ``model.tokenizer``).

    Returns:
        ``len(prompt_ids) * num_generations`` token-id lists, prompt-major (the completions
        of prompt 0 first), each ending at its first EOS (included) or at the cap.
    """
    hf = sampler(model)
    tokenizer = tokenizer if tokenizer is not None else _tokenizer(model)
    device = next(hf.parameters()).device
    eos = eos_token_ids(tokenizer, hf)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    rows: list[tuple[int, Sequence[int]]] = [
        (i, p) for i, p in enumerate(prompt_ids) for _ in range(num_generations)
    ]
    by_len: dict[int, list[int]] = defaultdict(list)
    for r, (_, p) in enumerate(rows):
        by_len[len(p)].append(r)
    out: list[list[int]] = [[] for _ in rows]
    kwargs: dict[str, Any] = {"do_sample": not greedy}
    if not greedy:
        kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    was_training = hf.training
    hf.eval()
    try:
        for length in sorted(by_len):
            members = by_len[length]
            for start in range(0, len(members), batch_limit):
                chunk = members[start : start + batch_limit]
                ids = torch.tensor([list(rows[r][1]) for r in chunk], device=device)
                gen = hf.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    eos_token_id=eos or None,
                    pad_token_id=pad,
                    **kwargs,
                )[:, length:].cpu()
                for r, seq in zip(chunk, gen.tolist(), strict=True):
                    cut = next((j + 1 for j, t in enumerate(seq) if t in eos), len(seq))
                    out[r] = seq[:cut]
    finally:
        hf.train(was_training)
    return out


@torch.no_grad()
def generate(
    model: TransformerBridge,
    prompt: str,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    chat: bool = True,
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
        max_new_tokens: at most this many response tokens.
        temperature: sampling temperature; 0 means greedy decoding.
        top_p: nucleus sampling mass in (0, 1].
        seed: RNG seed.
        chat: apply the chat template.

    Returns:
        A `Trace` with ``prompt_len`` at the first generated token.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise WorkbenchError(
            f"max_new_tokens must be a positive integer, got {max_new_tokens!r}",
            "pass e.g. max_new_tokens=128",
        )
    if not (isinstance(temperature, int | float) and temperature >= 0):
        raise WorkbenchError(
            f"temperature must be >= 0, got {temperature!r}", "pass 0 for greedy or e.g. 0.7"
        )
    if not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise WorkbenchError(f"top_p must be in (0, 1], got {top_p!r}", "pass e.g. top_p=0.95")
    tokenizer = _tokenizer(model)
    prompt_ids = encode_prompt(model, prompt, chat=chat)
    _check_context(
        model,
        len(prompt_ids) + max_new_tokens,
        what=f"a {len(prompt_ids)}-token prompt plus max_new_tokens={max_new_tokens}",
    )
    device = next(sampler(model).parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        completion = sample_completions(
            model,
            [prompt_ids],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            greedy=temperature == 0,
        )[0]
    if not completion:
        raise WorkbenchError(  # pragma: no cover - generate always emits one token
            "the model generated no tokens", "raise max_new_tokens"
        )
    new = torch.tensor(completion, dtype=torch.long)
    ids = torch.cat([torch.tensor(prompt_ids, dtype=torch.long), new.long()])
    return Trace(
        ids=ids,
        tokens=_token_strings(tokenizer, ids),
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
            "chat": chat,
        },
    )


def degeneracy(ids: Sequence[int] | torch.Tensor) -> dict[str, float]:
    """How repetitive a token sequence is.

    Returns:
        ``{"n": length, "distinct_share": distinct tokens / length, "longest_run": the
        longest run of one token repeated back to back}``. A coherent answer of SmolLM2
        to the demo problem (112 tokens) has a distinct share of 0.34 and runs of 1; a
        sampler that ignores its KV cache produced ``1-----...``: 2 distinct tokens in 160.
    """
    seq = [int(i) for i in ids]
    longest = run = 0
    for i, t in enumerate(seq):
        run = run + 1 if i and t == seq[i - 1] else 1
        longest = max(longest, run)
    return {
        "n": len(seq),
        "distinct_share": len(set(seq)) / len(seq) if seq else 1.0,
        "longest_run": longest,
    }


def check_not_degenerate(
    trace: Trace, *, min_tokens: int = 16, min_distinct: float = 0.15, max_run: int = 12
) -> None:
    """Raise a `WorkbenchError` when a trace's response looks like a broken sampler's output.

    A response of at least `min_tokens` tokens is degenerate when fewer than
    `min_distinct` of its tokens are distinct, or one token repeats more than `max_run`
    times in a row (see `degeneracy`). The demo and the notebooks call this so that a
    broken sampler fails loudly instead of being analysed as if it were reasoning.
    """
    stats = degeneracy(trace.response_ids)
    if stats["n"] < min_tokens:
        return
    if stats["distinct_share"] < min_distinct or stats["longest_run"] > max_run:
        raise WorkbenchError(
            f"the model's answer is degenerate ({stats['n']} tokens, "
            f"{stats['distinct_share']:.0%} distinct, a token repeated "
            f"{stats['longest_run']} times in a row): {trace.text[:60]!r}",
            "the sampler is probably broken by an untested dependency version: reinstall "
            "the locked environment (`make clean-venv && make demo`)",
        )
