"""The interventions and gradient-flow pages on the shipped models, in Debian's chromium against a real
`rnnscope serve` (issue #21, items 5 and 7): clamping austen-lstm's quote cell wrecks closing quotes, not
opening ones, and the page shows the two apart; RNN, LSTM and GRU gradients share one readable log axis.

A real server with the committed models (as tests/e2e/test_shipped_quote_cell.py); the browser is
tests/e2e/conftest.py's.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import ARTIFACTS, PAGE_OPTIONS, ZOO
from tests.share.server import post_json

pytestmark = pytest.mark.e2e

# Held-out Austen (near the end of Emma, public domain), 18 double quotes: a place (a position whose next
# character is the quote) for each but the first, which opens the text: 9 closing places, 8 opening.
TEXT = ('"I can never think of it," she cried, "without extreme shame."\n\n'
        '"The shame," he answered, "is all mine, or ought to be. But is it\npossible that you had no suspicion?--'
        'I mean of late. Early, I know, you\nhad none."\n\n"I never had the smallest, I assure you."\n\n'
        '"That appears quite wonderful. I was once very near--and I wish I\nhad--it would have been better. '
        'But though I was always doing wrong\nthings, they were very bad wrong things, and such as did me no\n'
        'service.--It would have been a much better transgression had I broken\nthe bond of secrecy and told '
        'you every thing."\n\n"It is not now worth a regret," said Emma.\n\n"I have some hope," resumed he, '
        '"of my uncle\'s being persuaded to pay a\nvisit at Randalls."')

if not all((ZOO / m / "model.safetensors").is_file() for m in ("austen-lstm", "austen-rnn", "austen-gru")):
    pytest.skip("the shipped austen checkpoints are not in this checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def page_options():
    return {**PAGE_OPTIONS, "timeout": 120_000}  # three 3M-parameter models on a shared 2-core machine


def test_clamping_the_quote_cell_wrecks_closing_quotes_and_the_page_shows_them_apart(page):
    pg = page
    q = {"model": "austen-lstm", "text": TEXT, "layer": "1", "state": "c", "unit": "336", "value": "0",
         "start": "0", "watch": '"'}
    pg.goto(pg.base + "/intervene?" + urlencode(q))
    pg.wait_for_selector("table.watch-groups")
    rows = pg.eval_on_selector_all("table.watch-groups tbody tr", """trs => trs.map(tr => ({
        group: tr.dataset.group, label: tr.querySelector('th').textContent,
        n: Number(tr.querySelector('.n').textContent), before: Number(tr.querySelector('.b').textContent),
        after: Number(tr.querySelector('.a').textContent)}))""")
    got = {r["group"]: r for r in rows}
    assert [r["group"] for r in rows] == ["closing", "opening", "all"]
    assert got["closing"]["n"] == 9 and got["opening"]["n"] == 8 and got["all"]["n"] == 17
    closing, opening = got["closing"], got["opening"]
    # zeroing the unit that remembers "a quote is open" wrecks the quotes that need that memory ...
    assert closing["after"] < 0.5 * closing["before"], closing
    # ... far more than the ones that do not (mixed together they read as a middling change)
    assert closing["after"] / closing["before"] < opening["after"] / opening["before"] - 0.25, (closing, opening)
    kinds = pg.eval_on_selector_all("table.watch-table tbody tr", "trs => trs.map(tr => tr.cells[2].textContent)")
    assert kinds.count("closing") == 8 and kinds.count("opening") == 7  # the table shows the first 15 places
    # the JSON API reports the same groups (from the same cached runs)
    status, out = post_json(pg.base + "/api/v1/intervene", {"model": "austen-lstm", "text": TEXT, "layer": 1,
                                                            "state": "c", "unit": 336, "value": 0.0, "watch": '"'})
    assert status == 200, out
    api = {g["group"]: g for g in out["watch_summary"]["groups"]}
    for key in ("closing", "opening"):
        assert api[key]["places"] == got[key]["n"]
        assert f"{api[key]['mean_p_before']:.3f}" == f"{got[key]['before']:.3f}"
        assert f"{api[key]['mean_p_after']:.3f}" == f"{got[key]['after']:.3f}"
    ARTIFACTS.mkdir(exist_ok=True)
    pg.locator("table.watch-groups").screenshot(path=str(ARTIFACTS / "e2e-intervene-split.png"))
    assert pg.problems == []


def test_rnn_lstm_and_gru_gradients_share_one_readable_log_axis_in_list_order(page):
    pg = page
    q = [("text", TEXT[:240]), ("lookback", "50"),
         ("compare", "austen-rnn"), ("compare", "austen-lstm"), ("compare", "austen-gru")]
    pg.goto(pg.base + "/gradients?" + urlencode(q))
    pg.wait_for_selector("article.panel svg.plot")
    assert pg.eval_on_selector_all("article.panel", "as => as.map(a => a.dataset.model)") == [
        "austen-gru", "austen-lstm", "austen-rnn"]  # the model list's order, not the URL's
    axes = pg.eval_on_selector_all("article.panel svg.plot", """svgs => svgs.map(svg => {
        const box = svg.getBoundingClientRect();
        const ticks = Array.from(svg.querySelectorAll('text.tick[text-anchor=end]')).map(t => {
            const r = t.getBoundingClientRect();
            return {label: t.textContent, top: r.top - box.top, bottom: r.bottom - box.top, left: r.left - box.left};
        });
        const label = svg.querySelector('text.axis-label[transform]').getBoundingClientRect();
        return {ticks, labelRight: label.right - box.left};
    })""")
    labels = [[t["label"] for t in a["ticks"]] for a in axes]
    assert labels[0] == labels[1] == labels[2], labels  # one axis for all three
    assert "1" in labels[0] and any(s.startswith("1e-1") for s in labels[0]), labels[0]  # reaches 1e-1x
    for a in axes:
        ticks = a["ticks"]
        for upper, lower in zip(ticks, ticks[1:]):
            assert upper["bottom"] <= lower["top"], (upper, lower)  # rendered labels never overlap
        assert all(t["left"] >= a["labelRight"] for t in ticks)  # nor run into the axis title, nor off the plot
    # on that axis the RNN's gradient 50 steps back sits far below the LSTM's and the GRU's
    far = pg.eval_on_selector_all("article.panel", """as => as.map(a => {
        const pts = a.querySelector('g.s-jac polyline').getAttribute('points').trim().split(/\\s+/);
        return Number(pts[pts.length - 1].split(',')[1]);
    })""")
    gru, lstm, rnn = far
    assert rnn > lstm + 40 and rnn > gru + 40, far  # pixels down the shared axis
    stats = pg.eval_on_selector_all("article.panel", """as => as.map(a => Array.from(a.querySelectorAll('.stat-list li'))
        .map(li => li.textContent).find(s => s.includes('(T−50)')))""")
    back50 = [float(s.split("= ")[1]) for s in stats]
    assert back50[2] < 1e-9 < 1e-4 < min(back50[0], back50[1]), stats
    ARTIFACTS.mkdir(exist_ok=True)
    pg.locator("div.panels").screenshot(path=str(ARTIFACTS / "e2e-gradients-shared-axis.png"))
    assert pg.problems == []
