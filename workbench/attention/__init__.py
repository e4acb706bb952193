"""The attention metric engine: head span, WAAD, FAI, rhythm sets and credit weights.

See `analysis` for the entry points (`analyze`, `analyze_many`, `Analysis`), `metrics`
for the functions on raw patterns, `engine` for the streaming forward pass, `reference`
for the slow reference the tests compare against, and `stats` for the rhythm statistics
of the paper's Table 2.
"""

from .analysis import Analysis, HeadClasses, analyze, analyze_many, classify_heads, gamma_many
from .credit import STRATEGIES
from .layers import middle_layers, resolve_layers
from .metrics import HeadStats, delta, fai, head_span, receiver_kurtosis, waad
from .rhythm import top_q
from .stats import PeakDetector, rhythm_statistics

__all__ = [
    "STRATEGIES",
    "Analysis",
    "HeadClasses",
    "HeadStats",
    "PeakDetector",
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
