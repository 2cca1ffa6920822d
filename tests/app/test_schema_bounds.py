"""The bounds the API enforces are in its OpenAPI schema, so a schema-valid request is not refused for them
(schemathesis found `units: []`, empty spans and negative layers valid by the schema but refused)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from models.dynamics import MAX_LOOKBACK


@pytest.fixture(scope="module")
def schema(tiny_models_dir, tmp_path_factory) -> dict:
    app = create_app(Settings(models_dir=tiny_models_dir, data_dir=tmp_path_factory.mktemp("data")))
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


def props(schema: dict, name: str) -> dict:
    return schema["components"]["schemas"][name]["properties"]


def nullable(prop: dict) -> dict:
    return next(p for p in prop["anyOf"] if p.get("type") != "null")


def test_trace_request_bounds(schema):
    p = props(schema, "TraceRequest")
    assert nullable(p["layer"])["minimum"] == 0
    units = nullable(p["units"])
    assert (units["minItems"], units["maxItems"], units["items"]["minimum"]) == (1, 4096, 0)


def test_span_request_bounds(schema):
    p = props(schema, "SpanRequest")
    assert (p["start"]["minimum"], p["end"]["minimum"]) == (0, 1)


@pytest.mark.parametrize("name, fields", [
    ("InterveneRequest", {"layer": 0, "unit": 0, "start": 0}),
    ("CounterfactualRequest", {"layer": 0, "unit": 0}),
])
def test_dynamics_request_bounds(schema, name, fields):
    p = props(schema, name)
    assert {f: p[f]["minimum"] for f in fields} == fields


def test_gradients_request_bounds(schema):
    p = props(schema, "GradientsRequest")
    assert nullable(p["position"])["minimum"] == 0
    assert (p["lookback"]["minimum"], p["lookback"]["maximum"]) == (1, MAX_LOOKBACK)


def test_neuron_path_bounds(schema):
    params = {q["name"]: q["schema"] for q in schema["paths"]["/api/v1/neurons/{model}/{layer}/{state}/{unit}"]
              ["get"]["parameters"]}
    assert params["layer"]["minimum"] == 0 and params["unit"]["minimum"] == 0


def test_the_generation_stream_is_declared_as_server_sent_events_and_its_refusals_as_json(schema):
    responses = schema["paths"]["/api/v1/generate/stream"]["get"]["responses"]
    ok = responses["200"]["content"]
    assert list(ok) == ["text/event-stream"] and ok["text/event-stream"]["example"].startswith("event: meta\n")
    for status in ("404", "413", "422", "429", "503"):
        assert list(responses[status]["content"]) == ["application/json"], status


def test_an_empty_or_reversed_span_is_refused_by_the_request_model(client):
    text = "He said hi."
    r = client.post("/api/v1/span", json={"model": "tiny-lstm", "text": text, "start": 3, "end": 3})
    assert r.status_code == 422 and r.json()["detail"].startswith("the selected span is empty")
    r = client.post("/api/v1/span", json={"model": "tiny-lstm", "text": text, "start": 5, "end": 2})
    assert r.status_code == 422
    assert r.json()["detail"] == "the span starts at 5 and ends at 2: end must come after start"
