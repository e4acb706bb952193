"""One shared look for every chart and panel of the workbench.

Charts take their colours and sizes from here, so a chart looks the same in a panel, in a
notebook cell and in an exported file (the panels' frames, in the same fonts, are in
`workbench.ui.layout`).

The ``"workbench"`` look (fonts, grid, axis and title styling) comes in three scopes:

- `themed(chart)`: a copy of one chart that carries the look in its own ``config``; no
  global state changes, and the chart looks the same wherever it is shown or saved.
- ``with use_theme():``: the altair theme is active inside the block only.
- `enable_theme()` / `disable_theme()`: turn the altair theme on / back to altair's default
  for the whole session (an explicit opt-in for a notebook's stand-alone charts).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import Any, TypeVar

import altair as alt

__all__ = [
    "ANCHOR",
    "BOTH",
    "COLORS",
    "FONT",
    "GLOBAL",
    "LOCAL",
    "MONO",
    "PREPLAN",
    "disable_theme",
    "enable_theme",
    "theme_config",
    "themed",
    "use_theme",
]

_Chart = TypeVar("_Chart", bound=alt.TopLevelMixin)

#: Local heads, WAAD and everything "preplan" side: warm; global heads, FAI, anchors: cool.
LOCAL = "#d95f02"
GLOBAL = "#1b6ca8"
#: A head in both classes (one head analysed, or quantiles that add up to more than 1).
BOTH = "#7b3294"
PREPLAN = "#e6550d"
ANCHOR = "#08519c"
ENTROPY = "#6a51a3"
MUTED = "#9e9e9e"
MISSING = "#eeeeee"
COLORS = {
    "local": LOCAL,
    "global": GLOBAL,
    "local and global": BOTH,
    "preplan": PREPLAN,
    "anchor": ANCHOR,
    "waad": LOCAL,
    "fai": GLOBAL,
    "delta": LOCAL,
    "entropy": ENTROPY,
    "middle": MUTED,
    "missing": MISSING,
}
#: Sequential colour schemes: attention maps and metric colouring of text.
MAP_SCHEME = "greys"
METRIC_SCHEME = "yelloworangered"
SPAN_SCHEME = "viridis"
FONT = "Helvetica, Arial, sans-serif"
MONO = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace"
#: Default chart width in pixels (fits a JupyterLab output area next to nothing else).
WIDTH = 640
THEME = "workbench"

_theme_registered = False

_THEME_CONFIG: dict[str, Any] = {
    "font": FONT,
    "view": {"stroke": None, "continuousWidth": WIDTH, "continuousHeight": 200},
    "axis": {
        "labelFontSize": 11,
        "titleFontSize": 12,
        "titleFontWeight": "normal",
        "gridColor": "#ececec",
        "domainColor": "#888888",
        "tickColor": "#888888",
    },
    "legend": {"labelFontSize": 11, "titleFontSize": 11, "orient": "right"},
    "title": {"fontSize": 13, "anchor": "start", "fontWeight": "bold"},
    "header": {"labelFontSize": 12, "titleFontSize": 12},
}


def theme_config() -> dict[str, Any]:
    """The workbench look as a Vega-Lite ``config`` dict (a fresh copy)."""
    return deepcopy(_THEME_CONFIG)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `top`, nested dicts merged (as altair merges a theme under a spec)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def themed(chart: _Chart) -> _Chart:
    """A copy of `chart` that carries the workbench look in its own top-level ``config``.

    Settings the chart already has win over the theme's, exactly as when the altair theme
    is enabled, so ``themed(c).to_dict()`` equals ``c.to_dict()`` under `use_theme`. No
    global altair state is read or changed.

    Args:
        chart: a top-level altair chart (single, layered or concatenated).

    Returns:
        The styled copy; `chart` itself is unchanged.
    """
    own = chart.config
    own_dict = {} if own is alt.Undefined else own.to_dict(validate=False)
    out = chart.copy(deep=False)
    out.config = alt.Config.from_dict(_merge(theme_config(), own_dict))
    return out


def _theme() -> alt.theme.ThemeConfig:
    return alt.theme.ThemeConfig({"config": theme_config()})


def _register() -> None:
    """Add the ``"workbench"`` theme to altair's registry once (without enabling it)."""
    global _theme_registered
    if not _theme_registered:
        alt.theme.register(THEME, enable=False)(_theme)
        _theme_registered = True


@contextmanager
def use_theme() -> Iterator[None]:
    """Enable the ``"workbench"`` altair theme inside the block only; the theme that was
    active before is restored on exit (also when the block raises)."""
    _register()
    with alt.theme.enable(THEME):
        yield


def enable_theme() -> None:
    """Register (once) and enable the ``"workbench"`` altair theme for the whole session.

    This is a global switch: every chart serialised afterwards gets the look, until
    `disable_theme`. Use `themed` (one chart) or `use_theme` (one block) to style without it.
    """
    _register()
    alt.theme.enable(THEME)


def disable_theme() -> None:
    """Go back to altair's default theme."""
    alt.theme.enable("default")


# -- ipywidgets layout ---------------------------------------------------------------------
