"""A self-contained report of one analysed trace: HTML (no CDN) and PNG charts.

`write_report` is what ``workbench demo`` ends with. The HTML page inlines Vega, so it
opens offline in any browser; the files are drawn in a staging folder and moved into
place only once all of them exist, so an earlier report is never left half replaced.
Both the page and ``summary.json`` record the package versions and git commit
(`workbench.provenance`).
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Any, no_type_check

from ._io import (
    WRITABLE_FIX,
    as_path,
    atomic_write_text,
    check_folder,
    json_text,
    make_folder,
    stage_folder,
)
from .errors import WorkbenchError
from .provenance import provenance

__all__ = ["write_report"]


def _summary(trace: Any, analysis: Any) -> dict[str, Any]:
    tokens = analysis.tokens

    def words(positions: list[int]) -> list[str]:
        return [tokens[p] for p in positions]

    return {
        "model": trace.meta.get("model"),
        "prompt_tokens": trace.prompt_len,
        "response_tokens": trace.response_len,
        # The analysed layers themselves (it was a count of the layers with classified heads).
        "layers": [
            int(x) for x in analysis.meta.get("layers") or sorted({h[0] for h in analysis.heads})
        ],
        "local_heads": len(analysis.local_heads),
        "global_heads": len(analysis.global_heads),
        "preplan": analysis.preplan,
        "anchors": analysis.anchors,
        "dominated": analysis.dominated,
        "intro": analysis.intro,
        "preplan_tokens": words(analysis.preplan),
        "anchor_tokens": words(analysis.anchors),
        "settings": {"sink": analysis.meta.get("sink", "keep"), **analysis.params.to_dict()},
        "provenance": provenance(),
    }


def _settings_text(settings: dict[str, Any]) -> str:
    """The analysis settings in words (what the charts above were computed with); shares
    as precise as they were set (``top_q=0.004`` is 0.4%, where ``:.0%`` wrote 0%)."""
    from .intervals import level_label as pct

    sink = (
        "the first token's attention (the sink) removed and each row renormalised"
        if settings["sink"] == "exclude"
        else "the first token's attention kept (the paper's definition)"
    )
    lo, hi = settings["fai_horizon"]
    horizon = f"rows {lo} to {'the end' if hi is None else hi} after the token"
    return (
        f"{sink}; WAAD window {settings['window']}; FAI over {horizon}, defined where at "
        f"least {settings['fai_min_rows']} rows follow; top {pct(settings['top_q'])} of "
        f"tokens as preplan and anchor sets; heads {pct(settings['head_quantiles'][0])} local / "
        f"{pct(settings['head_quantiles'][1])} global by span."
    )


#: Bidirectional controls (embeddings, overrides, isolates): one in a response turned the
#: rest of its line around on the page ("reversed" read "desrever"). Shown as their code.
_BIDI = {c: f"<U+{c:04X}>" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def _text_html(text: str) -> str:
    """Text from the model as HTML: escaped, its bidirectional controls shown as codes."""
    return html.escape(text.translate(_BIDI))


def _provenance_html(prov: dict[str, Any]) -> str:
    """One small line: ``name version`` for each package, then the commit."""
    parts = [
        f"{k} {'not installed' if v is None else v}"
        for k, v in prov.items()
        if k not in ("commit", "dirty")
    ]
    commit = prov.get("commit") or "unknown"
    if prov.get("dirty"):
        commit += " (with uncommitted changes)"
    parts.append(f"commit {commit}")
    return f"<p style='color: #666; font-size: small'>{html.escape(', '.join(parts))}</p>"


def _into_body(page: str, html_text: str) -> str:
    """`page` with `html_text` at the start of its body.

    The body is the first ``<body>`` outside a ``<script>``: the inlined vega-embed
    library holds a ``"<body>"`` of its own in a string, and the text put there (the
    prompt, the response, the settings) was never shown, while a backtick in a response
    broke that script and with it every chart. A browser ends a script at its first
    ``</script>``, so that is where each script's span ends here too.
    """
    import re

    scripts = [m.span() for m in re.finditer(r"<script\b.*?</script\s*>", page, re.S | re.I)]
    for m in re.finditer(r"<body\b[^>]*>", page, re.I):
        if not any(a <= m.start() < b for a, b in scripts):
            return page[: m.end()] + "\n" + html_text + page[m.end() :]
    raise WorkbenchError(  # pragma: no cover - altair's page always has a body
        "the chart's HTML page has no <body> outside its scripts",
        "report this with the installed altair version",
    )


#: The prefix of the staging folders `write_report` draws into.
STAGE_PREFIX = ".report-"


@no_type_check  # checks its arguments itself, with messages that name the fix
def write_report(
    model: Any, trace: Any, analysis: Any, out: str | Path, *, trace_file: str | None = None
) -> Path:
    """Write ``report.html``, PNG charts and ``summary.json`` for one analysed trace.

    Args:
        model: the bridge the trace was analysed with (for the attention maps).
        trace: the `Trace`.
        analysis: its `Analysis`.
        out: output folder (created). Every file is drawn first into a staging folder.
            A new folder is then renamed into place whole, so a run killed at any moment
            leaves no folder or a complete one. Into an existing folder the files are
            moved one by one, ``report.html`` last: a run that fails or is interrupted
            while drawing leaves the earlier report whole. Staging folders of killed
            runs (``.report-*``) are removed.
        trace_file: also save the trace under this name, in the same step (the demo's
            ``trace.json``): a new trace never stands beside an earlier report.

    Returns:
        The path of ``report.html``.

    Raises:
        WorkbenchError: `out` is a file, or a folder that cannot be created.
    """
    # A file in the way, or a place that cannot be written, is named before anything else,
    # and nothing is created until the inputs are checked too.
    out = as_path(out, "write_report's out", "folder", "report")
    check_folder(out, "the report folder")
    _check_inputs(model, trace, analysis)
    if trace_file is not None and (
        not isinstance(trace_file, str) or Path(trace_file).name != trace_file
    ):
        raise WorkbenchError(
            f"trace_file must be a file name, got {trace_file!r}", 'pass e.g. "trace.json"'
        )
    # A new folder is staged beside it (renamed whole), an existing one inside it.
    new = not out.exists()
    if new:
        home, prefix = make_folder(out.parent, "the report folder's parent"), f".{out.name}"
    else:
        home, prefix = make_folder(out, "the report folder"), ""
    prefix += STAGE_PREFIX
    # A killed run's stage (SIGKILL skips the cleanup below) is stale; concurrent reports
    # into one folder are not supported.
    for old in home.glob(f"{prefix}*"):
        shutil.rmtree(old, ignore_errors=True)
    try:
        stage = stage_folder(home, prefix)  # a new report folder is this one renamed
    except OSError as e:  # a place check_folder passes (root in /proc) gave a traceback
        raise WorkbenchError(
            f"cannot create the report folder {out}: {e.strerror or e}", WRITABLE_FIX
        ) from None
    try:
        _draw(model, trace, analysis, stage)
        if trace_file is not None:
            trace.save(stage / trace_file)
        if new and not out.exists():
            os.rename(stage, out)  # the whole folder at once
        else:
            out = make_folder(out, "the report folder")
            for name in sorted(p.name for p in stage.iterdir() if p.name != "report.html"):
                os.replace(stage / name, out / name)
            os.replace(stage / "report.html", out / "report.html")
    except OSError as e:  # a full disk or a quota while drawing: a raw traceback, after all
        raise WorkbenchError(  # the work; nothing of this report is left behind
            f"cannot write the report into {out}: {e.strerror or e}",
            "free space there (or pass another folder: --out for the demo) and run it again",
        ) from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out / "report.html"


def _check_inputs(model: Any, trace: Any, analysis: Any) -> None:
    """Refuse what failed deep inside the drawing (None, a wrong type) or drew a report that
    mixes two traces (an analysis of another trace drawn with this trace's text) or two
    models (another model's attention maps beside the analysis)."""
    import torch

    from .models.bridge import check_same_model, model_name
    from .trace import check_trace
    from .trace.tokens import check_trace_tokens
    from .viz.frame import check_analysis

    check_trace(trace, "pass the trace the analysis was computed on")
    check_trace_tokens(model, trace)
    check_analysis(analysis)
    if analysis.prompt_len != trace.prompt_len or not torch.equal(analysis.ids, trace.ids):
        raise WorkbenchError(
            "the analysis is not of this trace (different token ids or prompt length), so "
            "the report would mix two traces",
            "pass the analysis of this trace: wb.analyze(model, trace)",
        )
    check_same_model(
        analysis.meta.get("model"),
        model_name(model),
        "the analysis",
        "pass this model's analysis of the trace: wb.analyze(model, trace)",
    )


#: The charts a report writes as ``<name>.png`` beside its page.
CHARTS = ("text_fai", "rhythm", "local_map", "global_map", "heads")


def _draw(model: Any, trace: Any, analysis: Any, out: Path) -> None:
    """The report's files, written into `out` (`write_report`'s staging folder)."""
    import altair as alt
    import torch

    from . import viz

    maps = viz.attention_maps(model, trace, heads=analysis.local_heads + analysis.global_heads)
    # An analysis made with entropy=False has no entropy curve to draw (it failed the report).
    entropy = not bool(torch.isnan(torch.as_tensor(analysis.entropy[analysis.prompt_len :])).all())
    charts = {
        "text_fai": viz.text_view(analysis, "fai"),
        "rhythm": viz.rhythm_curves(analysis, entropy=entropy),
        "local_map": viz.attention_map(maps, "local", analysis=analysis, size=320),
        "global_map": viz.attention_map(maps, "global", analysis=analysis, size=320),
        "heads": viz.head_map(analysis),
    }
    for name in CHARTS:  # the files the demo lists
        viz.save(charts[name], out / f"{name}.png", scale=1.5)
    # Each chart keeps its own colour scale and legend: concatenated charts share them by
    # default, and the page drew FAI, attention and span on one merged yellow-red scale.
    combined = alt.vconcat(
        charts["text_fai"],
        charts["rhythm"],
        alt.hconcat(charts["local_map"], charts["global_map"]).resolve_scale(color="independent"),
        charts["heads"],
    ).resolve_scale(color="independent", stroke="independent")
    summary = _summary(trace, analysis)
    atomic_write_text(out / "summary.json", json_text(summary, indent=2) + "\n")
    page = viz.to_html(combined)
    intro = (
        "<div style='font-family: sans-serif; max-width: 900px; margin: 16px'>"
        "<h1>Preplan-and-anchor rhythm</h1>"
        f"<p><b>Prompt</b>: {_text_html(trace.prompt)}</p>"
        f"<p><b>Response</b> ({trace.response_len} tokens):</p>"
        # A long word (a URL, a run of digits) ran past the page's width unbroken.
        "<pre style='white-space: pre-wrap; overflow-wrap: anywhere'>"
        f"{_text_html(trace.text)}</pre>"
        f"<p>{summary['local_heads']} local and {summary['global_heads']} global heads; "
        f"{len(summary['preplan'])} preplan tokens (orange), {len(summary['anchors'])} anchor "
        f"tokens (blue), {len(summary['dominated'])} locally dominated anchors.</p>"
        f"<p><b>Settings</b>: {html.escape(_settings_text(summary['settings']))}</p>"
        f"{_provenance_html(summary['provenance'])}</div>"
    )
    page = _into_body(page, intro)
    atomic_write_text(out / "report.html", page)
