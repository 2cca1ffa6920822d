"""Dynamics JSON API: generate stream (SSE), gradients, scalar RNN, saturation, interventions,
counterfactuals. Exact against models/ on tiny random-weight checkpoints; one specific 4xx per bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from app.dynamics.results import MAX_GENERATE, MAX_INTERVENE_CHARS
from models.checkpoint import load_checkpoint
from models.dynamics import MAX_LOOKBACK, MAX_TOPK, counterfactual, gate_saturation, gradient_flow, intervene
from models.sample import generate
from models.trace import run_trace

from tests.app.conftest import make_client

PRIME = 'She said, "Hi'
QUOTE_TEXT = 'She said, "I shall go." He left. "Why?" she asked.'


def read_events(client, **params) -> list[tuple[str, dict]]:
    """Read the event stream as it arrives (streaming, not one buffered body)."""
    with client.stream("GET", "/api/v1/generate/stream", params=params) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        chunks = list(r.iter_text())
    body = "".join(chunks)
    out = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def generated(events) -> str:
    return "".join(d["ch"] for kind, d in events if kind == "char")


def ckpt(root: Path, name: str):
    return load_checkpoint(root / name)


# ------------------------------------------------------------------ generate (SSE)


def test_stream_events_in_order_and_a_fixed_seed_reproduces_the_models_own_sampler(client, tiny_models_dir):
    params = {"model": "tiny-lstm", "text": PRIME, "n": 40, "temperature": 0.9, "seed": 7, "layer": 1, "state": "c",
              "unit": 3}
    first = read_events(client, **params)
    kinds = [k for k, _ in first]
    assert kinds == ["meta"] + ["char"] * 40 + ["done"]
    meta, done = first[0][1], first[-1][1]
    assert meta["seed"] == 7 and meta["seed_given"] is True and meta["what"] == "c[1][3]"
    assert [d["i"] for k, d in first if k == "char"] == list(range(40))
    text = generated(first)
    assert done["text"] == text and done["n"] == 40 and done["seed"] == 7
    assert generated(read_events(client, **params)) == text  # same seed, same text
    ck = ckpt(tiny_models_dir, "tiny-lstm")
    assert "".join(generate(ck.model, ck.vocab, PRIME, 40, 0.9, seed=7)) == text  # exactly `rnnscope sample`'s run
    assert generated(read_events(client, **{**params, "seed": 8})) != text


@pytest.mark.parametrize("model,layer,state,unit", [
    ("tiny-lstm", 1, "c", 3), ("tiny-lstm", 0, "f", 5), ("tiny-lstm", 1, "kept", 0), ("tiny-gru", 1, "n", 2),
    ("tiny-gru", 0, "z", 1), ("tiny-rnn", 0, "h", 7),
])
def test_each_streamed_value_is_the_traced_value_of_prime_plus_generated_text(client, tiny_models_dir, model, layer,
                                                                              state, unit):
    events = read_events(client, model=model, text=PRIME, n=25, temperature=1.0, seed=3, layer=layer, state=state,
                         unit=unit)
    text = generated(events)
    ck = ckpt(tiny_models_dir, model)
    ref = run_trace(ck.model, ck.vocab, PRIME + text, layers=[layer], states=[state], units=[unit], topk=0)
    expected = ref.states[layer][state][len(PRIME):, 0]
    got = np.array([d["v"] for k, d in events if k == "char"])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    scale = events[0][1]["scale"]
    pos = np.array([d["pos"] for k, d in events if k == "char"])
    assert np.all(np.abs(pos) <= 1.0) and scale["hi"] > 0


def test_greedy_is_deterministic_without_a_seed_and_a_random_seed_is_reported(client, tiny_models_dir):
    a = read_events(client, model="tiny-gru", text=PRIME, n=30, temperature=0)
    b = read_events(client, model="tiny-gru", text=PRIME, n=30, temperature=0)
    assert generated(a) == generated(b)
    ck = ckpt(tiny_models_dir, "tiny-gru")
    assert generated(a) == "".join(generate(ck.model, ck.vocab, PRIME, 30, 0.0))
    free = read_events(client, model="tiny-gru", text=PRIME, n=30, temperature=1.5)
    seed = free[0][1]["seed"]
    assert free[0][1]["seed_given"] is False and isinstance(seed, int)
    again = read_events(client, model="tiny-gru", text=PRIME, n=30, temperature=1.5, seed=seed)
    assert generated(again) == generated(free)  # the reported seed reproduces an unseeded run


def test_stream_defaults_to_the_cards_quote_unit(client):
    meta = read_events(client, model="tiny-lstm", text="Hi", n=1, seed=0)[0][1]
    assert meta["what"] == "c[1][3]"


@pytest.mark.parametrize("params,status,fragment", [
    ({"model": "nope"}, 404, "unknown model 'nope'"),
    ({"text": ""}, 422, "the prime text is empty"),
    ({"n": 0}, 422, "length must be between 1 and 2,000"),
    ({"n": MAX_GENERATE + 1}, 413, "length must be between 1 and 2,000"),
    ({"n": "lots"}, 422, "n:"),
    ({"temperature": -0.5}, 422, "temperature must be between 0 (greedy) and 10"),
    ({"temperature": "nan"}, 422, "temperature must be a finite number"),
    ({"temperature": "inf"}, 422, "temperature must be a finite number"),
    ({"seed": -1}, 422, "seed must be a whole number from 0"),
    ({"layer": 5}, 422, "layer 5 is out of range"),
    ({"state": "q"}, 422, "state 'q' does not exist in a lstm model"),
    ({"unit": 16}, 422, "unit 16 is out of range"),
])
def test_stream_bad_inputs_are_specific_4xx_before_any_event(client, params, status, fragment):
    query = {"model": "tiny-lstm", "text": PRIME, "n": 5, **params}
    r = client.get("/api/v1/generate/stream", params=query)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert fragment in r.json()["detail"]


def test_stream_prime_over_max_chars_is_413(tiny_models_dir):
    with make_client(tiny_models_dir, max_chars=20) as c:
        r = c.get("/api/v1/generate/stream", params={"model": "tiny-lstm", "text": "x" * 21, "n": 3})
    assert r.status_code == 413 and "the limit here is 20" in r.json()["detail"]


# ------------------------------------------------------------------ gradients


def test_gradients_match_models_dynamics_for_each_model(client, tiny_models_dir):
    body = {"models": ["tiny-lstm", "tiny-gru", "tiny-rnn"], "text": QUOTE_TEXT, "position": 30, "lookback": 12}
    r = client.post("/api/v1/gradients", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [f["model"] for f in out["flows"]] == body["models"]
    for flow in out["flows"]:
        ck = ckpt(tiny_models_dir, flow["model"])
        ref = gradient_flow(ck.model, ck.vocab, QUOTE_TEXT, position=30, lookback=12)
        assert flow["start"] == 18 and flow["position"] == 30 and flow["layer"] == ck.config.n_layers - 1
        assert len(flow["jacobian_norm"]) == len(flow["saliency"]) == 13
        np.testing.assert_allclose(flow["jacobian_norm"], ref.jacobian_norm, rtol=1e-5)
        np.testing.assert_allclose(flow["saliency"], ref.saliency, rtol=1e-5)
        # At t = T the Jacobian is the identity: its Frobenius norm is sqrt(H).
        assert flow["jacobian_norm"][-1] == pytest.approx(math.sqrt(ck.config.hidden), rel=1e-5)
        assert flow["target"] == QUOTE_TEXT[31] and flow["cached"] is False
    again = client.post("/api/v1/gradients", json=body).json()
    assert all(f["cached"] for f in again["flows"])
    assert again["flows"][0]["jacobian_norm"] == out["flows"][0]["jacobian_norm"]


def test_gradients_default_position_and_last_position_target(client, tiny_models_dir):
    out = client.post("/api/v1/gradients", json={"models": ["tiny-rnn"], "text": "abcdef"}).json()
    assert out["position"] == 4 and out["flows"][0]["target"] == "f" and out["lookback"] == 50
    last = client.post("/api/v1/gradients", json={"models": ["tiny-rnn"], "text": "abcdef", "position": 5}).json()
    ck = ckpt(tiny_models_dir, "tiny-rnn")
    with torch.no_grad():
        logits, _, _ = ck.model(ck.vocab.encode_tensor("abcdef")[None])
    assert last["flows"][0]["target"] == ck.vocab.chars[int(logits[0, 5].argmax())]


@pytest.mark.parametrize("body,status,fragment", [
    ({"models": ["nope"]}, 404, "unknown model 'nope'"),
    ({"models": []}, 422, "models:"),
    ({"models": ["tiny-lstm", "tiny-gru", "tiny-rnn", "tiny-lstm2"]}, 422, "models:"),
    ({"text": ""}, 422, "the text is empty"),
    ({"position": 99}, 422, "position 99 is out of range: the text has positions 0..5"),
    ({"position": -1}, 422, "position: Input should be greater than or equal to 0"),
    ({"lookback": 0}, 422, "lookback: Input should be greater than or equal to 1"),
    ({"lookback": MAX_LOOKBACK + 1}, 422, f"lookback: Input should be less than or equal to {MAX_LOOKBACK}"),
    ({"colour": "red"}, 422, "colour is not a field of this request"),
])
def test_gradients_bad_inputs(client, body, status, fragment):
    r = client.post("/api/v1/gradients", json={"models": ["tiny-lstm"], "text": "abcdef", **body})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_gradients_duplicate_models_are_compared_once(client):
    out = client.post("/api/v1/gradients", json={"models": ["tiny-rnn", "tiny-rnn"], "text": "abcdef"}).json()
    assert [f["model"] for f in out["flows"]] == ["tiny-rnn"]


# ------------------------------------------------------------------ scalar RNN


def test_toy_defaults_are_the_notes_example(client):
    out = client.get("/api/v1/toy").json()
    h1 = math.tanh(3 * 0 + 2 * 1 + 1)
    h2 = math.tanh(3 * h1 + 1)
    h3 = math.tanh(3 * h2 + 1)
    assert out["xs"] == [1, 0, 0] and out["h"] == pytest.approx([h1, h2, h3])
    # back from h_3 to h_1: tanh' * 3, twice (the notes' point)
    assert out["dhT_dh1"] == pytest.approx((1 - h3**2) * 3 * (1 - h2**2) * 3)
    assert out["dhT_dht"][-1] == 1.0 and out["local"] == pytest.approx([(1 - h * h) * 3 for h in (h1, h2, h3)])


def test_toy_explodes_at_zero_and_overflow_is_null_not_an_error(client):
    out = client.get("/api/v1/toy", params={"w_hh": 3, "w_xh": 0, "b": 0, "xs": ",".join(["0"] * 10)}).json()
    assert out["dhT_dh1"] == pytest.approx(3.0**9)
    huge = client.get("/api/v1/toy", params={"w_hh": 1e6, "w_xh": 0, "b": 0, "xs": " ".join(["0"] * 60)})
    assert huge.status_code == 200, huge.text
    assert huge.json()["dhT_dh1"] is None and huge.json()["dhT_dht"][-1] == 1.0


@pytest.mark.parametrize("params,fragment", [
    ({"w_hh": "nan"}, "w_hh must be a finite number"),
    ({"b": "-inf"}, "b must be a finite number"),
    ({"w_xh": 1e7}, "w_xh must be between"),
    ({"xs": "1, a"}, "input 2 ('a') is not a number"),
    ({"xs": "1 nan"}, "input 2 ('nan') must be a finite number"),
    ({"xs": " , "}, "give at least one input"),
    ({"xs": " ".join(["1"] * 501)}, "give at most 500 inputs"),
    ({"w_hh": "three"}, "w_hh:"),
])
def test_toy_bad_inputs(client, params, fragment):
    r = client.get("/api/v1/toy", params=params)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_toy_needs_no_model(tmp_path):
    with make_client(tmp_path) as c:
        assert c.get("/api/v1/toy").status_code == 200


# ------------------------------------------------------------------ gate saturation


def test_saturation_on_a_given_text_matches_models_dynamics_and_is_cached(client, tiny_models_dir):
    svc_runs = lambda: client.app.state.dynamics.saturation_runs  # noqa: E731
    r = client.get("/api/v1/saturation/tiny-lstm", params={"text": QUOTE_TEXT})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["cell"] == "lstm" and out["chars"] == len(QUOTE_TEXT) and "current text" in out["source"]
    ck = ckpt(tiny_models_dir, "tiny-lstm")
    ref = gate_saturation(ck.model, ck.vocab, QUOTE_TEXT)
    assert [layer["layer"] for layer in out["layers"]] == [0, 1]
    for layer in out["layers"]:
        assert list(layer["gates"]) == ["i", "f", "o"]
        for g, d in layer["gates"].items():
            assert len(d["left"]) == len(d["right"]) == 16
            np.testing.assert_allclose(d["left"], ref[layer["layer"]][g]["left"], atol=1e-6)
            np.testing.assert_allclose(d["right"], ref[layer["layer"]][g]["right"], atol=1e-6)
            assert all(0 <= a + b <= 1 + 1e-6 for a, b in zip(d["left"], d["right"]))
    runs = svc_runs()
    again = client.get("/api/v1/saturation/tiny-lstm", params={"text": QUOTE_TEXT}).json()
    assert again["cached"] is True and svc_runs() == runs
    gru = client.get("/api/v1/saturation/tiny-gru", params={"text": QUOTE_TEXT}).json()
    assert list(gru["layers"][0]["gates"]) == ["r", "z"]


@pytest.mark.parametrize("path,params,status,fragment", [
    ("/api/v1/saturation/tiny-rnn", {"text": "abc"}, 422, "is a vanilla RNN: it has no gates"),
    ("/api/v1/saturation/nope", {}, 404, "unknown model 'nope'"),
    ("/api/v1/saturation/tiny-lstm", {}, 422, "has no held-out text here"),
    ("/api/v1/saturation/tiny-lstm", {"text": ""}, 422, "the text is empty"),
])
def test_saturation_bad_inputs(client, path, params, status, fragment):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


# ------------------------------------------------------------------ interventions


def test_intervene_matches_models_dynamics_and_clamps_from_start(client, tiny_models_dir):
    body = {"model": "tiny-lstm", "text": QUOTE_TEXT, "layer": 1, "state": "c", "unit": 3, "value": 0.5, "start": 11,
            "watch": '"'}
    r = client.post("/api/v1/intervene", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    ck = ckpt(tiny_models_dir, "tiny-lstm")
    ref = intervene(ck.model, ck.vocab, QUOTE_TEXT, 1, "c", 3, 0.5, 11, '"')
    n = len(QUOTE_TEXT)
    assert len(out["surprisal_before"]) == len(out["prob_after"]) == len(out["value_after"]) == n
    np.testing.assert_allclose(out["surprisal_after"][:-1], ref.surprisal_after[:-1], rtol=1e-5)
    np.testing.assert_allclose(out["prob_after"], ref.prob_after, rtol=1e-5)
    assert out["surprisal_before"][-1] is None and out["surprisal_after"][-1] is None
    # Before the clamp nothing changes; from start on the unit holds the clamp value.
    assert out["surprisal_after"][:11] == pytest.approx(out["surprisal_before"][:11], abs=1e-5)
    assert out["value_after"][11:] == pytest.approx([0.5] * (n - 11))
    assert out["mean_bits_before"] == pytest.approx(float(np.nanmean(ref.surprisal_before)), rel=1e-5)


def test_intervene_without_watch_has_null_probabilities(client):
    out = client.post("/api/v1/intervene", json={"model": "tiny-gru", "text": "abc", "layer": 0, "state": "h",
                                                 "unit": 0, "watch": None}).json()
    assert out["prob_before"] == [None, None, None] and out["watch"] is None


def test_intervene_reports_the_top_k_guesses_before_and_after_and_the_largest_changes(client, tiny_models_dir):
    body = {"model": "tiny-lstm", "text": QUOTE_TEXT, "layer": 1, "state": "c", "unit": 3, "value": 2.0, "start": 11}
    out = client.post("/api/v1/intervene", json=body).json()  # topk omitted: 5
    n, k = len(QUOTE_TEXT), 5
    assert out["topk"] == k
    for name in ("topk_before", "topk_after", "top_changes"):
        assert len(out[name]) == n and all(len(row) == k for row in out[name]), name
    assert set(out["topk_before"][0][0]) == {"char", "p"}
    assert set(out["top_changes"][0][0]) == {"char", "before", "after", "change"}
    # before = a plain trace's top-k (the trace API rounds to 4 places)
    trace = client.post("/api/v1/trace", json={"model": "tiny-lstm", "text": QUOTE_TEXT, "layer": 1, "state": "c",
                                               "units": [3], "topk": k}).json()
    assert [[g["char"] for g in row] for row in out["topk_before"]] == [[g["char"] for g in row]
                                                                        for row in trace["topk"]]
    np.testing.assert_allclose([[g["p"] for g in row] for row in out["topk_before"]],
                               [[g["p"] for g in row] for row in trace["topk"]], atol=6e-5)
    # after = models/dynamics on the same checkpoint
    ck = ckpt(tiny_models_dir, "tiny-lstm")
    ref = intervene(ck.model, ck.vocab, QUOTE_TEXT, 1, "c", 3, 2.0, 11, '"', topk=k)
    assert [[g["char"] for g in row] for row in out["topk_after"]] == [[ck.vocab.chars[i] for i in row]
                                                                       for row in ref.topk_ids_after.tolist()]
    np.testing.assert_allclose([[g["p"] for g in row] for row in out["topk_after"]], ref.topk_probs_after, atol=1e-6)
    # before the clamp nothing changes; after it, the largest moves come first
    assert out["topk_after"][:11] == out["topk_before"][:11]
    assert all(c["change"] == 0 for row in out["top_changes"][:11] for c in row)
    for row in out["top_changes"][11:]:
        moves = [abs(c["change"]) for c in row]
        assert moves == sorted(moves, reverse=True) and moves[0] > 0
        for c in row:
            assert c["change"] == pytest.approx(c["after"] - c["before"], abs=2e-6)


def test_intervene_topk_zero_and_the_cap(client):
    body = {"model": "tiny-gru", "text": "abc", "layer": 0, "state": "h", "unit": 0}
    none = client.post("/api/v1/intervene", json={**body, "topk": 0}).json()
    assert none["topk"] == 0 and none["topk_before"] is None and none["topk_after"] is None
    assert none["top_changes"] is None and len(none["surprisal_before"]) == 3  # the rest is unchanged
    most = client.post("/api/v1/intervene", json={**body, "topk": MAX_TOPK}).json()
    assert most["topk"] == MAX_TOPK and all(len(row) == MAX_TOPK for row in most["topk_after"])


@pytest.mark.parametrize("topk,fragment", [
    (MAX_TOPK + 1, f"topk: Input should be less than or equal to {MAX_TOPK}"),
    (1000, f"topk: Input should be less than or equal to {MAX_TOPK}"),
    (-1, "topk: Input should be greater than or equal to 0"),
    ("5", "topk: Input should be a valid integer"),
    (2.5, "topk: Input should be a valid integer"),
])
def test_intervene_topk_over_the_cap_is_a_422_that_says_so(client, topk, fragment):
    body = {"model": "tiny-lstm", "text": QUOTE_TEXT, "layer": 1, "state": "c", "unit": 3, "topk": topk}
    r = client.post("/api/v1/intervene", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_intervene_is_cached_so_a_repeat_runs_no_model(client):
    body = {"model": "tiny-lstm", "text": QUOTE_TEXT, "layer": 1, "state": "h", "unit": 2, "start": 4, "topk": 3}
    first = client.post("/api/v1/intervene", json=body).json()
    svc = client.app.state.dynamics
    misses = svc._interventions.misses
    again = client.post("/api/v1/intervene", json=body).json()
    assert again == first and svc._interventions.misses == misses and svc._interventions.hits >= 1
    other = client.post("/api/v1/intervene", json={**body, "topk": 4}).json()  # topk is part of the key
    assert other["topk"] == 4 and svc._interventions.misses == misses + 1


def test_openapi_documents_the_top_k_fields(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    req = schemas["InterveneRequest"]["properties"]["topk"]
    assert req["default"] == 5 and req["maximum"] == MAX_TOPK and req["minimum"] == 0 and req["description"]
    props = schemas["InterveneResponse"]["properties"]
    for name in ("topk", "topk_before", "topk_after", "top_changes"):
        assert props[name]["description"], name
    for name in ("surprisal_before", "prob_before", "value_after", "mean_bits_after"):  # the old fields stay
        assert name in props
    assert set(schemas["ProbabilityChange"]["properties"]) == {"char", "before", "after", "change"}


@pytest.mark.parametrize("patch,status,fragment", [
    ({"state": "f"}, 422, "only a state can be clamped, not 'f': choose h (the hidden state) or c (the cell state)"),
    ({"model": "tiny-gru", "state": "c"}, 422, "state 'c' does not exist in a gru model"),
    ({"model": "tiny-gru", "state": "z"}, 422, "only a state can be clamped, not 'z': choose h (the hidden state)"),
    ({"model": "nope"}, 404, "unknown model 'nope'"),
    ({"layer": 2}, 422, "layer 2 is out of range"),
    ({"unit": -1}, 422, "unit: Input should be greater than or equal to 0"),
    ({"text": ""}, 422, "the text is empty"),
    ({"start": 99}, 422, "start 99 is out of range"),
    ({"watch": "ab"}, 422, "watch must be exactly one character"),
    ({"watch": "~"}, 422, "never saw '~' in training"),
    ({"text": "a" * (MAX_INTERVENE_CHARS + 1)}, 413,
     f"the text is {MAX_INTERVENE_CHARS + 1:,} characters long; the limit here is {MAX_INTERVENE_CHARS:,}"),
])
def test_intervene_bad_inputs(client, patch, status, fragment):
    body = {"model": "tiny-lstm", "text": QUOTE_TEXT, "layer": 1, "state": "c", "unit": 3, **patch}
    r = client.post("/api/v1/intervene", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_intervene_takes_the_whole_limit_from_any_start_and_says_the_limit_in_its_schema(client):
    body = {"model": "tiny-lstm", "text": ('"Yes," she said. ' * 400)[:MAX_INTERVENE_CHARS], "layer": 0, "state": "h",
            "unit": 1, "start": 0, "topk": 0}
    r = client.post("/api/v1/intervene", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["length"] == MAX_INTERVENE_CHARS
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["InterveneRequest"]["properties"]["text"]["maxLength"] == MAX_INTERVENE_CHARS
    for name in ("original", "edited"):
        assert schemas["CounterfactualRequest"]["properties"][name]["maxLength"] == MAX_INTERVENE_CHARS


def test_intervene_non_finite_value_is_refused(client):
    raw = ('{"model": "tiny-lstm", "text": "abc", "layer": 0, "state": "h", "unit": 0, "value": NaN}')
    r = client.post("/api/v1/intervene", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite number" in r.json()["detail"]  # the body guard or the service says so


def test_counterfactual_aligns_edits_and_matches_models_dynamics(client, tiny_models_dir):
    edited = 'She said, I shall go!! He left.'
    original = 'She said, "I shall go." He left.'
    body = {"model": "tiny-lstm", "original": original, "edited": edited, "layer": 1, "state": "c", "unit": 3}
    out = client.post("/api/v1/counterfactual", json=body).json()
    ck = ckpt(tiny_models_dir, "tiny-lstm")
    ref = counterfactual(ck.model, ck.vocab, original, edited, 1, "c", 3)
    assert out["delta"] == ref.delta and out["edited"] == edited
    assert out["unaligned"] == sum(d is None for d in ref.delta) >= 2  # "!!" replaced '."'
    assert out["delta"][:10] == [0.0] * 10  # identical prefix: identical values
    same = client.post("/api/v1/counterfactual", json={**body, "edited": original}).json()
    assert same["unaligned"] == 0 and all(d == 0.0 for d in same["delta"])


@pytest.mark.parametrize("patch,status,fragment", [
    ({"edited": ""}, 422, "the edited text is empty"),
    ({"original": ""}, 422, "the original text is empty"),
    ({"original": "x" * 5001}, 413, "the original text is 5,001 characters long; the limit here is 5,000"),
    ({"layer": 9}, 422, "layer 9 is out of range"),
    ({"state": "zz"}, 422, "state 'zz' does not exist"),
    ({"model": "nope"}, 404, "unknown model"),
])
def test_counterfactual_bad_inputs(client, patch, status, fragment):
    body = {"model": "tiny-lstm", "original": "abc", "edited": "abd", "layer": 0, "state": "h", "unit": 0, **patch}
    r = client.post("/api/v1/counterfactual", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


# ------------------------------------------------------------------ schema and robustness


def test_openapi_lists_the_dynamics_routes(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/v1/gradients", "/api/v1/toy", "/api/v1/saturation/{model}", "/api/v1/intervene",
                 "/api/v1/counterfactual", "/api/v1/generate/stream"):
        assert path in paths, path
    assert "text/event-stream" in paths["/api/v1/generate/stream"]["get"]["responses"]["200"]["content"]
    assert "GradientsRequest" in spec["components"]["schemas"]


@pytest.mark.parametrize("method,path,payload", [
    ("post", "/api/v1/gradients", {"models": "tiny-lstm", "text": 5}),
    ("post", "/api/v1/gradients", {"models": ["tiny-lstm"], "text": "ab", "position": 1e30}),
    ("post", "/api/v1/intervene", {"model": "tiny-lstm", "text": "ab", "layer": 0, "state": "h", "unit": 0,
                                   "start": 10**30}),
    ("post", "/api/v1/intervene", {"model": "tiny-lstm", "text": "ab", "layer": 10**30, "state": "h", "unit": 0}),
    ("post", "/api/v1/counterfactual", {"model": "tiny-lstm", "original": "a", "edited": 5, "layer": 0,
                                        "state": "h", "unit": 0}),
    ("post", "/api/v1/counterfactual", [1, 2]),
    ("get", "/api/v1/toy?xs=" + "9" * 400, None),
    ("get", "/api/v1/generate/stream?model=tiny-lstm&text=a&n=99999999999999999999999", None),
])
def test_odd_inputs_never_reach_a_500(client, method, path, payload):
    r = client.post(path, json=payload) if method == "post" else client.get(path)
    assert 400 <= r.status_code < 500, r.text
    assert isinstance(r.json()["detail"], str)


def test_a_run_slower_than_the_limit_is_a_503_and_is_stopped(tiny_models_dir):
    body = {"models": ["tiny-lstm"], "text": QUOTE_TEXT, "lookback": 40}
    with make_client(tiny_models_dir, trace_timeout=0.001) as c:
        r = c.post("/api/v1/gradients", json=body)
        assert r.status_code == 503, r.text
        assert "took longer than the 0.001 s limit and was stopped" in r.json()["detail"] and r.headers["retry-after"]
        page = c.get("/gradients", params={"text": QUOTE_TEXT, "lookback": "39", "compare": "tiny-lstm"},
                     headers={"HX-Request": "true"})
        assert page.status_code == 200 and "took longer than" in page.text and "Try again" in page.text
        slots = c.app.state.service.slots
        assert slots._free._free == slots.slots  # the stopped runs hold no slot
        svc = c.app.state.dynamics
        assert len(svc._flows) == 0  # and left nothing half-done in the cache


@pytest.mark.parametrize("value", [1e39, -3.4e38, 10_000.5])
def test_a_clamp_value_beyond_the_bound_is_a_422_not_a_500(client, value):
    r = client.post("/api/v1/intervene", json={"model": "tiny-lstm", "text": "a \"quoted\" text", "layer": 0,
                                               "state": "h", "unit": 1, "value": value})
    assert r.status_code == 422, r.text
    assert "less than or equal to 10000" in r.text or "greater than or equal to -10000" in r.text


def test_the_clamp_bound_itself_is_served(client):
    r = client.post("/api/v1/intervene", json={"model": "tiny-lstm", "text": "a \"quoted\" text", "layer": 0,
                                               "state": "h", "unit": 1, "value": 10_000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mean_bits_after"] is None or math.isfinite(body["mean_bits_after"])
