"""The `Trace` record: prompt + response token ids with the exact boundary between them,
saved and loaded as JSON, or built from text written elsewhere (`Trace.from_text`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Int

from .._io import atomic_write_json
from ..errors import WorkbenchError
from ..models import model_name
from .tokens import check_context, encode_prompt, model_tokenizer, token_strings

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["Trace"]


# Validated in __post_init__ with messages that name the fix, so the runtime type checker
# the tests install must not pre-empt them.
@no_type_check
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
        if not isinstance(self.ids, torch.Tensor) or self.ids.is_floating_point():
            raise WorkbenchError(
                f"Trace.ids must be a 1-D integer torch.Tensor, got {type(self.ids).__name__}"
                + (f" of {self.ids.dtype}" if isinstance(self.ids, torch.Tensor) else ""),
                "pass torch.tensor(ids, dtype=torch.long), or build traces with wb.generate "
                "or wb.Trace.from_text",
            )
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
        if len(self.ids) and int(self.ids.min()) < 0:
            raise WorkbenchError(
                f"Trace.ids holds a negative token id ({int(self.ids.min())})",
                "token ids are indices into the vocabulary, >= 0",
            )
        if (
            isinstance(self.prompt_len, bool)
            or not isinstance(self.prompt_len, int)
            or not 0 < self.prompt_len <= len(self.ids)
        ):
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
        """Write the trace as JSON, atomically (``~`` is the home folder)."""
        return atomic_write_json(Path(path).expanduser(), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace written by `save` (``~`` is the home folder)."""
        try:
            return cls.from_dict(json.loads(Path(path).expanduser().read_text()))
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
        tokenizer = model_tokenizer(model)
        if not isinstance(response, str) or not response.strip():
            raise WorkbenchError(
                "the response is empty: there is nothing to analyse",
                "pass the response text the model produced (or use wb.generate)",
            )
        prompt_ids = encode_prompt(model, prompt, chat=chat)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor(list(prompt_ids) + list(response_ids), dtype=torch.long)
        check_context(model, len(ids), what="the trace")
        return cls(
            ids=ids,
            tokens=token_strings(tokenizer, ids),
            prompt_len=len(prompt_ids),
            text=response,
            prompt=prompt,
            meta={"model": model_name(model), "source": "text"},
        )
