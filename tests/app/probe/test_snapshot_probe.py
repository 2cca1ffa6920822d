"""Probes of a training snapshot (issue #23 part 2): POST /api/v1/probe and the Find units panel rank the
units of the step's weights, which is what the timeline recorded for that step (models.snapshots), and a
bad step is refused with the steps there are."""

from __future__ import annotations

import re

import pytest

from models.evaluate import best_units
from models.snapshots import load_snapshot, read_timeline

from tests.app.conftest import make_client
from tests.app.trace.test_snapshots import PLAIN, PROSE, SNAP, STEPS, snapshot_models

RECORDED = PROSE[:1200]  # the text snapshot_models recorded each step's best units on
ROW = re.compile(r'<tr class="pick-row(?: current)?" data-layer="(\d+)" data-state="(\w+)" data-unit="(\d+)"')


@pytest.fixture(scope="module")
def snap_dir(tmp_path_factory):
    return snapshot_models(tmp_path_factory.mktemp("snapshot-probe"))


@pytest.fixture()
def client(snap_dir):
    with make_client(snap_dir, default_model=SNAP) as c:
        yield c


def probe(client, **body):
    return client.post("/api/v1/probe", json={"model": SNAP, "text": RECORDED, "probe": "quotes", "top": 5, **body})


def test_a_snapshots_ranking_is_its_weights_and_what_the_timeline_recorded(client, snap_dir):
    recorded = {e["step"]: e["probe_units"]["quotes"] for e in read_timeline(snap_dir / SNAP)["snapshots"]}
    tops = {}
    for step in (STEPS[1], STEPS[3], STEPS[-1]):
        r = probe(client, snapshot=step)
        assert r.status_code == 200, r.text
        top = r.json()[0]
        direct = best_units(load_snapshot(snap_dir / SNAP, step), RECORDED, ("quotes",))[0]  # models/, no app
        assert top["score"] == pytest.approx(direct.score, abs=1e-3)
        assert top["score"] == pytest.approx(recorded[step]["score"], abs=1e-3)
        tops[step] = top
    final = probe(client).json()[0]
    scores = {round(t["score"], 4) for t in tops.values()} | {round(final["score"], 4)}
    assert len(scores) > 1  # the steps' rankings are not one ranking served four times


@pytest.mark.parametrize("body, status, message", [
    ({"snapshot": 4}, 404, f"{SNAP} has no snapshot at step 4; its snapshots are at steps {', '.join(map(str, STEPS))}"),
    ({"model": PLAIN, "snapshot": 0}, 404, f"{PLAIN} has no training snapshots"),
    ({"snapshot": -2}, 422, "snapshot: Input should be greater than or equal to 0"),
])
def test_a_bad_step_is_refused(client, body, status, message):
    r = probe(client, **body)
    assert r.status_code == status and r.json()["detail"].startswith(message), r.text


def test_the_panel_ranks_the_step_on_screen(client):
    params = {"model": SNAP, "text": RECORDED, "probe": "quotes", "top": "5"}
    for step in (STEPS[2], STEPS[-1]):
        html = client.get("/ui/find-units", params={**params, "snapshot": str(step)}).text
        api = probe(client, snapshot=step).json()
        first = ROW.search(html)
        assert first, html[:500]
        assert (int(first.group(1)), first.group(3)) == (api[0]["layer"], str(api[0]["unit"]))
    blank = client.get("/ui/find-units", params={**params, "snapshot": ""})  # the form's blank box: final weights
    assert blank.status_code == 200 and ROW.search(blank.text)
    bad = client.get("/ui/find-units", params={**params, "snapshot": "4"})
    assert bad.status_code == 404 and "no snapshot at step 4" in bad.text
    word = client.get("/ui/find-units", params={**params, "snapshot": "x"})
    assert word.status_code == 422 and "the training step must be a whole number" in word.text
