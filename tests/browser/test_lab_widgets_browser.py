"""The workbench app in a real JupyterLab, in headless Chromium, with no network.

Recipe (design.md): Debian's Chromium driven by Python Playwright; JupyterLab on a free
loopback port with a token and throw-away config/data/runtime dirs; the notebook is
written here with nbformat, run with ``notebook:run-all-cells``; every request that is
not loopback, ``data:`` or ``blob:`` is aborted and recorded. The test asserts that the
ipywidgets rendered (sliders, dropdowns, buttons), that the panels' altair charts drew SVG
marks through the offline ``JupyterChart`` widget, that a plain ``wb.viz`` chart in a cell drew
through the ``"workbench"`` renderer's HTML, and that the kernel printed the analysis.
Install Chromium with ``.ci/browser-deps``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]
ALLOWED_PREFIXES = ("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "data:", "blob:")


def require_chromium():
    """Skip unless Debian's Chromium and Playwright are installed; return ``sync_api``."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run .ci/browser-deps (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="install the dev extras")


def open_offline(path: Path, ready_js: str, timeout_ms: int) -> tuple[str, list[str], list[str]]:
    """Open the local page `path` in headless Chromium and wait until `ready_js` holds.

    Returns the body's text, the page's errors and every URL it requested (for the
    callers' no-network checks)."""
    sync_api = require_chromium()
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri())
            page.wait_for_function(ready_js, timeout=timeout_ms)
            text = page.inner_text("body")
        finally:
            browser.close()
    return text, errors, requests


CELLS = [
    """\
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import workbench as wb
wb.viz.enable_offline()
model = wb.load_model()
app = wb.workbench(
    model,
    prompt="What is 17 * 23?",
    response="17 * 23 = 340 + 51 = 391.\\nSo the answer is 391.",
)
app.rhythm.run()
app""",
    """\
r = app.rhythm
r.window.value = 5  # post-processing only: redrawn from the kept statistics
print("WB-DONE", type(r.last_error).__name__, r.forward_passes, len(r.analysis.anchors))""",
    # a plain wb.viz chart, shown by the "workbench" renderer as HTML with Vega inlined
    "wb.viz.rhythm_curves(r.analysis)",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout} s")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free loopback port, with a notebook of `CELLS`."""
    import nbformat

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run .ci/browser-deps (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="install the dev extras (playwright)")
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "wb_app.ipynb")
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ):
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [
        str(jupyter), "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/api/status?token={token}", proc)
        yield {"base": base, "token": token, "log": tmp_path / "lab.log"}
    finally:
        with contextlib.suppress(OSError):
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5).close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()


IDLE_KERNEL_JS = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  const s = w && w.sessionContext && w.sessionContext.session;
  return !!(s && s.kernel && s.kernel.status === 'idle' && w.content && w.content.widgets.length);
}"""


TOOLTIP_SHOWN_JS = """() => {
  const el = document.getElementById('vg-tooltip-element');
  return !!(el && el.classList.contains('visible') && el.innerText.trim());
}"""

TOOLTIP_ROWS_JS = """() => {
  const el = document.getElementById('vg-tooltip-element');
  const rows = {};
  for (const tr of el.querySelectorAll('tr')) {
    const key = tr.querySelector('.key'), value = tr.querySelector('.value');
    if (key && value) rows[key.textContent.replace(/:$/, '').trim()] = value.textContent;
  }
  return {text: el.innerText, rows};
}"""


def test_workbench_app_renders_widgets_and_charts_offline(lab):
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    console_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def route(r):
                url = r.request.url
                if url.startswith(ALLOWED_PREFIXES):
                    r.continue_()
                else:
                    blocked.append(url)
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on(
                "console",
                lambda m: console_errors.append(m.text) if m.type == "error" else None,
            )
            page.goto(f"{lab['base']}/lab/tree/wb_app.ipynb?token={lab['token']}")
            page.wait_for_function("() => !!window.jupyterapp", timeout=60_000)
            page.wait_for_function(IDLE_KERNEL_JS, timeout=90_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            done = page.locator(".jp-OutputArea-output", has_text="WB-DONE")
            done.wait_for(timeout=300_000)
            page.wait_for_function(
                "() => document.querySelectorAll('.vega-embed svg.marks').length >= 4 && "
                "document.querySelectorAll('.workbench-chart .marks').length >= 1",
                timeout=60_000,
            )
            # vega-embed's own renderer (canvas) in a cell; the panels draw SVG
            n_cell_charts = page.locator(".workbench-chart .marks").count()
            text = done.text_content()  # innerText is empty once Lab windows the cell away
            n_sliders = page.locator(".widget-slider").count()
            n_dropdowns = page.locator(".widget-dropdown").count()
            n_buttons = page.locator(".widget-button").count()
            n_svg = page.locator(".vega-embed svg.marks").count()
            n_marks = page.evaluate(
                "() => document.querySelectorAll('.vega-embed svg.marks "
                "path, .vega-embed svg.marks text, .vega-embed svg.marks line').length"
            )
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            status = page.locator(".wb-status-ok").all_inner_texts()
            errors = page.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
            # hovering the WAAD curve shows the nearest token's text next to a rule
            count_rules = (
                "() => document.querySelectorAll('.vega-embed .mark-rule.role-mark line').length"
            )
            rules_before = page.evaluate(count_rules)
            curves = page.locator(".vega-embed").first
            curves.scroll_into_view_if_needed()
            plot = curves.locator("svg.marks").bounding_box()
            page.mouse.move(plot["x"] + plot["width"] * 0.3, plot["y"] + plot["height"] * 0.2)
            page.wait_for_function(f"() => ({count_rules})() > {rules_before}", timeout=10_000)
            hover_rules = page.evaluate(count_rules) - rules_before
            # ... and the tooltip of the token under the pointer (vega-tooltip's element)
            page.mouse.move(plot["x"] + plot["width"] * 0.3 + 2, plot["y"] + plot["height"] * 0.2)
            page.wait_for_function(TOOLTIP_SHOWN_JS, timeout=10_000)
            tooltip = page.evaluate(TOOLTIP_ROWS_JS)
            # the Python-side window change reached the drawn chart
            redrawn = page.locator(".vega-embed:not(.workbench-chart)", has_text="W = 5").count()
            shot = os.environ.get("WB_BROWSER_SCREENSHOT")
            if shot:  # for a person to look at: the page, then each chart
                page.screenshot(path=f"{shot}-page.png")
                embeds = page.locator(".vega-embed")
                for i in range(embeds.count()):
                    embeds.nth(i).screenshot(path=f"{shot}-chart{i}.png")
        finally:
            browser.close()

    diag = json.dumps(
        {
            "outputs": [o[:1500] for o in outputs],
            "console": console_errors[-10:],
            "blocked": blocked[:10],
        },
        indent=1,
    )
    assert errors == 0, diag
    assert text.split()[:3] == ["WB-DONE", "NoneType", "2"], diag  # 2 forward passes in all
    # max tokens, temperature, window, H_lo, local q, global q, top q
    assert n_sliders >= 7, diag
    assert n_dropdowns >= 3 and n_buttons >= 2, diag
    assert n_svg >= 4, diag  # curves, text view, attention map, head map
    assert n_cell_charts == 1, diag  # drawn in Lab from the cell's own HTML, offline
    assert n_marks > 100, diag
    assert redrawn == 1, diag
    assert hover_rules >= 1, diag
    # the curve tooltip: the token, its response position (the x axis), WAAD, the flags
    tip, rows = tooltip["text"], tooltip["rows"]
    assert "undefined" not in tip, tooltip
    assert {"token", "response position", "waad", "preplan", "anchor"} <= set(rows), tooltip
    response = "17 * 23 = 340 + 51 = 391.↵So the answer is 391."
    token = rows["token"].strip()  # spaces are shown as ␣
    assert token and token.replace("␣", " ") in response, tooltip
    assert 0 <= int(rows["response position"]) < 40, tooltip  # the response's tokens
    assert rows["preplan"] in ("true", "false") and rows["anchor"] in ("true", "false"), tooltip
    assert not console_errors, diag  # every spec is valid for the real Vega renderer
    assert any("analysed" in s for s in status), diag
    assert not blocked, f"requests beyond localhost: {blocked[:10]}"
