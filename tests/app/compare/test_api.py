"""POST /api/v1/match: each model's units ranked by |Pearson r| with the anchor's values equal an independent
numpy correlation of every column of every state; the anchor matches itself; probe matching equals
POST /api/v1/probe; the cost is one ranking per model beyond the traces; every bad input has its own 4xx."""

from __future__ import annotations

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from models.trace import run_trace

from tests.app.conftest import make_client
from tests.share.slots import slot_held

TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?" (she asked, [twice]). "No," he said.'
ANCHOR = {"model": "tiny-lstm", "layer": 1, "state": "c", "unit": 3}


def blocks(models_dir, name: str, text: str) -> dict:
    """Every (layer, state) block as the server's cache holds it (float16, lazy whole trace)."""
    ck = load_checkpoint(models_dir / name)
    tr = run_trace(ck.model, ck.vocab, text, topk=0, half=True, lazy=True)
    return {(k, s): a for k, per in tr.states.items() for s, a in per.arrays().items()}


def correlations(anchor: np.ndarray, found: dict) -> dict[tuple[int, str, int], float]:
    """Pearson r of every column with the anchor, in float64, by the textbook formula (0 for a constant column)."""
    y = anchor.astype(np.float64) - anchor.astype(np.float64).mean()
    out = {}
    for (layer, state), block in found.items():
        x = block.astype(np.float64)
        xc = x - x.mean(axis=0)
        den = np.sqrt((xc ** 2).sum(axis=0)) * np.sqrt((y ** 2).sum())
        r = np.where(den > 1e-9, (xc * y[:, None]).sum(axis=0) / np.where(den > 1e-9, den, 1), 0.0)
        for unit, v in enumerate(r.tolist()):
            out[(layer, state, unit)] = v
    return out


def match(client, **body):
    return client.post("/api/v1/match", json={"text": TEXT, "anchor": ANCHOR, "models": ["tiny-gru"], **body})


@pytest.mark.parametrize("target", ["tiny-gru", "tiny-rnn"])
def test_matches_equal_a_numpy_correlation_with_every_unit(client, tiny_models_dir, target):
    r = match(client, models=[target], top=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["anchor"] == ANCHOR and body["probe"] is None and body["length"] == len(TEXT)
    [m] = body["matches"]
    assert m["model"] == target
    anchor = blocks(tiny_models_dir, "tiny-lstm", TEXT)[(1, "c")][:, 3]
    found = blocks(tiny_models_dir, target, TEXT)
    rs = correlations(anchor, found)
    assert m["scored"] == len(rs)
    units = m["units"]
    assert len(units) == min(6, len({(la, u) for la, _, u in rs}))
    # best first, |r| = score, sign kept, each (layer, unit) once at its best-correlating state
    assert [u["score"] for u in units] == sorted((u["score"] for u in units), reverse=True)
    assert len({(u["layer"], u["unit"]) for u in units}) == len(units)
    for u in units:
        expected = rs[(u["layer"], u["state"], u["unit"])]
        assert u["metric"] == "pearson"
        assert u["r"] == pytest.approx(expected, abs=1e-4)
        assert u["score"] == pytest.approx(abs(expected), abs=1e-4) and u["sign"] == (1 if expected >= 0 else -1)
        best_state = max((abs(v) for (la, s, un), v in rs.items() if (la, un) == (u["layer"], u["unit"])))
        assert u["score"] == pytest.approx(best_state, abs=1e-4)
    # nothing left out scores higher than the best one, and each unit left out scores at most the last one
    assert units[0]["score"] == pytest.approx(max(abs(v) for v in rs.values()), abs=1e-4)
    listed = {(u["layer"], u["unit"]) for u in units}
    rest = max((abs(v) for (la, s, un), v in rs.items() if (la, un) not in listed), default=0.0)
    assert rest <= units[-1]["score"] + 1e-4


def test_the_anchor_matches_itself_in_its_own_model(client):
    m = match(client, models=["tiny-lstm"]).json()["matches"][0]
    assert (m["units"][0]["layer"], m["units"][0]["state"], m["units"][0]["unit"]) == (1, "c", 3)
    assert m["units"][0]["r"] == pytest.approx(1.0, abs=1e-6)


def test_matches_come_in_the_order_asked_and_duplicates_once(client):
    body = match(client, models=["tiny-rnn", "tiny-gru", "tiny-rnn"]).json()
    assert [m["model"] for m in body["matches"]] == ["tiny-rnn", "tiny-gru"]


def test_matching_costs_one_ranking_per_model_beyond_the_traces(client):
    compare = client.app.state.compare
    traces = client.app.state.service
    runs, ranks = traces.traces_run, compare.rankings_run
    text = TEXT + " Once more."
    body = match(client, text=text, models=["tiny-gru", "tiny-rnn"]).json()
    assert traces.traces_run - runs == 3  # the anchor's model and the two others, once each
    assert compare.rankings_run - ranks == 2  # one ranking per model matched
    assert all(not m["cached"] for m in body["matches"])
    again = match(client, text=text, models=["tiny-gru", "tiny-rnn"]).json()
    assert traces.traces_run - runs == 3 and compare.rankings_run - ranks == 2  # nothing runs twice
    assert all(m["cached"] for m in again["matches"])
    assert [m["units"] for m in again["matches"]] == [m["units"] for m in body["matches"]]
    # a page view of the same text already traced: the match runs no model
    client.get("/", params={"model": "tiny-lstm", "text": text + "!"})
    runs = traces.traces_run
    match(client, text=text + "!", models=["tiny-lstm"])
    assert traces.traces_run == runs


@pytest.mark.parametrize("probe", ["quotes", "line_position"])
def test_matching_by_probe_equals_the_probe_ranking_of_each_model(client, probe):
    body = client.post("/api/v1/match", json={"text": TEXT, "probe": probe, "models": ["tiny-lstm", "tiny-gru"],
                                              "top": 3}).json()
    assert body["anchor"] is None and body["probe"] == probe
    for m in body["matches"]:
        ranked = client.post("/api/v1/probe", json={"model": m["model"], "text": TEXT, "probe": probe,
                                                    "top": 40}).json()
        firsts, seen = [], set()
        for u in ranked:  # the probe ranking's columns, each (layer, unit) once: its units
            if (u["layer"], u["unit"]) not in seen:
                seen.add((u["layer"], u["unit"]))
                firsts.append({k: u[k] for k in ("layer", "state", "unit", "score", "sign", "metric")})
        got = [{k: u[k] for k in ("layer", "state", "unit", "score", "sign", "metric")} for u in m["units"]]
        assert got == firsts[:3]
        for u in m["units"]:
            assert u["r"] == (None if u["metric"] == "auc" else pytest.approx(u["sign"] * u["score"]))


def test_unseen_characters_are_counted_and_many_of_them_noted(client):
    few = client.post("/api/v1/match", json={"text": TEXT + "~", "anchor": ANCHOR, "models": ["tiny-gru"]}).json()
    assert few["matches"][0]["unseen"] == 3 and few["matches"][0]["note"] is None  # [, ] and ~: 3 of 96, under 5%
    text = 'He said "€€€ ~~~ ok" twice, then "fine".'
    many = client.post("/api/v1/match", json={"text": text, "anchor": ANCHOR, "models": ["tiny-gru"]}).json()
    m = many["matches"][0]
    assert m["unseen"] == 6
    assert m["note"].startswith("tiny-gru never saw 6 of these 40 characters (15%: '€' '~')")
    assert "reads each as its unknown character" in m["note"]


@pytest.mark.parametrize("body, status, fragment", [
    ({"models": ["nope"]}, 404, "nope"),
    ({"anchor": {**ANCHOR, "model": "nope"}}, 404, "nope"),
    ({"models": ["tiny-gru", "tiny-rnn", "tiny-lstm", "a", "b"]}, 422, "models: compare at most 4 models at once, got 5"),
    ({"models": []}, 422, "models: name at least one model to find matches in"),
    ({"anchor": {**ANCHOR, "unit": 16}}, 422, "unit"),
    ({"anchor": {**ANCHOR, "layer": 2}}, 422, "layer"),
    ({"anchor": {**ANCHOR, "model": "tiny-gru", "state": "c"}}, 422, "state"),
    ({"text": ""}, 422, "the text is empty"),
    ({"text": "x" * 20_001}, 413, "the limit is 20,000"),
    ({"text": "a"}, 422, "at every character of this text, so nothing can match it"),
    ({"probe": "quotes"}, 422, "give either an anchor unit"),
    ({"anchor": None}, 422, "give either an anchor unit"),
    ({"anchor": None, "probe": "nope"}, 422, "unknown probe 'nope'"),
    ({"anchor": None, "probe": "regex"}, 422, "the regex probe needs a pattern"),
    ({"anchor": None, "probe": "quotes", "text": "no quotes here"}, 422, "no character of this text is inside double quotes"),
    ({"top": 0}, 422, "top"),
    ({"extra": 1}, 422, "extra is not a field of this request"),
])
def test_every_bad_input_has_its_own_refusal(client, body, status, fragment):
    r = match(client, **body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_a_busy_server_answers_503_with_retry_after(tiny_models_dir):
    with make_client(tiny_models_dir, max_concurrent_traces=1, queue_timeout=0.2) as c:
        with slot_held(c.app.state.service.slots):  # another request's model run holds the only slot
            r = match(c, text="A text nobody traced yet.")
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert "the server is busy" in r.json()["detail"]


def test_the_operation_is_documented_with_its_bounds(client):
    schema = client.get("/openapi.json").json()
    op = schema["paths"]["/api/v1/match"]["post"]
    assert {"200", "404", "413", "422", "503"} <= set(op["responses"])
    props = schema["components"]["schemas"]["MatchRequest"]["properties"]
    assert (props["models"]["minItems"], props["models"]["maxItems"]) == (1, 4)
    assert (props["top"]["minimum"], props["top"]["maximum"]) == (1, 50)
