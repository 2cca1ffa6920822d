"""How a unit step feels in a real browser: repaint (POST /ui/paint) against the full swap, side by side.

A real `rnnscope serve` on the shipped models (or --models DIR), Debian's chromium through Playwright.
For each text length (2,500 and 20,000 characters by default) and each path, the page opens on the
model's quote unit, takes one unmeasured step (warm-up), then presses `j` --steps times and measures
  felt ms    keydown -> #view[data-painted] names the new unit, plus the frame that shows it
             (requestAnimationFrame, then a task: the colours are on screen)
  bytes      what the step fetched over the wire (Resource Timing encodedBodySize: gzip as sent)
  server ms  the app's own time for the step's request (its Server-Timing header)
The swap path is the same page with <html data-repaint="off"> (static/app.js then lets htmx swap
the whole view on every change, as every change did before the repaint existed).

    .venv/bin/python bench/browser_speed.py [--chars 2500 20000] [--steps 15] [--model austen-lstm]

Goals (issue 21): median felt <= 50 ms at 2,500 characters and <= 150 ms at 20,000; <= 16 KB a step
at 2,500.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import corpus, start_server, stop_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
GOALS_MS = {2500: 50.0, 20000: 150.0}
GOAL_BYTES_2500 = 16 * 1024

# Installed once per page: the time of the latest `j` keydown, and a promise that resolves with the
# felt time once #view says `key` is painted and a frame has gone by.
PROBE = """
() => {
  window.__keydownAt = 0;
  document.addEventListener("keydown", (e) => { if (e.key === "j") window.__keydownAt = performance.now(); }, true);
  window.__painted = (key) => new Promise((resolve) => {
    const done = () => requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - window.__keydownAt), 0));
    const now = () => { const v = document.querySelector("#view"); return v && v.dataset.painted === key; };
    if (now()) { done(); return; }
    const obs = new MutationObserver(() => { if (now()) { obs.disconnect(); done(); } });
    obs.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-painted"] });
  });
}
"""

STEP_BYTES = """
(since) => performance.getEntriesByType("resource").filter((r) => r.startTime >= since && r.initiatorType !== "script"
  && !r.name.includes("/static/")).reduce((n, r) => n + r.encodedBodySize, 0)
"""

SERVER_MS = """
(since) => performance.getEntriesByType("resource").filter((r) => r.startTime >= since && !r.name.includes("/static/"))
  .flatMap((r) => (r.serverTiming || []).filter((t) => t.name === "app").map((t) => t.duration))
"""


def text_of(chars: int) -> str:
    source = corpus()
    while len(source) < chars:
        source += source
    return source[:chars]


def model_unit(models: Path, model: str) -> tuple[int, str, int]:
    """The model card's quote unit (what the page opens on), read from its config.json."""
    import json

    card = json.loads((models / model / "config.json").read_text())
    q = (card.get("card") or card).get("quote_unit") or {}
    return int(q.get("layer", 0)), str(q.get("state", "h")), int(q.get("unit", 0))


def measure(browser, base: str, model: str, unit: tuple[int, str, int], text: str, path: str, steps: int) -> dict:
    layer, state, first = unit
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(120_000)
    query = urlencode({"model": model, "layer": layer, "state": state, "unit": first, "mode": "neuron", "text": text})
    page.goto(f"{base}/?{query}")
    page.wait_for_selector(f'#view[data-painted="{layer}:{state}:{first}"]')
    page.evaluate(PROBE)
    if path == "swap":
        page.evaluate("document.documentElement.dataset.repaint = 'off'")
    page.click("#view h2")  # focus off the controls: j reaches the page
    felt, sizes, server = [], [], []
    for k in range(steps + 1):
        since = page.evaluate("performance.now()")
        page.keyboard.press("j")
        ms = page.evaluate("(key) => window.__painted(key)", f"{layer}:{state}:{first + k + 1}")
        page.wait_for_load_state("networkidle")
        if k == 0:
            continue  # warm-up: the first step of a page pays one-off costs (JIT, the first fetch)
        felt.append(ms)
        sizes.append(page.evaluate(STEP_BYTES, since))
        server.extend(page.evaluate(SERVER_MS, since))
    spans = page.evaluate("document.querySelectorAll('#chars > .ch').length")
    page.close()
    assert spans == len(text), f"{spans} spans for {len(text)} characters"
    return {"felt": felt, "bytes": sizes, "server": server}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, nargs="+", default=[2500, 20000])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--model", default="austen-lstm")
    ap.add_argument("--models", type=Path, default=ROOT / "models" / "zoo")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    unit = model_unit(args.models, args.model)
    tmp = Path(tempfile.mkdtemp(prefix="browser-speed-"))
    proc, base = start_server(args.models, args.model, tmp / "data", tmp / "serve.log", {})
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for chars in args.chars:
                text = text_of(chars)
                for path in ("repaint", "swap"):
                    r = measure(browser, base, args.model, unit, text, path, args.steps)
                    rows.append((chars, path, r))
                    print(f"  measured {chars:,} characters, {path}: median {statistics.median(r['felt']):.0f} ms",
                          flush=True)
            browser.close()
    finally:
        stop_server(proc)

    print(f"\n{args.model}, unit steps with j from {unit[1]}[{unit[0]}][{unit[2]}], {args.steps} steps a row "
          "(medians; p90 in brackets)")
    print(f"{'chars':>7} {'path':>8} {'felt ms':>14} {'KB/step':>8} {'server ms':>10}   goal")
    by = {}
    for chars, path, r in rows:
        felt = statistics.median(r["felt"])
        p90 = sorted(r["felt"])[int(0.9 * (len(r["felt"]) - 1))]
        kb = statistics.median(r["bytes"]) / 1024
        srv = statistics.median(r["server"]) if r["server"] else float("nan")
        by[(chars, path)] = (felt, kb)
        goal = ""
        if path == "repaint":
            ok_ms = felt <= GOALS_MS.get(chars, float("inf"))
            ok_kb = chars != 2500 or kb * 1024 <= GOAL_BYTES_2500
            goal = (f"<= {GOALS_MS[chars]:.0f} ms {'met' if ok_ms else 'MISSED'}" if chars in GOALS_MS else "")
            if chars == 2500:
                goal += f", <= 16 KB {'met' if ok_kb else 'MISSED'}"
        print(f"{chars:>7,} {path:>8} {felt:>7.0f} [{p90:>4.0f}] {kb:>8.1f} {srv:>10.1f}   {goal}")
    for chars in args.chars:
        if (chars, "repaint") in by and (chars, "swap") in by:
            (fr, kr), (fs, ks) = by[(chars, "repaint")], by[(chars, "swap")]
            print(f"{chars:>7,} swap / repaint: {fs / fr:.1f}x the felt time, {ks / kr:.1f}x the bytes")


if __name__ == "__main__":
    main()
