"""A run past the run timeout is stopped: its request gets the 503 and its model slot is free again
within a moment, for every kind of model run (trace, intervene, gradients, counterfactual,
generation). One slot, so a second request can only be served once the first run let go of it."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import write_tiny_model

from tests.app.conftest import make_client
from tests.share.slots import slot_held

TIMEOUT = 0.5  # run timeout: each slow request below needs several seconds on the model here
FREED_WITHIN = 2.0  # seconds from the 503 until another request has been served on the slot
PASSAGE = ('"Yes," said she, "I shall go to Netherfield on Tuesday." He looked at her, and then at the '
           'window, and said nothing for a while.\n')


def text_of(n: int) -> str:
    return (PASSAGE * (n // len(PASSAGE) + 1))[:n]


@pytest.fixture(scope="module")
def big_models(tmp_path_factory):
    """A 2x768 LSTM: a 5,000-character run takes seconds, a 10-character one milliseconds."""
    root = tmp_path_factory.mktemp("big-models")
    write_tiny_model(root / "big-lstm", "lstm", layers=2, hidden=768)
    return root


LONG, MID = text_of(20_000), text_of(5_000)
SLOW = {
    "trace": ("/api/v1/trace", {"model": "big-lstm", "text": LONG, "layer": 1, "state": "c", "units": [3]}),
    "intervene": ("/api/v1/intervene", {"model": "big-lstm", "text": MID, "layer": 0, "state": "c", "unit": 3,
                                        "start": 0, "topk": 5}),
    "gradients": ("/api/v1/gradients", {"models": ["big-lstm"], "text": LONG, "lookback": 400}),
    "counterfactual": ("/api/v1/counterfactual", {"model": "big-lstm", "original": MID, "edited": MID[::-1],
                                                  "layer": 1, "state": "c", "unit": 3}),
}


def quick(c) -> None:
    """A small run on the one slot: served (200) only once the slot is free."""
    r = c.post("/api/v1/trace", json={"model": "big-lstm", "text": f"Hi {time.monotonic()}", "layer": 0,
                                      "state": "h", "units": [0]})
    assert r.status_code == 200, r.text


def settings():
    return {"max_concurrent_traces": 1, "trace_timeout": TIMEOUT, "queue_timeout": 30.0}


@pytest.mark.parametrize("kind", list(SLOW))
def test_a_run_past_the_limit_frees_its_slot_with_the_503(big_models, tmp_path, kind):
    path, body = SLOW[kind]
    with make_client(big_models, data_dir=tmp_path / "d", **settings()) as c:
        quick(c)  # the model is loaded and warm
        t0 = time.monotonic()
        r = c.post(path, json=body)
        answered = time.monotonic()
        assert r.status_code == 503, r.text[:300]
        assert "took longer than the 0.5 s limit and was stopped" in r.json()["detail"]
        assert answered - t0 < TIMEOUT + 2.5, "the run stopped at its deadline, not at its end"
        quick(c)  # queued behind the stopped run if it still held the slot
        assert time.monotonic() - answered < FREED_WITHIN
        slots = c.app.state.service.slots
        assert slots._free._free == 1 and slots.waiting == 0


def test_a_generation_past_the_limit_ends_its_stream_and_frees_its_slot(big_models, tmp_path):
    with make_client(big_models, data_dir=tmp_path / "d", **settings()) as c:
        quick(c)
        params = {"model": "big-lstm", "text": "She said, ", "n": 2000, "temperature": 0.8, "seed": 1, "layer": 1,
                  "state": "c", "unit": 3}
        with c.stream("GET", "/api/v1/generate/stream", params=params) as r:
            assert r.status_code == 200
            body = "".join(r.iter_text())
        ended = time.monotonic()
        events = [(b.split("\n")[0][len("event: "):], json.loads(b.split("\n")[1][len("data: "):]))
                  for b in body.strip().split("\n\n")]
        kinds = [k for k, _ in events]
        assert kinds[0] == "meta" and kinds[-1] == "fail" and 0 < kinds.count("char") < 2000, kinds[-3:]
        assert "took longer than the 0.5 s limit and was stopped" in events[-1][1]["detail"]
        quick(c)
        assert time.monotonic() - ended < FREED_WITHIN


def test_a_generation_waits_for_a_slot_and_is_a_503_before_the_stream_when_none_comes(big_models, tmp_path):
    with make_client(big_models, data_dir=tmp_path / "d", max_concurrent_traces=1, queue_timeout=0.3) as c:
        quick(c)
        slots = c.app.state.service.slots
        with slot_held(slots):
            r = c.get("/api/v1/generate/stream", params={"model": "big-lstm", "text": "Hi", "n": 5})
        assert r.status_code == 503 and r.headers["retry-after"] == "5" and "busy" in r.json()["detail"]
        with c.stream("GET", "/api/v1/generate/stream", params={"model": "big-lstm", "text": "Hi", "n": 5}) as ok:
            assert ok.status_code == 200 and "event: done" in "".join(ok.iter_text())
        assert slots._free._free == 1


def test_a_stream_stops_at_the_run_timeout_and_when_its_reader_leaves():
    import threading

    from app.core.slots import ModelSlots, StreamClosed
    from models import deadline

    slots = ModelSlots(1, queue_timeout=5.0, run_timeout=0.3)

    def forever(emit) -> None:
        while True:
            deadline.check()
            emit("x")
            time.sleep(0.005)

    t0 = time.monotonic()
    with pytest.raises(deadline.Overdue):
        for _ in slots.stream(forever):
            pass
    assert time.monotonic() - t0 < 0.3 + 1.0
    assert slots.run(None, lambda: "free") == "free"

    patient = ModelSlots(1, queue_timeout=5.0, run_timeout=30.0)
    left = threading.Event()

    def until_closed(emit) -> None:
        try:
            for i in range(100_000):
                emit(i)
                time.sleep(0.001)
        except StreamClosed:
            left.set()
            raise

    stream = patient.stream(until_closed)
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()  # the reader went away
    assert left.wait(2)
    assert patient.run(None, lambda: "free") == "free"
    patient.close()
    slots.close()


@pytest.mark.parametrize("model,layer,state", [("tiny-lstm", 1, "c"), ("tiny-gru", 0, "z")])
def test_the_stepper_reads_a_long_prime_a_chunk_at_a_time_with_the_traced_values(tiny_models_dir, monkeypatch, model,
                                                                                layer, state):
    import numpy as np

    import models.stepper
    from models.trace import run_trace

    monkeypatch.setattr(models.stepper, "PRIME_CHUNK", 5)  # chunk edges all through the prime
    prime, more = PASSAGE[:37], "Then she left."
    with make_client(tiny_models_dir) as c:
        entry = c.app.state.service.model(model)
        ck = entry.checkpoint
        stepper = models.stepper.UnitStepper(ck.model, ck.vocab, prime, layer, state, 2)
        got = [stepper.step(ch) for ch in more]
        ref = run_trace(ck.model, ck.vocab, prime + more, layers=[layer], states=[state], units=[2], topk=0)
        np.testing.assert_allclose(got, ref.states[layer][state][len(prime):, 0], atol=1e-5)
