"""/compare on the shipped models in a real browser (issue #23 part 1): austen-lstm's quote cell c[336]
matched to austen-gru (its quote unit h[331], |r| near 1) and to austen-rnn (no quote unit: its best attempt
is weak); by the quotes probe each gated model shows its own quote unit. The page agrees with
POST /api/v1/match on the same server; the screenshot goes to artifacts/ (and, with
RNNSCOPE_WRITE_DOCS=1, to docs/compare.png for the README, which must stay under 150 KB).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import ARTIFACTS, HTMX_ABORTS, PAGE_OPTIONS, ZOO
from tests.share.server import post_json

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCS_SHOT = ROOT / "docs" / "compare.png"
DOCS_LIMIT = 150_000
PANELS = "#cmp-result .cmp-panel"
PASSAGE = ('"I cannot think what you mean," said Elizabeth, turning away. "You will see him tomorrow," she replied; '
           'and then, as no answer came, she took up her work again.\n'
           '"But it is," returned she; "for Mrs. Long has just been here, and she told me all about it."\n'
           'Mr. Bennet made no answer. "Do not you want to know who has taken it?" cried his wife impatiently.')

if not all((ZOO / m / "model.safetensors").is_file() for m in ("austen-lstm", "austen-gru", "austen-rnn")):
    pytest.skip("the shipped austen checkpoints are not in this checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def page_options():
    return {**PAGE_OPTIONS, "viewport": {"width": 1400, "height": 1000}, "timeout": 90_000, "expected": HTMX_ABORTS}


def panels(pg) -> list[dict]:
    return pg.eval_on_selector_all(PANELS, """ps => ps.map(p => ({model: p.dataset.model, shown: p.dataset.shown,
        role: p.className, r: (p.querySelector('.cmp-r') || {}).textContent || '',
        cands: Array.from(p.querySelectorAll('.cand')).map(c => c.dataset.pick)}))""")


def test_the_lstm_quote_cell_matched_to_the_gru_and_to_the_rnns_best_attempt(page):
    pg = page
    query = [("model", "austen-lstm"), ("layer", "1"), ("state", "c"), ("unit", "336"),
             ("models", "austen-gru"), ("models", "austen-rnn"), ("text", PASSAGE)]
    pg.goto(pg.base + "/compare?" + urlencode(query))
    pg.wait_for_selector(PANELS)
    got = panels(pg)
    assert [(p["model"], p["shown"]) for p in got][:2] == [("austen-lstm", "1:c:336"), ("austen-gru", "1:h:331")]
    assert got[2]["model"] == "austen-rnn"

    status, api = post_json(pg.base + "/api/v1/match", {"text": PASSAGE, "anchor": {"model": "austen-lstm", "layer": 1,
                            "state": "c", "unit": 336}, "models": ["austen-gru", "austen-rnn"], "top": 5}, timeout=120)
    assert status == 200
    gru, rnn = api["matches"]
    assert abs(gru["units"][0]["r"]) > 0.9  # the GRU's quote unit follows the LSTM's quote cell
    assert abs(rnn["units"][0]["r"]) < 0.6  # the vanilla RNN has no quote unit: its best attempt is weak
    for p, m in zip(got[1:], api["matches"]):
        assert p["cands"] == [f"{u['layer']}:{u['state']}:{u['unit']}" for u in m["units"]]
        assert p["r"] == f"r {m['units'][0]['r']:+.3f} with the anchor"

    # the three panels read together: hover inside the second quotation
    inside = PASSAGE.index("You will see") + 4
    pg.locator(f"{PANELS}:nth-child(1) .cmp-chars > .ch").nth(inside).hover()
    assert all(t.startswith(f"‘w’ at {inside}: ") for t in
               pg.eval_on_selector_all(PANELS, "ps => ps.map(p => p.querySelector('.cmp-readout').textContent)"))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = pg.screenshot(full_page=True)
    (ARTIFACTS / "compare-shipped.png").write_bytes(shot)
    if os.environ.get("RNNSCOPE_WRITE_DOCS") == "1":
        DOCS_SHOT.write_bytes(small_png(shot))
    assert pg.problems == [], pg.problems


def test_by_the_quotes_probe_each_gated_model_shows_its_own_quote_unit(page):
    pg = page
    query = [("by", "probe"), ("probe", "quotes"), ("models", "austen-lstm"), ("models", "austen-gru"),
             ("models", "austen-rnn"), ("text", PASSAGE)]
    pg.goto(pg.base + "/compare?" + urlencode(query))
    pg.wait_for_selector(PANELS)
    shown = {p["model"]: p["shown"] for p in panels(pg)}
    assert shown["austen-lstm"] == "1:c:336" and shown["austen-gru"] == "1:h:331"  # the model cards' quote units
    assert pg.problems == [], pg.problems


def test_the_readme_screenshot_is_committed_and_small():
    assert DOCS_SHOT.is_file(), "docs/compare.png is missing: run this module with RNNSCOPE_WRITE_DOCS=1"
    assert DOCS_SHOT.stat().st_size < DOCS_LIMIT


def small_png(png: bytes) -> bytes:
    """A 128-colour palette PNG: the page's flat colours survive, the file stays well under the README's budget."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
