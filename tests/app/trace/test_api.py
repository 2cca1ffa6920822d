"""JSON API: shapes, exactness against models.trace, and one specific 4xx per bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from models.trace import run_trace

from tests.app.conftest import make_client

TEXT = 'She said, "Hi~there." €'


def test_models_lists_every_tiny_model_with_its_card(client):
    r = client.get("/api/v1/models")
    assert r.status_code == 200
    by_name = {m["name"]: m for m in r.json()}
    assert set(by_name) == {"tiny-lstm", "tiny-gru", "tiny-rnn"}
    lstm = by_name["tiny-lstm"]
    assert lstm == {"name": "tiny-lstm", "cell": "lstm", "layers": 2, "hidden": 16, "vocab_size": lstm["vocab_size"],
                    "val_bpc": 6.25, "corpus": "tiny", "states": ["h", "c", "i", "f", "g", "o", "kept", "written"],
                    "imported": False, "snapshots": []}
    assert by_name["tiny-gru"]["states"] == ["h", "r", "z", "n"]
    assert by_name["tiny-rnn"]["states"] == ["h"] and by_name["tiny-rnn"]["layers"] == 1


def test_trace_everything_when_layer_state_units_are_omitted(client):
    r = client.post("/api/v1/trace", json={"model": "tiny-gru", "text": TEXT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-gru" and body["text"] == TEXT and body["length"] == len(TEXT)
    assert [layer["layer"] for layer in body["layers"]] == [0, 1]
    for layer in body["layers"]:
        assert list(layer["states"]) == ["h", "r", "z", "n"]
        for values in layer["states"].values():
            assert len(values) == len(TEXT) and all(len(row) == 16 for row in values)
    assert len(body["topk"]) == len(TEXT) and len(body["topk"][0]) == 5
    assert body["surprisal_bits"][-1] is None and all(isinstance(s, float) for s in body["surprisal_bits"][:-1])
    assert body["unknown_positions"] == [TEXT.index("~"), TEXT.index("€")]


def test_trace_values_match_the_trace_engine(client, tiny_models_dir):
    r = client.post("/api/v1/trace", json={"model": "tiny-lstm", "text": TEXT, "layer": 1, "state": "c",
                                           "units": [3, 0], "topk": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["units"] == [3, 0]
    values = np.array(body["layers"][0]["states"]["c"])  # (T, 2)
    ck = load_checkpoint(tiny_models_dir / "tiny-lstm")
    ref = run_trace(ck.model, ck.vocab, TEXT, layers=[1], states=["c"], units=[3, 0], topk=2)
    np.testing.assert_allclose(values, ref.states[1]["c"], atol=2e-3, rtol=2e-3)  # float16 + 4 decimals
    top = body["topk"][0]
    assert [p["char"] for p in top] == [ck.vocab.chars[i] for i in ref.topk_ids[0]]
    assert top[0]["p"] == pytest.approx(float(ref.topk_probs[0][0]), abs=1e-3)
    s = ref.surprisal_bits
    assert body["surprisal_bits"][:-1] == pytest.approx([float(x) for x in s[:-1]], abs=1e-3)
    assert math.isnan(s[-1])


def test_topk_zero_and_topk_beyond_the_cached_five(client):
    r0 = client.post("/api/v1/trace", json={"model": "tiny-rnn", "text": "abc", "topk": 0})
    assert r0.status_code == 200 and r0.json()["topk"] is None
    r9 = client.post("/api/v1/trace", json={"model": "tiny-rnn", "text": "abc", "topk": 9})
    assert r9.status_code == 200 and len(r9.json()["topk"][0]) == 9


def test_second_identical_request_is_served_from_the_cache(client, service):
    payload = {"model": "tiny-lstm", "text": "cache me", "layer": 0, "state": "h"}
    first = client.post("/api/v1/trace", json=payload).json()
    runs = service.traces_run
    second = client.post("/api/v1/trace", json={**payload, "units": [1], "state": "f"}).json()
    assert first["cached"] is False and second["cached"] is True
    assert service.traces_run == runs


@pytest.mark.parametrize(
    "payload, status, fragment",
    [
        ({"model": "tiny-lstm", "text": ""}, 422, "text is empty"),
        ({"model": "nope", "text": "a"}, 404, "unknown model 'nope'"),
        ({"model": "../tiny-lstm", "text": "a"}, 404, "unknown model"),
        ({"model": "tiny-lstm/../tiny-gru", "text": "a"}, 404, "unknown model"),
        ({"model": "/etc/passwd", "text": "a"}, 404, "unknown model"),
        ({"model": "tiny-lstm", "text": "a", "layer": 2}, 422, "layer 2 is out of range"),
        ({"model": "tiny-lstm", "text": "a", "layer": -1}, 422, "layer: Input should be greater than or equal to 0"),
        ({"model": "tiny-lstm", "text": "a", "units": [16]}, 422, "unit 16 is out of range"),
        ({"model": "tiny-lstm", "text": "a", "units": []}, 422, "units: List should have at least 1 item"),
        ({"model": "tiny-gru", "text": "a", "state": "c"}, 422, "state 'c' does not exist in a gru model"),
        ({"model": "tiny-rnn", "text": "a", "state": "kept"}, 422, "does not exist in a rnn model"),
        ({"model": "tiny-lstm", "text": "a", "topk": -1}, 422, "topk"),
        ({"model": "tiny-lstm", "text": 5}, 422, "text"),
        ({"model": "tiny-lstm", "text": "a", "layer": "one"}, 422, "layer"),
        ({"model": "tiny-lstm", "text": "a", "colour": "red"}, 422, "colour is not a field"),
        ({"text": "a"}, 422, "model: Field required"),
        ([1, 2], 422, "must be a JSON object"),
    ],
)
def test_each_bad_input_gets_its_own_message(client, payload, status, fragment):
    r = client.post("/api/v1/trace", json=payload)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and fragment in detail


def test_malformed_and_missing_json_bodies(client):
    r = client.post("/api/v1/trace", content=b'{"model": "tiny-lstm", "text": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("the request body is not valid JSON")
    r = client.post("/api/v1/trace")
    assert r.status_code == 422 and "request body is missing" in r.json()["detail"]


def test_text_length_cap_is_configurable_and_says_the_numbers(tiny_models_dir):
    with make_client(tiny_models_dir, max_chars=10) as c:
        assert c.post("/api/v1/trace", json={"model": "tiny-rnn", "text": "x" * 10}).status_code == 200
        r = c.post("/api/v1/trace", json={"model": "tiny-rnn", "text": "x" * 11})
        assert r.status_code == 413
        assert r.json()["detail"] == "the text is 11 characters long; the limit is 10: shorten it"


def test_too_many_values_is_refused_before_any_work(tiny_models_dir):
    with make_client(tiny_models_dir, max_api_values=1000) as c:
        r = c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "x" * 20})  # 20*2*8*16 values
        assert r.status_code == 413 and "5,120 values; the limit is 1,000" in r.json()["detail"]
        assert c.app.state.service.traces_run == 0
        ok = c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "x" * 20, "layer": 0, "state": "h", "units": [1]})
        assert ok.status_code == 200


def test_healthz_is_cheap_and_counts_models(client, service):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "models": 3}
    assert service.traces_run == 0


def test_openapi_describes_the_api_and_docs_page_is_self_hosted(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/models", "/api/v1/trace", "/healthz"} <= set(spec["paths"])
    assert "TraceRequest" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    assert "<script>" not in docs.text  # only src= scripts: the CSP forbids inline ones
