"""axe-core (npm, copied into static/vendor/ by `npm ci`) on every kind of page: no serious or critical violation.

Each page is loaded in a real browser against a real server, its slow parts (htmx results, the generation
stream) are waited for, then axe runs on the whole document. A failure lists each violation with its rule,
impact, help text and the selectors of the elements it found, so it can be fixed without rerunning axe by
hand. Where a violation lives in a file of another owner it is listed in KNOWN: that page's full check is an
expected failure (strict, so it turns red once fixed), and the same page is still checked for everything else.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import new_page

pytestmark = pytest.mark.e2e

AXE = Path(__file__).resolve().parents[2] / "static" / "vendor" / "axe.min.js"
BLOCKING = ("serious", "critical")
TEXT = 'She said, "I shall go." <b>He</b> said nothing.\nThen: "Why?"'
Q = quote(TEXT)


@dataclass(frozen=True)
class PageCase:
    """A page to check: its path, what to wait for once it has loaded, and the actions that open its states."""

    name: str
    path: str
    ready: str = "body"  # a selector that exists once the page is complete
    clicks: tuple[str, ...] = ()  # clicked in order after `ready` (each waits for the page to settle)
    viewport: tuple[int, int] = (1200, 900)
    known: dict[str, str] = field(default_factory=dict)  # axe rule id -> why it is not fixed here (another owner)


CASES = [
    PageCase("main", f"/?text={Q}&layer=1&state=c&unit=3&layer2=0&state2=h&unit2=5", "#chars .ch"),
    PageCase("main-phone", f"/?text={Q}&layer=1&state=c&unit=3", "#chars .ch", viewport=(375, 667)),
    PageCase("main-refused", f"/?text={Q}&unit=999", "#err-unit:not(:empty)"),
    PageCase("main-surprisal", f"/?text={Q}&mode=surprisal", "#chars .ch"),
    PageCase("main-share-link", f"/?text={Q}", ".share-btn", clicks=(".share-btn",)),
    PageCase("neuron", "/neuron/tiny-lstm/1/c/3", "main h2"),
    PageCase("neuron-missing", "/neuron/tiny-lstm/9/c/3", "main h2"),
    PageCase("generate", f"/generate?text={Q}&n=30&seed=1", "#gen-out:not([aria-busy])"),
    PageCase("gradients", f"/gradients?text={Q}", "#dyn-result:not(:has(.loading))"),
    PageCase("toy", "/toy", "#dyn-result:not(:has(.loading))"),
    PageCase("saturation", "/saturation", "#dyn-result:not(:has(.loading))"),
    PageCase("intervene", f"/intervene?text={Q}&layer=1&state=c&unit=3&value=1&start=5",
             "#dyn-result:not(:has(.loading))"),
    PageCase("docs", "/docs", ".opblock"),
    PageCase("docs-try-out", "/docs", ".opblock",
             clicks=("#operations-api-trace_api_v1_trace_post .opblock-summary-control", ".try-out__btn")),
    PageCase("not-found", "/no/such/page", "main h1"),
    PageCase("share", "/s/{sid}", "#chars .ch"),
    PageCase("share-missing", "/s/aaaaaaaaaaaa", "main h1"),
    PageCase("export", "/export.html?text=" + Q + "&layer=1&state=c&unit=3&layer2=0&state2=h&unit2=5", ".chars span"),
]


def share_id(server: str, text: str) -> str:
    """A shared view of `text` (tiny-lstm, layer 1 c[3]), made through the JSON API: the id its /s/ page opens."""
    body = json.dumps({"model": "tiny-lstm", "text": text, "layer": 1, "state": "c", "unit": 3}).encode()
    req = urllib.request.Request(server + "/api/v1/share", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["id"]


def open_path(pg, server: str, path: str, ready: str) -> None:
    """Open `path` as a visitor would and wait until `ready` is in the document. An export is a download
    (Content-Disposition), so it is opened as the saved file would be."""
    if path.startswith("/export.html"):
        with urllib.request.urlopen(server + path, timeout=60) as r:
            pg.set_content(r.read().decode("utf-8"))
    else:
        pg.goto(server + path)
    pg.wait_for_selector(ready, state="attached")


@pytest.fixture(scope="module")
def sid(server) -> str:
    return share_id(server, TEXT)


@pytest.fixture(scope="module")
def axe_source() -> Path:
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: `npm ci` copies it from the axe-core devDependency (package.json)")
    return AXE


def run_axe(browser, server: str, sid: str, case: PageCase, axe: Path) -> list[dict]:
    """Load the page as a visitor would, open its states, then run axe; every violation with its nodes."""
    width, height = case.viewport
    # The app's CSP forbids inline scripts, and injecting axe is one: this context alone ignores the CSP.
    context = browser.new_context(bypass_csp=True, viewport={"width": width, "height": height})
    try:
        pg = new_page(context)
        open_path(pg, server, case.path.replace("{sid}", sid), case.ready)
        for selector in case.clicks:
            pg.click(selector)
            pg.wait_for_load_state("networkidle")
        pg.wait_for_timeout(200)  # transitions (the busy note fades) end before colours are read
        pg.add_script_tag(path=str(axe))
        return pg.evaluate("""async () => {
          const r = await axe.run(document, {resultTypes: ['violations']});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
            nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary || ''}))}));
        }""")
    finally:
        context.close()


def blocking(violations: list[dict], ignore: tuple[str, ...] = ()) -> list[dict]:
    return [v for v in violations if v["impact"] in BLOCKING and v["id"] not in ignore]


def report(case: PageCase, violations: list[dict]) -> str:
    """Violations as lines a person can act on: rule, impact, help, then each element's selector and why."""
    lines = [f"axe found {len(violations)} serious or critical violation(s) on {case.name} ({case.path}):"]
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v['url']}>")
        for n in v["nodes"][:8]:
            summary = " ".join(n["summary"].split())
            lines.append(f"    {n['target']}\n      {summary[:300]}")
        if len(v["nodes"]) > 8:
            lines.append(f"    … and {len(v['nodes']) - 8} more elements")
    return "\n".join(lines)


def _param(case: PageCase):
    marks = ()
    if case.known:
        reasons = "; ".join(f"{rule}: {why}" for rule, why in case.known.items())
        marks = (pytest.mark.xfail(strict=True, reason=f"reported, in another owner's files: {reasons}"),)
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_no_serious_or_critical_violation(browser, server, sid, axe_source, case):
    found = blocking(run_axe(browser, server, sid, case, axe_source))
    assert not found, report(case, found)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES if c.known])
def test_pages_with_a_known_violation_have_no_other(browser, server, sid, axe_source, case):
    """The known violation is there (else the xfail above turns red) and nothing else blocking is."""
    violations = run_axe(browser, server, sid, case, axe_source)
    found = blocking(violations, ignore=tuple(case.known))
    assert not found, report(case, found)


def test_the_report_names_rule_element_and_reason():
    case = PageCase("x", "/x")
    text = report(case, [{"id": "color-contrast", "impact": "serious", "help": "Elements must meet contrast",
                          "url": "https://example.invalid/rule",
                          "nodes": [{"target": "#a > .b", "summary": "Fix any of the following:\n  contrast 2.1"}]}])
    assert "color-contrast (serious)" in text and "#a > .b" in text and "Fix any of the following: contrast 2.1" in text
    assert blocking([{"id": "region", "impact": "moderate"}, {"id": "label", "impact": "critical"}]) == \
        [{"id": "label", "impact": "critical"}]
