"""The main page's training-step slider and time-lapse panel (issue #23 part 2): the slider only for a
model with snapshots, `snapshot=STEP` in the URL shows that step's weights (colours, tooltip data, chart
mark, sample), the final weights without it, every bad step said inline, and a step change repaints
through POST /ui/paint like a unit change."""

from __future__ import annotations

import base64
import json
import re
from html import unescape

import numpy as np
import pytest

from app.trace.views import DEFAULT_TEXT
from app.ui.levels import levels
from models.checkpoint import load_checkpoint
from models.snapshots import load_snapshot, read_timeline
from models.trace import run_trace

from tests.app.conftest import make_client
from tests.app.trace.test_snapshots import PLAIN, SNAP, STEPS, snapshot_models
from tests.conftest import char_spans

HX = {"HX-Request": "true"}
TEXT = 'He said, "I do not know."\nShe smiled. <b>&amp;</b>'
VIEW = {"model": SNAP, "layer": "0", "state": "h", "unit": "5", "mode": "neuron", "text": TEXT}


@pytest.fixture(scope="module")
def snap_dir(tmp_path_factory):
    return snapshot_models(tmp_path_factory.mktemp("snapshot-page"))


@pytest.fixture()
def client(snap_dir):
    with make_client(snap_dir, default_model=SNAP) as c:
        yield c


def fieldset(html: str) -> str:
    found = re.search(r'<fieldset class="field snapshot"[^>]*>.*?</fieldset>', html, re.S)
    assert found, "no training-step field on the page"
    return found.group(0)


def attr(html: str, element_id: str, name: str) -> str | None:
    """An attribute of the element with this id: its value, "" for a bare one (disabled), None when absent."""
    tag = re.search(rf'<[a-z]+ id="{element_id}"(?:[^>"\']|"[^"]*"|\'[^\']*\')*>', html, re.S)
    assert tag, f"no #{element_id}"
    value = re.search(rf'\s{name}(?:="([^"]*)"|=\'([^\']*)\'|(?=[\s>]))', tag.group(0))
    return None if value is None else unescape(value.group(1) or value.group(2) or "")


def levels_of(html: str) -> list[int]:
    return [round((s.v + 1) * 50) for s in char_spans(html)]


def expected_levels(snap_dir, step: int | None, text: str = TEXT, unit: int = 5) -> list[int]:
    """The colour levels of layer 0 h[unit] computed straight from the weights with models/ and app.ui.levels."""
    ck = load_checkpoint(snap_dir / SNAP) if step is None else load_snapshot(snap_dir / SNAP, step)
    values = run_trace(ck.model, ck.vocab, text, layers=[0], states=["h"], units=[unit], half=True).states[0]["h"][:, 0]
    return levels(np.asarray(values, dtype=np.float32), 1.0)


def close(a: list[int], b: list[int]) -> bool:
    """Level by level within one (float16 rounding can put a value on the other side of a level's edge)."""
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= 1


def test_the_slider_is_there_only_for_a_model_with_snapshots(client, tiny_models_dir):
    html = client.get("/", params={"model": SNAP}).text
    field = fieldset(html)
    assert " hidden" not in field.split(">")[0]
    assert attr(html, "snapshot-slider", "max") == str(len(STEPS)) and attr(html, "snapshot-slider", "disabled") is None
    assert re.findall(r'<option value="(\d+)"></option>', field) == [str(s) for s in STEPS]
    # another model without snapshots: the field is there for the model picker, hidden and off (not sent)
    other = client.get("/", params={"model": PLAIN}).text
    field = fieldset(other)
    assert " hidden" in field.split(">")[0]
    assert attr(other, "snapshot-slider", "disabled") == "" and attr(other, "snapshot", "disabled") == ""
    assert 'data-snapshot=' not in other.split('<section id="view"')[1].split(">")[0]
    assert "Training step" not in other.split('<section id="view"')[1]  # no time-lapse panel either
    # a server whose models have no snapshots has no such field at all, nor its message slot
    with make_client(tiny_models_dir) as plain:
        page = plain.get("/").text
        assert "snapshot" not in page
        partial = plain.get("/", params={"text": "ab"}, headers=HX).text
        assert 'id="err-snapshot"' not in partial


def test_the_url_step_shows_that_snapshots_weights(client, snap_dir):
    step = STEPS[2]
    r = client.get("/", params={**VIEW, "snapshot": str(step)})
    assert r.status_code == 200, r.text
    html = r.text
    assert attr(html, "view", "data-snapshot") == str(step) and attr(html, "view", "data-painted") == "0:h:5"
    assert attr(html, "snapshot", "value") == str(step) and attr(html, "snapshot-slider", "value") == str(STEPS.index(step))
    label = f"step {step:,} · {step * 80:,} characters seen"
    assert attr(html, "snapshot-slider", "aria-valuetext") == label and f">{label}</output>" in html
    assert f"<title>{SNAP} · layer 0 · h · unit 5 · step {step} · rnnscope</title>" in html
    assert close(levels_of(html), expected_levels(snap_dir, step))
    assert not close(levels_of(html), expected_levels(snap_dir, None))  # not the final weights' colours
    # the panel: the step, its numbers and its sample (escaped), the chart with the step marked
    entry = read_timeline(snap_dir / SNAP)["snapshots"][2]
    panel = html.split('<section id="timeline"')[1].split("</section>")[0]
    assert f"Training step {step}" in panel and f"validation {entry['val_bpc']:.3f} bits/char" in panel
    sample = re.search(r'<pre><span class="tl-prime">(.*?)</span>(.*?)</pre>', panel, re.S)
    assert unescape(sample.group(2)) == entry["sample"] and unescape(sample.group(1)).endswith('"I')
    assert panel.count('<circle class="tl-bpc') == len(STEPS) and panel.count('<circle class="tl-score') == len(STEPS)
    assert len(re.findall(r'<circle class="tl-(?:bpc|score) now"', panel)) == 2
    assert f"step {step:,}: {entry['val_bpc']:.3f} bits/char" in panel
    best = entry["probe_units"]["quotes"]
    assert f'data-layer="{best["layer"]}" data-state="{best["state"]}" data-unit="{best["unit"]}"' in panel
    # the tooltip's data (surprisal, guesses) is the snapshot's too
    data = attr(html, "chars", "data-trace")
    ck = load_snapshot(snap_dir / SNAP, step)
    ref = run_trace(ck.model, ck.vocab, TEXT, topk=5)
    got = json.loads(data)
    assert got["s"][:-1] == pytest.approx([round(float(x), 2) for x in ref.surprisal_bits[:-1]], abs=0.02)


def test_without_a_step_the_view_is_the_final_weights(client, snap_dir):
    html = client.get("/", params=VIEW).text
    assert attr(html, "view", "data-snapshot") == "final"
    assert attr(html, "snapshot", "value") == "" and attr(html, "snapshot-slider", "value") == str(len(STEPS))
    assert attr(html, "snapshot-slider", "aria-valuetext") == "final weights · step 12 · 960 characters seen"
    assert close(levels_of(html), expected_levels(snap_dir, None))
    panel = html.split('<section id="timeline"')[1].split("</section>")[0]
    assert "Final weights" in panel and "move the slider" in panel and "<pre>" not in panel
    assert '<rect class="tl-final now"' in panel and "now\"" not in panel.split("tl-final")[0]


@pytest.mark.parametrize("params, message", [
    ({"snapshot": "5"}, f"{SNAP} has no snapshot at step 5; its snapshots are at steps {', '.join(map(str, STEPS))}"),
    ({"snapshot": "two"}, "the training step must be a whole number, got 'two'"),
    ({"snapshot": "-3"}, "the training step counts from 0, got -3"),
    ({"snapshot": "1", "model": PLAIN}, f"{PLAIN} has no training snapshots: leave the snapshot out for its final weights"),
])
def test_a_bad_step_is_said_beside_the_slider(client, params, message):
    r = client.get("/", params={**VIEW, **params})
    assert r.status_code == 422
    html = r.text
    assert f'<span id="err-snapshot" class="err" role="alert">{message}</span>' in unescape(html).replace("&#39;", "'")
    assert " hidden" not in fieldset(html).split(">")[0]  # shown, even for the model without snapshots
    assert "Fix the setting marked above" in html
    if params.get("model") != PLAIN:
        assert attr(html, "snapshot", "value") == params["snapshot"]  # what was typed stays in the box


def test_a_bad_step_from_htmx_keeps_the_view_and_fills_the_slot(client):
    r = client.get("/", params={**VIEW, "snapshot": "5"}, headers=HX)
    assert r.status_code == 422 and r.headers["HX-Reswap"] == "none"
    assert re.search(r'<span id="err-snapshot" class="err" role="alert" hx-swap-oob="true">[^<]*no snapshot at step 5', r.text)
    ok = client.get("/", params={**VIEW, "snapshot": str(STEPS[1])}, headers=HX)
    assert ok.status_code == 200
    assert ok.text.count('hx-swap-oob="true"') == 8  # every slot cleared, the step's too
    assert '<section id="timeline"' in ok.text and f'data-snapshot="{STEPS[1]}"' in ok.text


def unpack(g: dict) -> dict:
    """compact_guesses back to data-trace's lists, as static/app.js reads them."""
    cb = np.frombuffer(base64.b64decode(g["s"]), dtype="<i2").tolist()
    pm = np.frombuffer(base64.b64decode(g["p"]), dtype="<i2").tolist()
    k, top = g["k"], g["top"]
    return {"s": [None if x < 0 else x / 100 for x in cb], "top": [top[i * k:(i + 1) * k] for i in range(len(cb))],
            "p": [pm[i * k:(i + 1) * k] for i in range(len(cb))]}


def paint(client, **fields):
    return client.post("/ui/paint", data={**VIEW, **fields})


def test_a_step_change_repaints_what_a_fresh_page_renders(client):
    for step in (STEPS[0], STEPS[3], None):
        fields = {"snapshot": "" if step is None else str(step)}
        r = paint(client, **fields, predictions="1")
        assert r.status_code == 200, r.text
        data = r.json()
        key = "final" if step is None else str(step)
        assert data["snapshot"] == key and data["painted"] == "0:h:5" and data["errors"]["snapshot"] == ""
        page = client.get("/", params={**VIEW, **({} if step is None else {"snapshot": str(step)})}).text
        values = np.frombuffer(base64.b64decode(data["v"]), dtype="<f2").astype(np.float32)
        assert levels(values, data["hi"]) == levels_of(page)
        assert data["timeline"].startswith('<section id="timeline"') and data["timeline"] in page
        assert data["title"] == re.search(r"<title>(.*?)</title>", page).group(1)
        fresh = json.loads(attr(page, "chars", "data-trace"))
        assert unpack(data["preds"]) == {k: fresh[k] for k in ("s", "top", "p")}  # the tooltip's, of these weights
    # a unit change at the same step needs no predictions: none are sent
    assert "preds" not in paint(client, snapshot=str(STEPS[3]), unit="6").json()


def test_a_bad_step_repaint_is_refused_with_its_message(client):
    r = paint(client, snapshot="999")
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert errors["snapshot"].startswith(f"{SNAP} has no snapshot at step 999") and errors["unit"] == ""


def test_the_chart_follows_the_panels_probe_when_the_timeline_recorded_it(client):
    at = {**VIEW, "snapshot": str(STEPS[-1])}
    vowel = client.get("/", params={**at, "probe": "vowel"}).text.split('<section id="timeline"')[1]
    assert "best vowel unit (AUC)" in vowel and "best vowel unit at this step" in vowel
    other = client.get("/", params={**at, "probe": "comment"}).text.split('<section id="timeline"')[1]
    assert "best quotes unit (AUC)" in other  # not recorded: the quotes unit
    painted = paint(client, snapshot=str(STEPS[-1]), probe="vowel").json()["timeline"]
    assert "best vowel unit (AUC)" in painted


def test_a_share_link_keeps_the_step(client):
    r = client.post("/api/v1/share", json={"model": SNAP, "text": TEXT, "layer": 0, "state": "h", "unit": 5,
                                           "snapshot": STEPS[2]})
    assert r.status_code == 200, r.text
    assert r.json()["view"]["snapshot"] == str(STEPS[2])
    page = client.get(f"/s/{r.json()['id']}").text
    assert attr(page, "view", "data-snapshot") == str(STEPS[2]) and attr(page, "snapshot", "value") == str(STEPS[2])
    bad = client.post("/api/v1/share", json={"model": SNAP, "text": TEXT, "snapshot": 5})
    assert bad.status_code == 422 and "no snapshot at step 5" in bad.json()["detail"]


def test_the_default_text_and_unit_work_at_every_step(client):
    for step in STEPS:
        html = client.get("/", params={"model": SNAP, "snapshot": str(step)}).text
        assert "".join(s.ch for s in char_spans(html)) == DEFAULT_TEXT
        assert attr(html, "view", "data-snapshot") == str(step)


def test_downloads_at_a_step_carry_that_steps_values(client, snap_dir):
    step = STEPS[1]
    html = client.get("/", params={**VIEW, "snapshot": str(step)}).text
    links = {kind: unescape(q) for _, kind, q in re.findall(r'<a href="(/export\.(html|csv|json))\?([^"]*)"', html)}
    assert set(links) == {"html", "csv", "json"} and all(f"snapshot={step}" in q for q in links.values())
    exported = client.get("/export.json?" + links["json"])
    assert exported.status_code == 200 and exported.json()["snapshot"] == step
    assert f"-step{step}-" in exported.headers["content-disposition"]
    ck = load_snapshot(snap_dir / SNAP, step)
    values = run_trace(ck.model, ck.vocab, TEXT, layers=[0], states=["h"], units=[5], half=True).states[0]["h"][:, 0]
    assert exported.json()["values"] == pytest.approx(np.asarray(values, dtype=np.float64).tolist(), abs=1e-3)
    final = client.get("/export.json", params=VIEW).json()
    assert final["snapshot"] is None and final["values"] != exported.json()["values"]
