"""The demo's report in a real browser (headless Chromium, no network): its text is in the
page and its charts draw."""

from __future__ import annotations

import pytest
from test_lab_widgets_browser import open_offline, require_chromium  # tests/browser/

import workbench as wb
from workbench.report import write_report

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_report_shows_its_text_and_draws_its_charts_offline(tiny, tmp_path):
    """The prompt, response and settings were put into a string of the inlined vega-embed
    script: the page never showed them, and a backtick in the response broke the script."""
    require_chromium()  # before the model work
    with pytest.warns(wb.trace.UnknownTokensWarning):  # the tiny models know no backtick
        trace = wb.Trace.from_text(tiny, "Add: 12+34 `now`", "2+4=6\n1+3=4\nAnswer: 46 `done`")
    analysis = wb.analyze(tiny, trace, fai_min_rows=1)
    page_path = write_report(tiny, trace, analysis, tmp_path / "report")
    text, errors, requests = open_offline(
        page_path, "document.querySelectorAll('canvas, svg.marks').length >= 1", 30_000
    )
    assert not errors, errors
    assert "Prompt" in text and "Add: 12+34 `now`" in text and "Answer: 46 `done`" in text
    assert "Settings" in text
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests
