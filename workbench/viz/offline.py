"""Draw altair charts in a notebook with no network: an explicit, session-wide switch."""

from __future__ import annotations

import altair as alt

from . import style

__all__ = ["enable_offline"]


def enable_offline() -> None:
    """Draw this notebook's altair charts without a network, in the workbench look.

    Inlines Vega into ``alt.JupyterChart`` widgets, enables altair's ``jupyter`` renderer
    offline (altair 6's default renderer loads Vega from a CDN) and turns on the workbench
    theme, for the whole session: call it once at the top of a notebook. The panels do not
    need it (they theme their own charts). Idempotent.
    """
    alt.JupyterChart.enable_offline()
    alt.renderers.enable("jupyter", offline=True)
    style.enable_theme()
