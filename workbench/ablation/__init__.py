"""Ablations: do anchor and preplan tokens matter more than chance?

Interventions are TransformerLens hooks on the bridge (`Knockout`, `ResidAblation`,
composed with `intervene` / `fwd_hooks`); `target_sets` builds the rhythm's sets with
matched controls (same size, same eligible pool); `measure` reads the effects of one
intervention on one trace (KL of later predictions, answer log-prob, greedy answer);
`run_ablations` runs a batch into a tidy DataFrame and `summarize` puts Student-t
intervals over traces on "set minus random". `perturbation_test` is the paper's forced-token test.

    import workbench as wb
    a = wb.analyze(model, trace)
    df = wb.run_ablations(model, [trace], analyses=[a], size=4)
    wb.summarize(df, "kl_mean")
"""

from ..intervals import bootstrap_ci
from .charts import effect_chart, kl_curve_chart
from .effects import (
    answer_logprob,
    answer_span,
    greedy_continue,
    kl_per_position,
    logits_of,
    measure,
)
from .interventions import (
    Intervention,
    Knockout,
    ResidAblation,
    default_resid_layer,
    fwd_hooks,
    intervene,
    resid_cache,
    resid_mean,
)
from .perturb import content_words, jaccard, perturb_position, perturbation_test
from .runner import (
    CONTINUATION_METRICS,
    INTERVENTIONS,
    METRICS,
    per_position,
    run_ablations,
    summarize,
)
from .targets import CONTROLS, FAMILIES, TargetSet, target_sets

__all__ = [
    "CONTINUATION_METRICS",
    "CONTROLS",
    "FAMILIES",
    "INTERVENTIONS",
    "METRICS",
    "Intervention",
    "Knockout",
    "ResidAblation",
    "TargetSet",
    "answer_logprob",
    "answer_span",
    "bootstrap_ci",
    "content_words",
    "default_resid_layer",
    "effect_chart",
    "fwd_hooks",
    "greedy_continue",
    "intervene",
    "jaccard",
    "kl_curve_chart",
    "kl_per_position",
    "logits_of",
    "measure",
    "per_position",
    "perturb_position",
    "perturbation_test",
    "resid_cache",
    "resid_mean",
    "run_ablations",
    "summarize",
    "target_sets",
]
