"""The attention metric engine: head span, WAAD, FAI, rhythm sets and credit weights.

See `run` for the entry points (`analyze`, `analyze_many`, `gamma_many`), `analysis` for
the immutable `Analysis`, `params` for the parameter records (`RhythmParams`,
`CreditParams`), `heads` for the head classes, `metrics` for the functions on raw patterns, `engine` for the streaming forward pass, `reference`
for the slow reference the tests compare against, and `stats` for the rhythm statistics
of the paper's Table 2.
"""

from .analysis import Analysis
from .credit import STRATEGIES
from .heads import HeadClasses, classify_heads
from .layers import middle_layers, resolve_layers
from .metrics import FaiRowsWarning, HeadStats, delta, fai, head_span, receiver_kurtosis, waad
from .params import CreditParams, RhythmParams
from .rhythm import top_q
from .run import analyze, analyze_many, gamma_many
from .stats import PeakDetector, rhythm_statistics

__all__ = [
    "STRATEGIES",
    "Analysis",
    "CreditParams",
    "FaiRowsWarning",
    "HeadClasses",
    "HeadStats",
    "PeakDetector",
    "RhythmParams",
    "analyze",
    "analyze_many",
    "classify_heads",
    "delta",
    "fai",
    "gamma_many",
    "head_span",
    "middle_layers",
    "receiver_kurtosis",
    "resolve_layers",
    "rhythm_statistics",
    "top_q",
    "waad",
]
