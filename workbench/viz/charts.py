"""Altair chart builders for the preplan-and-anchor rhythm (each returns an altair chart).

- `attention_map`: a head group's (or one head's) attention over the response rows, the
  sawtooth of local heads and the vertical stripes of global heads (Eq. 9-10).
- `rhythm_curves`: WAAD (local heads) and FAI (global heads) over the response, preplan
  tokens marked on WAAD and anchors on FAI, token text on hover; entropy optionally.
- `text_view`: the response as text, each token coloured by a metric (the paper's
  Figure 9), preplan tokens outlined in orange and anchors in blue.
- `head_map`: every (layer, head) coloured by span, local and global heads outlined.

Every chart embeds its data (altair's 5,000-row limit holds: maps are pooled, curves and
text views raise a `WorkbenchError` naming the ``positions=`` crop above 5,000 tokens).
Render them offline in JupyterLab, and in the HTML nbconvert makes of a saved notebook, with
`workbench.viz.enable_offline` (altair 6's default renderer needs a CDN), or put them in
panels as ``alt.JupyterChart`` widgets.

The builders live in one module per concept (`frame`, `heads`, `curves`, `text`); this
module gathers them under their historical import path.
"""

from .curves import rhythm_curves
from .frame import METRICS, display_token, response_frame
from .heads import attention_map, head_map
from .text import cells, text_view, wrap_tokens

__all__ = [
    "METRICS",
    "attention_map",
    "cells",
    "display_token",
    "head_map",
    "response_frame",
    "rhythm_curves",
    "text_view",
    "wrap_tokens",
]
