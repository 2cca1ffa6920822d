"""Work outside the model slots (app/http/heavy.py): big API bodies are built in pieces on a response slot and
gzipped in the worker thread, so /healthz and small traces stay fast while several are served; generation
streams past max_streams get a 503 at once."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time

import numpy as np
import pytest
from fastapi.responses import JSONResponse

from app.http.heavy import ResponseSlots, StreamSlots, json_bytes
from app.trace.schemas import prediction_pieces, predictions, rounded, rounded_pieces
from app.core.slots import Overloaded
from tests.conftest import write_tiny_model
from tests.hostile.conftest import make_client
from tests.hostile.test_connections import hardened

BIG_TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
            "must be in want of a wife. ") * 45  # 5,040 characters


def big_body(text: str = BIG_TEXT) -> bytes:
    # every layer, state and unit, with the most predictions: ~1M values, ~18 MB of JSON from a tiny model
    return json.dumps({"model": "tiny-lstm", "text": text, "topk": 100}).encode()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("heavy-models")
    write_tiny_model(root / "tiny-lstm", "lstm", seed=9)
    return root


# ---- in process ----------------------------------------------------------------------------------
def test_json_bytes_writes_what_jsonresponse_writes():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3000, 37)).astype(np.float16)
    ids = rng.integers(0, 5, (3000, 7))
    probs = rng.random((3000, 7)).astype(np.float16)
    chars = list('ab"\n\u00e9')
    surprisal = [None if i % 100 == 0 else x for i, x in enumerate(rounded(rng.random(9000), 4))]
    plain = {"model": "m", "text": '\u00e9"x', "layers": [{"layer": 0, "states": {"c": rounded(a, 4)}}],
             "topk": predictions(chars, ids, probs, 4), "s": surprisal, "u": None, "e": [], "b": True}
    pieces = {**plain, "layers": [{"layer": 0, "states": {"c": rounded_pieces(a, 4)}}],
              "topk": prediction_pieces(chars, ids, probs, 4)}
    assert json_bytes(pieces) == JSONResponse(plain).body
    empty = {"z": rounded_pieces(np.zeros((0, 4)), 4), "r": rounded_pieces(np.zeros((3, 0)), 4)}
    assert json_bytes(empty) == b'{"z":[],"r":[[],[],[]]}'


def test_response_slots_queue_in_order_then_refuse_with_retry_after():
    slots = ResponseSlots(1, queue_timeout=0.2)
    with slots.hold():
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as err:
            with slots.hold():
                pass
        assert time.monotonic() - t0 >= 0.15 and err.value.status == 503 and err.value.retry_after >= 1
    with slots.hold():  # released: free again
        pass
    assert slots.served == 2


def test_identical_builds_in_flight_share_one_and_errors_reach_every_waiter():
    slots = ResponseSlots(1, queue_timeout=5)
    calls: list[int] = []
    out: list[bytes] = []

    def work() -> bytes:
        calls.append(1)
        time.sleep(0.3)
        return b"body"

    threads = [threading.Thread(target=lambda: out.append(slots.build("k", work))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert out == [b"body"] * 4 and len(calls) == 1 and slots.shared == 3

    def broken() -> bytes:
        time.sleep(0.2)
        raise ValueError("no")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            slots.build("bad", broken)
        except ValueError as e:
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(errors) == 3
    assert slots.build("bad", lambda: b"fine now") == b"fine now"  # a failed build is not remembered


def test_stream_slots_cap_and_release_once():
    slots = StreamSlots(2)
    a, b = slots.take(), slots.take()
    with pytest.raises(Overloaded):
        slots.take()
    a.release()
    a.release()  # twice is once
    assert slots.open == 1
    c = slots.take()
    b.release()
    c.release()
    assert slots.open == 0


def test_big_trace_is_gzipped_once_and_equals_the_plain_answer(models, tmp_path):
    with make_client(models, tmp_path / "data") as client:
        zipped = client.post("/api/v1/trace", content=big_body(), headers={"Content-Type": "application/json",
                                                                           "Accept-Encoding": "gzip"})
        plain = client.post("/api/v1/trace", content=big_body(), headers={"Content-Type": "application/json",
                                                                          "Accept-Encoding": "identity"})
        assert zipped.status_code == plain.status_code == 200
        assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
        assert "accept-encoding" in zipped.headers["vary"].lower()
        assert int(plain.headers["content-length"]) == len(plain.content) > 10_000_000  # sent in 1 MB chunks
        assert zipped.json() == plain.json()  # httpx undid the gzip: one layer of it, not two
        data = plain.json()
        assert len(data["layers"]) == 2 and len(data["layers"][0]["states"]["c"]) == len(BIG_TEXT)
        assert len(data["topk"]) == len(BIG_TEXT) and len(data["topk"][0]) > 5
        assert client.app.state.responses.served == 2


# ---- a real server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heavy-server")
    with hardened(models, tmp, RNNSCOPE_MAX_STREAMS="2", RNNSCOPE_SEND_TIMEOUT="30",
                  RNNSCOPE_HEADER_TIMEOUT="20", RNNSCOPE_BODY_TIMEOUT="20") as (port, pid, log_path):
        yield port, log_path


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, dict, bytes, float]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        data = r.read()  # never parsed in the burst: a big json.loads would stall this process's poller
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.perf_counter() - t0
    finally:
        conn.close()


@pytest.mark.slow
def test_parallel_big_traces_leave_healthz_and_small_traces_fast(server):
    port, log_path = server
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    status, _, _, warm = request(port, "POST", "/api/v1/trace", big_body(), headers)  # compiles, first run
    assert status == 200

    results: list[tuple[int, dict, bytes, float]] = []
    health: list[float] = []
    small: list[tuple[int, dict, bytes, float]] = []
    done = threading.Event()

    def poll() -> None:
        for _ in range(2000):  # bounded: 50 ms apart, ends with the burst
            if done.is_set():
                return
            status, _, _, seconds = request(port, "GET", "/healthz", timeout=10)
            health.append(seconds if status == 200 else float("inf"))
            time.sleep(0.05)

    def big(n: int) -> None:
        h = headers if n % 2 == 0 else {"Content-Type": "application/json"}  # half without gzip
        # texts differ, so each request builds its own body (identical ones in flight would share one)
        results.append(request(port, "POST", "/api/v1/trace", big_body(BIG_TEXT[:-1] + str(n)), h))

    def small_trace() -> None:
        time.sleep(0.5)
        body = json.dumps({"model": "tiny-lstm", "text": "A small new text, never seen before.", "layer": 0,
                           "state": "h", "units": [1, 2]}).encode()
        small.append(request(port, "POST", "/api/v1/trace", body, {"Content-Type": "application/json"}))

    poller = threading.Thread(target=poll)
    poller.start()
    workers = [threading.Thread(target=big, args=(n,)) for n in range(6)] + [threading.Thread(target=small_trace)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=180)
    done.set()
    poller.join(timeout=20)

    assert sorted(r[0] for r in results) == [200] * 6
    for status, h, data, _ in results:
        if h.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        assert data.startswith(b'{"model":"tiny-lstm"')
    assert json.loads(data)["length"] == len(BIG_TEXT)  # one of them parsed, after the burst
    assert small and small[0][0] == 200 and small[0][3] < 10, small[0][:1] + small[0][3:]
    assert len(health) >= 10
    health.sort()
    p99 = health[min(len(health) - 1, int(len(health) * 0.99))]
    assert p99 < 0.3, f"/healthz p99 {p99 * 1000:.0f} ms over {len(health)} polls (max {health[-1] * 1000:.0f} ms)"


@pytest.mark.slow
def test_streams_past_the_cap_get_a_503_and_their_slots_come_back(server):
    port, _ = server
    path = "/api/v1/generate/stream?model=tiny-lstm&text=Hello&n=2000&seed=1"
    start = threading.Barrier(8, timeout=30)
    results: list[tuple[int, dict, bytes, float]] = []

    def stream() -> None:
        start.wait()
        results.append(request(port, "GET", path, timeout=60))

    threads = [threading.Thread(target=stream) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    statuses = sorted(r[0] for r in results)
    assert len(statuses) == 8 and set(statuses) <= {200, 503}
    assert 1 <= statuses.count(200) and statuses.count(503) >= 1, statuses
    refused = next(r for r in results if r[0] == 503)
    assert int(refused[1]["retry-after"]) >= 1
    assert "generation streams are already running" in json.loads(refused[2])["detail"]
    assert all(b"event: done" in r[2] for r in results if r[0] == 200)

    for _ in range(5):  # HEAD runs the stream as far as its headers: its slot must come back too
        assert request(port, "HEAD", path, timeout=30)[0] == 200
    time.sleep(0.5)
    for _ in range(2):  # every slot is free again: the cap's worth, one after another and together
        assert request(port, "GET", path.replace("n=2000", "n=20"), timeout=30)[0] == 200
    pair: list[int] = []
    both = [threading.Thread(target=lambda: pair.append(request(port, "GET", path.replace("n=2000", "n=200"),
                                                                timeout=30)[0])) for _ in range(2)]
    for t in both:
        t.start()
    for t in both:
        t.join(timeout=60)
    assert pair == [200, 200]
