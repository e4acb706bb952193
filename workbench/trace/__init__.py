"""A reasoning trace: prompt + response token ids with the boundary between them.

Everything downstream (metrics, charts, ablations, RL credit) consumes a `Trace`. It is
built either by sampling from a model (`generate`) or from text pasted from elsewhere
(`Trace.from_text`). Prompt and response are tokenised separately and concatenated, so the
boundary `prompt_len` is exact (as in TRL, where completion ids follow prompt ids).

Instruct models get their chat template (``chat=True``): the prompt becomes a user turn plus
the assistant header, and the response is the assistant's text. Tokenizers without a chat
template (such as the tiny reasoner's) use the raw prompt.

The package holds the record (`record`), prompt encoding (`tokens`) and sampling
(`sampling`); every name is importable from ``workbench.trace``.
"""

from .record import Trace, check_trace, check_traces
from .sampling import check_not_degenerate, degeneracy, generate, sample_completions
from .tokens import UnknownTokensWarning, encode_prompt, eos_token_ids, token_strings

__all__ = [
    "Trace",
    "UnknownTokensWarning",
    "check_not_degenerate",
    "check_trace",
    "check_traces",
    "degeneracy",
    "encode_prompt",
    "eos_token_ids",
    "generate",
    "sample_completions",
    "token_strings",
]
