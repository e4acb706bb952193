"""The ipywidgets panels: every interactive part of the workbench, and only that.

    import workbench as wb
    app = wb.workbench(model)              # model, heads and rhythm panels as one app
    app.add_tab(wb.ui.AblationPanel(model))
    app.add_tab(wb.ui.RLPanel())           # GRPO runs in their own process, watched live

The layers below (`workbench.attention`, `ablation`, `rl`, `viz`) never import this
package (an import-linter contract checks it in CI).
"""

from .ablation import AblationPanel
from .app import Workbench, workbench
from .heads import HeadPicker
from .model import ModelPanel
from .panel import Panel, chart_widget
from .rhythm import FAI_HI_CHOICES, RhythmPanel
from .rl import RLPanel, RunJob

__all__ = [
    "FAI_HI_CHOICES",
    "AblationPanel",
    "HeadPicker",
    "ModelPanel",
    "Panel",
    "RLPanel",
    "RhythmPanel",
    "RunJob",
    "Workbench",
    "chart_widget",
    "workbench",
]
