"""The `Trace` record: prompt + response token ids with the exact boundary between them,
saved and loaded as JSON, or built from text written elsewhere (`Trace.from_text`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Int

from .. import _validate
from .._io import as_path, atomic_write_json, non_finite
from ..errors import WorkbenchError
from ..models import model_name
from .tokens import (
    applies_chat_template,
    check_context,
    check_template_kwargs,
    encode_prompt,
    model_tokenizer,
    template_meta,
    token_strings,
    warn_unknown,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["Trace", "check_trace", "check_traces"]

#: The fix for a value that should have been a trace.
TRACE_FIX = "pass a trace from wb.generate or wb.Trace.from_text"


def _is_int(value: Any) -> bool:
    """Whether a JSON value is an integer (``true`` and ``3.0`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def _first_non_str(tokens: Any) -> Any:
    """The first entry of a list or tuple that is not a string, else None."""
    if isinstance(tokens, list | tuple):
        return next((t for t in tokens if not isinstance(t, str)), None)
    return None


def _check_meta(meta: dict[Any, Any]) -> None:
    try:
        keys = _non_string_keys(meta, "meta")
    except RecursionError:  # a dict or list that holds itself
        raise WorkbenchError(
            "Trace.meta holds itself (or is nested too deeply), which JSON cannot store",
            "store plain values in Trace.meta: strings, numbers, lists and dicts of them",
        ) from None
    if keys:  # JSON keys are strings: {1: "a"} came back as {"1": "a"}, {True: 1} as {"true": 1}
        raise WorkbenchError(
            f"Trace.meta has key(s) that are not strings ({', '.join(keys[:3])}), which a "
            "saved trace would read back as other keys",
            "use string keys in Trace.meta, e.g. {'seed': 0}",
        )
    found = non_finite(meta, "meta")
    if found is not None:
        raise WorkbenchError(
            f"Trace.{found} is a NaN or infinite number, which JSON cannot store (the saved "
            "trace would not open in JupyterLab or a browser)",
            "store a finite number, None, or a string such as 'nan' there",
        )


@no_type_check  # checks its argument itself, so the user's value reaches the message
def check_trace(value: Any, fix: str = TRACE_FIX) -> Trace:
    """`value` if it is a `Trace`, else a `WorkbenchError` naming its type, with `fix`."""
    if not isinstance(value, Trace):
        raise WorkbenchError(f"expected a wb.Trace, got {type(value).__name__}", fix)
    return value


@no_type_check  # checks its arguments itself, so the user's value reaches the message
def check_traces(
    values: Any,
    fix: str = "pass traces from wb.generate or wb.Trace.from_text",
    *,
    caller: str,
    usage: str | None = None,
    allow_empty: bool = False,
) -> list[Trace]:
    """`values` as a list of traces, or a `WorkbenchError`.

    Refused: one trace, None, a string or anything else that is not a sequence ("`caller`:
    traces must be a list of wb.Trace", with `usage` as the fix, by default ``pass a list
    of traces, e.g. caller(model, [trace])``); an empty sequence unless `allow_empty`
    ("`caller` got no traces"); an entry that is not a trace ("traces[i] is a X, not a
    wb.Trace", with `fix`).
    """
    if isinstance(values, Trace | str | bytes) or not isinstance(values, Iterable):
        raise WorkbenchError(
            f"{caller}: traces must be a list of wb.Trace, got a {type(values).__name__}",
            usage or f"pass a list of traces, e.g. {caller}(model, [trace])",
        )
    out = list(values)
    if not out and not allow_empty:
        raise WorkbenchError(f"{caller} got no traces", "pass at least one wb.Trace")
    for i, value in enumerate(out):
        if not isinstance(value, Trace):
            raise WorkbenchError(f"traces[{i}] is a {type(value).__name__}, not a wb.Trace", fix)
    return out


def _non_string_keys(value: Any, where: str) -> list[str]:
    """Where `value` (nested dicts and lists) holds a dict key that is not a string."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                found.append(f"{where}[{k!r}]")
            found += _non_string_keys(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found += _non_string_keys(v, f"{where}[{i}]")
    return found


TRACE_FORMAT = "workbench-trace/1"  # written by Trace.to_dict; from_dict refuses others
_TRACE_FIELDS = frozenset({"format", "ids", "tokens", "prompt_len", "text", "prompt", "meta"})


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
        # complex ids lost their imaginary part with only torch's warning
        if (
            not isinstance(self.ids, torch.Tensor)
            or self.ids.is_floating_point()
            or self.ids.is_complex()
        ):
            raise WorkbenchError(
                f"Trace.ids must be a 1-D integer torch.Tensor, got {type(self.ids).__name__}"
                + (f" of {self.ids.dtype}" if isinstance(self.ids, torch.Tensor) else ""),
                "pass torch.tensor(ids, dtype=torch.long), or build traces with wb.generate "
                "or wb.Trace.from_text",
            )
        if self.ids.dtype == torch.bool:
            raise WorkbenchError(
                "Trace.ids must be integer token ids, got a torch.bool tensor",
                "pass torch.tensor(ids, dtype=torch.long)",
            )
        if self.ids.ndim != 1:
            raise WorkbenchError(
                f"Trace.ids must be 1-D [pos], got shape {tuple(self.ids.shape)}",
                "pass one sequence; for a batch build one Trace per row",
            )
        # int64 on the CPU, as documented: int32 ids came back from Trace.load as int64, and
        # a CUDA tensor would reach the tokenizer and the saved file as such.
        object.__setattr__(self, "ids", self.ids.detach().to("cpu", torch.long))
        tokens = self.tokens
        if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) for t in tokens):
            # ints were written to disk as tokens, and Trace.load then refused the file
            got = (
                f"a {type(tokens).__name__} holding {_first_non_str(tokens)!r}"
                if isinstance(tokens, list | tuple)
                else type(tokens).__name__
            )
            raise WorkbenchError(
                f"Trace.tokens must be a list of strings, got {got}",
                "pass the string of each token: wb.trace.token_strings(tokenizer, ids)",
            )
        object.__setattr__(self, "tokens", list(tokens))
        if not isinstance(self.meta, dict):
            raise WorkbenchError(
                f"Trace.meta must be a dict, got {type(self.meta).__name__}",
                "pass a dict of details (or leave meta out)",
            )
        _check_meta(self.meta)
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
        if not _validate.is_index(self.prompt_len):
            raise WorkbenchError(
                f"Trace.prompt_len must be an integer, got {self.prompt_len!r}",
                "pass the number of prompt tokens, e.g. prompt_len=len(prompt_ids)",
            )
        # NumPy and torch integer scalars are integers too, stored as an int
        prompt_len = _validate.as_index(self.prompt_len)
        object.__setattr__(self, "prompt_len", prompt_len)
        if not 0 < prompt_len <= len(self.ids):
            raise WorkbenchError(
                f"Trace.prompt_len={prompt_len} is outside 1..{len(self.ids)}",
                "the prompt must hold at least one token and end inside the sequence",
            )
        for name in ("text", "prompt"):
            if not isinstance(getattr(self, name), str):
                raise WorkbenchError(
                    f"Trace.{name} must be a string, got {type(getattr(self, name)).__name__}",
                    f"pass the {name} as text ('' when there is none)",
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
        """A JSON-ready dict (ids as a list), with the file format's version under
        ``"format"``; `Trace.from_dict` inverts it."""
        return {
            "format": TRACE_FORMAT,
            "ids": [int(i) for i in self.ids],
            "tokens": list(self.tokens),
            "prompt_len": self.prompt_len,
            "text": self.text,
            "prompt": self.prompt,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        """Rebuild a trace from `to_dict` output.

        Every field must have the type `to_dict` writes (ids a list of integers, tokens a
        list of strings, prompt_len an integer, text and prompt strings, meta a dict), so
        a damaged or hand-edited file is refused instead of being read as another trace
        (``3.7`` truncated to 3, ``true`` read as 1).
        """
        fix = "pass a dict written by Trace.to_dict (or a file written by Trace.save)"
        if not isinstance(d, dict):
            raise WorkbenchError(f"not a saved trace: expected a dict, got {type(d).__name__}", fix)
        missing = [k for k in ("ids", "tokens", "prompt_len") if k not in d]
        if missing:
            raise WorkbenchError(f"not a saved trace: missing field(s) {missing}", fix)
        # Files from before the format field have none; a later format may mean something
        # else by the same fields, and a field this version does not know would be dropped.
        version = d.get("format", TRACE_FORMAT)
        if version != TRACE_FORMAT:
            raise WorkbenchError(
                f"the saved trace has format {version!r}; this workbench reads {TRACE_FORMAT!r}",
                "read it with the workbench version that wrote it (upgrade this one)",
            )
        unknown = sorted(str(k) for k in d if k not in _TRACE_FIELDS)
        if unknown:
            raise WorkbenchError(
                f"not a saved trace: unknown field(s) {unknown}, which would be dropped",
                "keep extra details in the trace's meta dict (Trace(..., meta={...}))",
            )
        fields = {"text": "", "prompt": "", "meta": {}, **d}
        tokens = fields["tokens"]
        checks = {
            "ids": _int_list(fields["ids"]),
            "tokens": isinstance(tokens, list) and all(isinstance(t, str) for t in tokens),
            "prompt_len": _is_int(fields["prompt_len"]),
            "text": isinstance(fields["text"], str),
            "prompt": isinstance(fields["prompt"], str),
            "meta": isinstance(fields["meta"], dict),
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise WorkbenchError(f"not a saved trace: malformed field(s) {wrong}", fix)
        if any(not 0 <= i < 2**63 for i in fields["ids"]):
            raise WorkbenchError("not a saved trace: a token id is outside 0..2**63-1", fix)
        return cls(
            ids=torch.tensor(fields["ids"], dtype=torch.long),
            tokens=list(fields["tokens"]),
            prompt_len=fields["prompt_len"],
            text=fields["text"],
            prompt=fields["prompt"],
            meta=dict(fields["meta"]),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace as JSON, atomically (``~`` is the home folder).

        Args:
            path: the file to write (e.g. ``"trace.json"``); `Trace.load` reads it back.

        Returns:
            The path written, with ``~`` expanded.

        Raises:
            WorkbenchError: `meta` holds a value JSON cannot store (NaN and infinities
                included: they would be written as the non-standard ``NaN``), or `path`
                cannot be written (a folder, under a file, or not writable); nothing is
                written.
        """
        target = as_path(path, "Trace.save's path", "file", "trace.json")
        _check_meta(self.meta)  # meta is a dict: it may have changed since __init__
        # "out/" names a folder, but Path drops the slash: a file named "out" was written
        if target.is_dir() or os.fspath(path).endswith(("/", os.sep)):
            raise WorkbenchError(
                f"cannot save the trace to {os.fspath(path)}: "
                + ("it is a folder" if target.is_dir() else "the trailing slash names a folder"),
                f"pass a file path, e.g. {target / 'trace.json'}",
            )
        # a path under a file failed with the bare "File exists" of the folder's creation
        base = target.parent.absolute()
        while not base.exists() and base != base.parent:
            base = base.parent
        if base.exists() and not base.is_dir():
            raise WorkbenchError(
                f"cannot save the trace to {target}: {base} is a file, not a folder",
                "pass a file path in a folder (not under a file)",
            )
        try:
            return atomic_write_json(target, self.to_dict())
        except (TypeError, ValueError) as e:  # json.dumps, before anything is written
            raise WorkbenchError(
                f"cannot save the trace: its meta holds a value JSON cannot store ({e})",
                "keep plain numbers, strings, lists and dicts in Trace.meta (e.g. int(seed) "
                "or tensor.tolist())",
            ) from None
        except OSError as e:
            raise WorkbenchError(
                f"cannot save the trace to {target}: {e.strerror or e}",
                "pass a file path in a folder you can write to",
            ) from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace written by `save` (``~`` is the home folder).

        Args:
            path: a file written by `Trace.save`.

        Returns:
            The `Trace` as saved (JSON keeps no tuples: those in `meta` come back as lists).

        Raises:
            WorkbenchError: the file is missing or unreadable, or is not a saved trace.
        """
        source = as_path(path, "Trace.load's path", "file", "trace.json")
        try:
            return cls.from_dict(json.loads(source.read_text(encoding="utf-8")))
        except WorkbenchError as e:  # a file whose fields disagree: name the file too
            raise WorkbenchError(
                f"cannot read a trace from {source}: {e.problem}",
                "pass a file written by Trace.save (this one was changed or cut short)",
            ) from None
        except RecursionError:  # JSON nested deeper than Python's stack (a damaged file)
            raise WorkbenchError(
                f"cannot read a trace from {source}: its JSON is nested too deeply to be a "
                "saved trace",
                "pass a file written by Trace.save (this one was changed or damaged)",
            ) from None
        except (OSError, ValueError) as e:
            raise WorkbenchError(
                f"cannot read a trace from {source}: {e}", "pass a file written by Trace.save"
            ) from e

    @classmethod
    @no_type_check  # checks its own arguments, with messages that name the fix
    def from_text(
        cls,
        model: TransformerBridge,
        prompt: str,
        response: str,
        *,
        chat: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> Trace:
        """Build a trace from a prompt and a response written elsewhere, without generating.

        Args:
            model: the model whose tokenizer (and chat template) to use.
            prompt: the user's prompt.
            response: the model's (or anyone's) response text.
            chat: wrap the prompt in the chat template when the tokenizer has one.
            chat_template_kwargs: further template variables, as for `wb.generate` (give
                the ones the response was generated with).

        Returns:
            A `Trace` whose response tokens are ``tokenizer(response)`` without special
            tokens.
        """
        tokenizer = model_tokenizer(model)
        if not isinstance(response, str):
            raise WorkbenchError(
                f"the response must be text, got {type(response).__name__}",
                "pass the response text as a str",
            )
        if not response.strip():
            raise WorkbenchError(
                "the response is empty: there is nothing to analyse",
                "pass the response text the model produced (or use wb.generate)",
            )
        template_kwargs = check_template_kwargs(chat_template_kwargs)
        prompt_ids = encode_prompt(model, prompt, chat=chat, chat_template_kwargs=template_kwargs)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        warn_unknown(tokenizer, response, response_ids, "response")
        ids = torch.tensor(list(prompt_ids) + list(response_ids), dtype=torch.long)
        check_context(model, len(ids), what="the trace", fix="shorten the prompt or the response")
        return cls(
            ids=ids,
            tokens=token_strings(tokenizer, ids),
            prompt_len=len(prompt_ids),
            text=response,
            prompt=prompt,
            meta={
                "model": model_name(model),
                "source": "text",
                "chat": applies_chat_template(model, chat),
                **template_meta(model, chat, template_kwargs),
            },
        )
