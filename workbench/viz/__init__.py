"""See the rhythm: altair charts, ipywidgets panels and offline export.

import workbench as wb
wb.viz.enable_offline()                   # draw altair charts with no network
a = wb.analyze(model, trace)
wb.viz.rhythm_curves(a)                   # WAAD / FAI, preplan and anchors marked
wb.viz.text_view(a, "fai")                # the response coloured by a metric (Fig. 9)
wb.viz.attention_map(wb.viz.attention_maps(model, trace), "global", analysis=a)
wb.viz.head_map(a)
wb.viz.save(chart, "rhythm.png")          # .png .svg .html (self-contained) .json
wb.workbench(model)                       # the panels as one app
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
from .panels import (
    HeadPicker,
    ModelPanel,
    Panel,
    RhythmPanel,
    Workbench,
    chart_widget,
    enable_offline,
    workbench,
)

__all__ = [
    "METRICS",
    "AttentionMaps",
    "HeadPicker",
    "ModelPanel",
    "Panel",
    "RhythmPanel",
    "Workbench",
    "attention_map",
    "attention_maps",
    "chart_widget",
    "enable_offline",
    "head_map",
    "response_frame",
    "rhythm_curves",
    "save",
    "style",
    "text_view",
    "to_html",
    "workbench",
]
