"""See the rhythm: altair charts and offline export (the panels are in `workbench.ui`).

import workbench as wb
wb.viz.enable_offline()                   # draw altair charts with no network
a = wb.analyze(model, trace)
wb.viz.rhythm_curves(a)                   # WAAD / FAI, preplan and anchors marked
wb.viz.text_view(a, "fai")                # the response coloured by a metric (Fig. 9)
wb.viz.attention_map(wb.viz.attention_maps(model, trace), "global", analysis=a)
wb.viz.head_map(a)
wb.viz.save(chart, "rhythm.png")          # .png .svg .html (self-contained) .json
"""

from . import style
from .charts import (
    METRICS,
    attention_map,
    head_map,
    response_frame,
    rhythm_curves,
    text_view,
)
from .export import save, to_html
from .maps import AttentionMaps, attention_maps
from .offline import enable_offline
from .training import progress_chart

__all__ = [
    "METRICS",
    "AttentionMaps",
    "attention_map",
    "attention_maps",
    "enable_offline",
    "head_map",
    "progress_chart",
    "response_frame",
    "rhythm_curves",
    "save",
    "style",
    "text_view",
    "to_html",
]
