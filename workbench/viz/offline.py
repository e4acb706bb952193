"""Draw altair charts in a notebook with no network: an explicit, session-wide switch."""

from __future__ import annotations

from typing import Any

import altair as alt

from . import style

__all__ = ["RENDERER", "enable_offline"]

#: The altair renderer `enable_offline` turns on.
RENDERER = "workbench"

#: Top-level chart kinds by the key that marks their spec (a unit ``Chart`` has none).
_KINDS = (
    ("vconcat", alt.VConcatChart),
    ("hconcat", alt.HConcatChart),
    ("concat", alt.ConcatChart),
    ("layer", alt.LayerChart),
    ("facet", alt.FacetChart),
    ("repeat", alt.RepeatChart),
)


def _widget_renderer(spec: dict, **metadata: Any) -> Any:
    """altair's ``jupyter`` renderer (an offline ``alt.JupyterChart`` widget) without its
    second schema validation.

    altair's renderer rebuilds the chart from the spec that ``_repr_mimebundle_`` has just
    validated with ``Chart.from_dict``, which validates the whole spec, data included,
    against each top-level chart kind until one fits (five times for a ``vconcat``): a
    2,000-token `rhythm_curves` took 6-10 s to appear, `text_view` 5-8 s (a 5,000-token
    one 11 s and 16 s). Here the chart is rebuilt unvalidated as the kind its spec names
    (its data set back as the plain lists they are) and the widget validates it once
    when it serialises it, as before: the widget's spec is the same, shown in about 2 s.
    Anything unexpected falls back to altair's own renderer."""
    try:
        kind = next((cls for key, cls in _KINDS if key in spec), alt.Chart)
        chart = kind.from_dict({k: v for k, v in spec.items() if k != "datasets"}, validate=False)
        if "datasets" in spec:
            chart.datasets = spec["datasets"]
        alt.JupyterChart.enable_offline(offline=True)
        widget = alt.JupyterChart(chart=chart, embed_options=metadata.get("embed_options"))
    except Exception:
        from altair.vegalite.v6.display import jupyter_renderer

        return jupyter_renderer(spec, **{**metadata, "offline": True})
    return widget._repr_mimebundle_()


def enable_offline() -> None:
    """Draw this notebook's altair charts without a network, in the workbench look.

    Inlines Vega into ``alt.JupyterChart`` widgets, enables the ``"workbench"`` renderer
    (altair's ``jupyter`` renderer offline, without its second validation of the data, so
    a chart of a 2,000-token trace appears in about 2 s instead of 7-10 s; altair 6's
    default renderer loads Vega from a CDN) and turns on the workbench theme, for the whole
    session: call it once at the top of a notebook. The panels do not need it (they theme
    their own charts). Idempotent.
    """
    alt.JupyterChart.enable_offline()
    alt.renderers.register(RENDERER, _widget_renderer)
    alt.renderers.enable(RENDERER)
    style.enable_theme()
