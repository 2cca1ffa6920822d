"""POST /api/v1/probe and /api/v1/span: rankings equal models.probes run directly on the trace,
reuse the page's cached trace, and answer every bad input with its own 4xx message."""

from __future__ import annotations

import numpy as np
import pytest

from models import probes
from models.checkpoint import load_checkpoint
from models.trace import run_trace

from tests.app.conftest import make_client

TEXT = 'She said, "I shall go." He said nothing.\nThen: "Why?" (she asked, [twice]).'


def _blocks(models_dir, name: str, text: str) -> dict:
    ck = load_checkpoint(models_dir / name)
    tr = run_trace(ck.model, ck.vocab, text, topk=0, half=True, lazy=True)  # what the cache holds
    return {(k, s): a for k, per in tr.states.items() for s, a in per.arrays().items()}


def _as_dicts(units) -> list[dict]:
    return [{"layer": u.layer, "state": u.state, "unit": u.unit, "score": u.score, "sign": u.sign, "metric": u.metric,
             "roughness": round(u.roughness, 6) if u.roughness is not None and np.isfinite(u.roughness) else None}
            for u in units]


@pytest.mark.parametrize("model, probe, pattern", [
    ("tiny-lstm", "quotes", None),
    ("tiny-gru", "brackets", None),
    ("tiny-lstm", "line_position", None),
    ("tiny-rnn", "regex", r"[A-Z]\w+"),
    ("tiny-lstm", "short_string", None),
])
def test_probe_ranking_equals_rank_units_on_every_unit(client, tiny_models_dir, model, probe, pattern):
    r = client.post("/api/v1/probe", json={"model": model, "text": TEXT, "probe": probe, "pattern": pattern, "top": 7})
    assert r.status_code == 200, r.text
    blocks = _blocks(tiny_models_dir, model, TEXT)
    kind = probes.PROBES[probe].kind
    expected = probes.rank_units(blocks, probes.labels(probe, TEXT, pattern), kind, top=7)
    assert r.json() == _as_dicts(expected)
    assert len(r.json()) == 7
    scores = [u["score"] for u in r.json()]
    assert scores == sorted(scores, reverse=True)


def test_top_quotes_unit_has_the_auc_a_pairwise_count_gives(client, tiny_models_dir):
    """An independent check of the best row: P(x_inside > x_outside) counted pair by pair."""
    best = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": TEXT, "probe": "quotes"}).json()[0]
    x = _blocks(tiny_models_dir, "tiny-lstm", TEXT)[(best["layer"], best["state"])][:, best["unit"]].astype(np.float64)
    inside = probes.quotes(TEXT)
    pos, neg = x[inside], x[~inside]
    auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert best["metric"] == "auc"
    assert best["sign"] == (1 if auc >= 0.5 else -1)
    assert best["score"] == pytest.approx(max(auc, 1 - auc), abs=1e-4)
    # and no unit of any state scores higher
    for (layer, state), block in _blocks(tiny_models_dir, "tiny-lstm", TEXT).items():
        for u in range(block.shape[1]):
            col = block[:, u].astype(np.float64)
            p, n = col[inside], col[~inside]
            a = ((p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()) / (len(p) * len(n))
            assert max(a, 1 - a) <= best["score"] + 1e-4, (layer, state, u)


def test_probe_reuses_the_pages_cached_trace(client, service):
    client.get("/", params={"model": "tiny-lstm", "text": TEXT, "layer": "0", "state": "h", "unit": "1"})
    runs = service.traces_run
    r = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": TEXT, "probe": "vowel"})
    s = client.post("/api/v1/span", json={"model": "tiny-lstm", "text": TEXT, "start": 10, "end": 22})
    assert r.status_code == 200 and s.status_code == 200
    assert service.traces_run == runs  # the model did not run again


def test_long_texts_rank_layer_by_layer_with_the_same_result(tiny_models_dir):
    text = (TEXT + "\n") * 6
    with make_client(tiny_models_dir) as whole, make_client(tiny_models_dir, cache_bytes=20_000) as per_layer:
        svc = per_layer.app.state.service
        assert not svc.fits_whole(svc.registry.get("tiny-lstm"), len(text))
        body = {"model": "tiny-lstm", "text": text, "probe": "quotes", "top": 12}
        a = whole.post("/api/v1/probe", json=body)
        b = per_layer.post("/api/v1/probe", json=body)
        assert a.status_code == b.status_code == 200
        assert a.json() == b.json()
        assert svc.traces_run == 2  # one pass per layer, nothing held
        span = {"model": "tiny-lstm", "text": text, "start": 5, "end": 40, "threshold": 0.1, "top": 9}
        assert whole.post("/api/v1/span", json=span).json() == per_layer.post("/api/v1/span", json=span).json()


def test_span_ranking_matches_span_scores(client, tiny_models_dir):
    start, end, threshold = TEXT.index('"'), TEXT.index('."') + 2, 0.2
    r = client.post("/api/v1/span", json={"model": "tiny-gru", "text": TEXT, "start": start, "end": end,
                                          "threshold": threshold, "top": 10})
    assert r.status_code == 200, r.text
    got = r.json()
    blocks = _blocks(tiny_models_dir, "tiny-gru", TEXT)  # a GRU's states are all bounded: the scale's end is 1
    inside = np.zeros(len(TEXT), dtype=bool)
    inside[start + 1:end - 1] = True  # the span's first and last characters count on neither side
    edges = np.zeros(len(TEXT), dtype=bool)
    edges[[start, end - 1]] = True
    diffs = {}
    for k, b in blocks.items():
        on = b.astype(np.float64) > threshold
        for u, d in enumerate(on[inside].mean(axis=0) - on[~inside & ~edges].mean(axis=0)):
            diffs[(k, u)] = float(d)
    best = max(abs(d) for d in diffs.values())
    assert got[0]["score"] == pytest.approx(best, abs=1e-6)
    for row in got:
        d = diffs[((row["layer"], row["state"]), row["unit"])]
        assert row["metric"] == "span" and row["score"] == pytest.approx(abs(d), abs=1e-6)
        assert row["sign"] == (1 if d >= 0 else -1)
    assert [row["score"] for row in got] == sorted((row["score"] for row in got), reverse=True)
    # the reverse direction (off inside, on outside) ranks too: some unit with sign -1 at a lower threshold
    rows = client.post("/api/v1/span", json={"model": "tiny-gru", "text": TEXT, "start": start, "end": end,
                                             "threshold": -0.5, "top": 200}).json()
    assert {row["sign"] for row in rows} == {1, -1}


def test_threshold_changes_the_span_ranking(client):
    body = {"model": "tiny-lstm", "text": TEXT, "start": 11, "end": 22, "top": 5}
    low = client.post("/api/v1/span", json={**body, "threshold": 0.0}).json()
    high = client.post("/api/v1/span", json={**body, "threshold": 0.5}).json()
    assert low != high


@pytest.mark.parametrize("body, status, fragment", [
    ({"probe": "nope"}, 422, "unknown probe 'nope': choose one of quotes, brackets"),
    ({"probe": "regex"}, 422, "the regex probe needs a pattern"),
    ({"probe": "regex", "pattern": "("}, 422, "invalid regular expression: missing )"),
    ({"probe": "regex", "pattern": "zzz+q"}, 422, "the pattern matches nowhere in this text"),
    ({"probe": "regex", "pattern": r"[\s\S]"}, 422, "the pattern matches the whole of this text"),
    ({"probe": "quotes", "text": "no quotes here"}, 422, "no character of this text is inside double quotes"),
    ({"probe": "vowel", "text": "aeiou"}, 422, "every character of this text is a vowel"),
    ({"probe": "long_string", "text": "x = 'one' + \"two\"\n"}, 422,
     "no character of this text is inside a triple-quoted string literal"),
    ({"probe": "short_string", "text": "def f():\n    \"\"\"Only a docstring.\"\"\"\n"}, 422,
     "no character of this text is inside a one-quote string literal"),
    ({"probe": "indent", "text": "flat\ntext"}, 422, "the indent probe (indentation of the current line) is 0 at every"),
    ({"probe": "quotes", "text": ""}, 422, "the text is empty"),
    ({"probe": "quotes", "model": "nope"}, 404, "unknown model 'nope'"),
    ({"probe": "quotes", "top": 0}, 422, "top: Input should be greater than or equal to 1"),
    ({"probe": "quotes", "top": 500}, 422, "top: Input should be less than or equal to 200"),
    ({"probe": "quotes", "colour": "red"}, 422, "colour is not a field of this request"),
    ({"probe": 3}, 422, "probe: Input should be a valid string"),
])
def test_each_bad_probe_request_gets_its_own_message(client, body, status, fragment):
    r = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": TEXT, **body})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_catastrophic_regex_is_stopped_with_a_message(client):
    r = client.post("/api/v1/probe", json={"model": "tiny-rnn", "text": "a" * 40 + " b", "probe": "regex",
                                           "pattern": r"(?:(a|aa)+)+\d"})
    assert r.status_code == 422
    assert "took longer than 0.5s" in r.json()["detail"] and "catastrophic backtracking" in r.json()["detail"]


@pytest.mark.parametrize("body, fragment", [
    ({"start": 4, "end": 4}, "the selected span is empty"),
    ({"start": 9, "end": 4}, "the span starts at 9 and ends at 4: end must come after start"),
    ({"start": 0, "end": 999}, f"the span ends at character 999 but the text has {len(TEXT)} characters"),
    ({"start": -1, "end": 4}, "start: Input should be greater than or equal to 0"),
    ({"start": 0, "end": 0}, "end: Input should be greater than or equal to 1"),
    ({"start": 0, "end": len(TEXT)}, "the span covers the whole text"),
    ({"start": 1, "end": 4, "threshold": 50}, "no unit is above the threshold 50 more often inside the span"),
    ({"start": 1, "end": 4, "threshold": "high"}, "threshold: Input should be a valid number"),
    ({"start": 1}, "end: Field required"),
])
def test_each_bad_span_request_gets_its_own_message(client, body, fragment):
    r = client.post("/api/v1/span", json={"model": "tiny-lstm", "text": TEXT, **body})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_openapi_describes_the_probe_routes(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/probe", "/api/v1/span", "/api/v1/neurons/{model}/{layer}/{state}/{unit}"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"ProbeRequest", "SpanRequest", "UnitRank", "NeuronResponse"} <= set(schemas)
    assert set(schemas["UnitRank"]["properties"]) == {"layer", "state", "unit", "score", "sign", "metric", "roughness"}
    assert "colour scale" in schemas["SpanRequest"]["properties"]["threshold"]["description"]
    assert "/ui/find-units" not in spec["paths"] and not any(p.startswith("/neuron/") for p in spec["paths"])


def test_span_threshold_is_a_place_on_each_units_colour_scale(client, tiny_models_dir):
    """h and the gates compare their values with the threshold; c and kept their value over the end of the
    colour scale the main view gives that unit on this text (app.ui.scale.neuron_scale), unit by unit."""
    from app.ui.scale import neuron_scale

    start, end, threshold = TEXT.index('"'), TEXT.index('."') + 2, 0.4
    got = client.post("/api/v1/span", json={"model": "tiny-lstm", "text": TEXT, "start": start, "end": end,
                                            "threshold": threshold, "top": 200}).json()
    blocks = _blocks(tiny_models_dir, "tiny-lstm", TEXT)
    inside = np.zeros(len(TEXT), dtype=bool)
    inside[start + 1:end - 1] = True
    outside = np.ones(len(TEXT), dtype=bool)
    outside[start:end] = False
    want = {}
    for (layer, state), b in blocks.items():
        for u in range(b.shape[1]):
            col = b[:, u].astype(np.float32)
            on = col.astype(np.float64) > threshold * neuron_scale(state, col).hi
            want[(layer, state, u)] = float(on[inside].mean() - on[outside].mean())
    ends = {s: neuron_scale(s, blocks[(1, s)][:, 0].astype(np.float32)).hi for s in ("h", "c")}
    assert ends["h"] == 1.0 and ends["c"] != 1.0  # this test means something: c's scale is not the value's
    for row in got:
        d = want[(row["layer"], row["state"], row["unit"])]
        assert row["score"] == pytest.approx(abs(d), abs=1e-6) and row["sign"] == (1 if d >= 0 else -1)
    assert [r["score"] for r in got[:5]] == pytest.approx(sorted((abs(d) for d in want.values()), reverse=True)[:5],
                                                          abs=1e-6)


def test_screen_ends_are_what_neuron_scale_gives_each_column():
    from app.probe.service import screen_ends
    from app.ui.scale import neuron_scale

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(400, 300)) * rng.uniform(0.01, 40, size=300)).astype(np.float16)
    x[5, 7] = np.float16(np.inf)
    x[:, 9] = np.float16(np.nan)
    ends = screen_ends("c", x)
    assert ends.shape == (300,)
    for u in (0, 7, 9, 150, 299):
        assert ends[u] == neuron_scale("c", x[:, u].astype(np.float32)).hi
    assert screen_ends("h", x) == 1.0 and screen_ends("f", x) == 1.0
