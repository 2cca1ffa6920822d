"""Load limits on the real app with real tiny models: model slots (busy -> 503), the run time limit,
single flight, torch threads, per-client rate limiting and the body size limit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.runtime import default_torch_threads
from app.http.guards import TokenBuckets, client_key
from tests.conftest import write_tiny_model

from .conftest import HX, make_client
from .test_inputs import detail, page_error

TRACE = "/api/v1/trace"


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory):
    """A model big enough that a 20,000-character trace takes a noticeable fraction of a second."""
    root = tmp_path_factory.mktemp("slow-models")
    write_tiny_model(root / "tiny-lstm", "lstm", layers=2, hidden=256)
    return root


def occupy_every_slot(service) -> threading.Event:
    """Hold all model slots with runs that wait for the returned event (no model involved: just the slots)."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> None:
        started.release()
        release.wait(30)

    for _ in range(service.slots.slots):
        threading.Thread(target=service.slots.run, args=(None, hold), daemon=True).start()
    for _ in range(service.slots.slots):
        assert started.acquire(timeout=10)
    return release


def test_torch_threads_default_to_one_share_of_the_cores_per_concurrent_run(tiny_models_dir, tmp_path):
    assert default_torch_threads(2, cpus=2) == 1
    assert default_torch_threads(3, cpus=2) == 1
    assert default_torch_threads(1, cpus=2) == 2
    assert default_torch_threads(4, cpus=16) == 4
    before = torch.get_num_threads()
    seen: list[int] = []
    with make_client(tiny_models_dir, tmp_path / "d", max_concurrent_traces=1):
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
    assert seen == [default_torch_threads(1)]
    assert torch.get_num_threads() == before  # restored when the app stops


def test_a_busy_server_answers_503_with_retry_after_and_cache_hits_still_serve(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", max_concurrent_traces=1, queue_timeout=0.3) as c:
        known = {"model": "tiny-lstm", "text": "traced before the rush", "layer": 0, "state": "h", "units": [1]}
        assert c.post(TRACE, json=known).status_code == 200
        service = c.app.state.service
        release = occupy_every_slot(service)
        try:
            r = c.post(TRACE, json={**known, "text": "a new text needs the model"})
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert detail(r) == ("the server is busy: every model slot stayed taken for 0.3 s. Try again in 5 s.")
            # the page: the form as sent, the reason beside the text (htmx), or the whole page
            r = c.get("/", params={"text": "another new text"}, headers=HX)
            assert r.status_code == 503 and r.headers["retry-after"] == "5" and r.headers["hx-reswap"] == "none"
            assert page_error(r, "text").startswith("the server is busy")
            r = c.get("/", params={"text": "another new text"})
            assert r.status_code == 503 and "the server is busy" in r.text and "another new text</textarea>" in r.text
            # a share link is checked, not traced: it is made while the slots are taken
            r = c.post("/api/v1/share", json={"model": "tiny-lstm", "text": "a third new text"})
            assert r.status_code == 200 and r.json()["view"]["text"] == "a third new text"
            # a view of a text already traced needs no model run: it is served while the slots are taken
            hit = c.post(TRACE, json={**known, "units": [2]})
            assert hit.status_code == 200 and hit.json()["cached"] is True
        finally:
            release.set()
        r = c.post(TRACE, json={**known, "text": "a new text needs the model"})
        assert r.status_code == 200


def test_working_out_every_unit_of_a_gate_from_the_cache_is_model_work_on_the_scoring_slot(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", queue_timeout=0.3) as c:
        text = {"model": "tiny-lstm", "text": 'She said "yes" and left.'}
        assert c.post(TRACE, json={**text, "layer": 1, "state": "h"}).status_code == 200  # cached, lazily
        service = c.app.state.service
        started, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=lambda: service.scoring.run(None, lambda: (started.set(), release.wait(10))))
        holder.start()  # a probe's scoring holds the scoring slot
        try:
            assert started.wait(10)
            every_unit = c.post(TRACE, json={**text, "layer": 1, "state": "c"})
            one_unit = c.post(TRACE, json={**text, "layer": 1, "state": "c", "units": [3]})
            stored = c.post(TRACE, json={**text, "layer": 1, "state": "h"})
        finally:
            release.set()
            holder.join()
        assert every_unit.status_code == 503 and every_unit.headers["retry-after"] == "5"
        assert one_unit.status_code == 200 and one_unit.json()["cached"] is True, "one unit is cheap: no slot"
        assert stored.status_code == 200 and stored.json()["cached"] is True, "h is held: nothing to work out"
        again = c.post(TRACE, json={**text, "layer": 1, "state": "c"})
        assert again.status_code == 200 and again.json()["cached"] is True
        values = np.array(again.json()["layers"][0]["states"]["c"])
        assert np.array_equal(values[:, 3], np.array(one_unit.json()["layers"][0]["states"]["c"])[:, 0])


def test_a_trace_over_the_time_limit_is_a_503_and_is_stopped_on_its_slot(slow_models, tmp_path):
    text = ('"Yes," said she. ' * 1200)[:20_000]
    body = {"model": "tiny-lstm", "text": text, "layer": 1, "state": "c", "units": [3]}
    with make_client(slow_models, tmp_path / "d", trace_timeout=0.01) as c:
        service = c.app.state.service
        t0 = time.monotonic()
        r = c.post(TRACE, json=body)
        assert time.monotonic() - t0 < 5
        assert r.status_code == 503 and r.headers["retry-after"] == "10"
        assert detail(r).startswith("this model run took longer than the 0.01 s limit and was stopped")
        assert service.slots._free._free == service.slots.slots  # the slot came back with the 503
        time.sleep(0.5)
        assert service.traces_run == 0 and len(service.cache) == 0  # nothing went on in the background


def test_identical_requests_in_flight_share_one_model_run(slow_models, tmp_path):
    text = ("It is a truth universally acknowledged. " * 500)[:20_000]
    with make_client(slow_models, tmp_path / "d") as c:
        service = c.app.state.service
        gate = threading.Barrier(6)
        statuses: list[int] = []

        def ask() -> None:
            gate.wait()
            statuses.append(c.get("/", params={"text": text, "unit": "5"}, headers=HX).status_code)

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert statuses == [200] * 6
        assert service.traces_run == 1


def test_rate_limit_is_off_by_default(client):
    assert all(client.get("/api/v1/models").status_code == 200 for _ in range(100))


def test_rate_limit_per_client_returns_429_with_retry_after(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", rate_limit=3) as c:
        assert [c.get("/api/v1/models").status_code for _ in range(3)] == [200, 200, 200]
        r = c.get("/api/v1/models")
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 20
        assert detail(r).startswith("too many requests from your address: this server allows 3 a minute. Try again in")
        page = c.get("/", params={"text": "ab"})
        assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
        assert "too many requests" in page.text and page.headers["retry-after"]
        assert c.get("/static/app.css").status_code == 200 and c.get("/healthz").status_code == 200  # free
        other = TestClient(c.app, client=("203.0.113.7", 40000))  # another address has its own bucket
        assert other.get("/api/v1/models").status_code == 200


def test_token_buckets_refill_at_the_rate_and_group_ipv6_by_64():
    now = [0.0]
    buckets = TokenBuckets(per_minute=3, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(20.0)  # 3 a minute: one token every 20 s
    now[0] = 20.0
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    assert buckets.take("b") == 0.0
    small = TokenBuckets(per_minute=60, burst=1, max_clients=2, clock=lambda: now[0])
    for key in ("x", "y", "z"):
        small.take(key)
    assert len(small._buckets) == 2  # bounded: the least recent client is forgotten
    assert client_key({"client": ("2001:db8:1:2::1", 1)}) == client_key({"client": ("2001:db8:1:2:ffff::9", 2)})
    assert client_key({"client": ("2001:db8:1:3::1", 1)}) != client_key({"client": ("2001:db8:1:2::1", 1)})
    assert client_key({"client": ("::ffff:192.0.2.1", 1)}) == "192.0.2.1"
    assert client_key({"client": ("192.0.2.1", 1)}) != client_key({"client": ("192.0.2.2", 1)})


def test_the_body_limit_is_a_setting(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", max_body_bytes=2048) as c:
        r = c.post(TRACE, json={"model": "tiny-lstm", "text": "a" * 3000})
        assert r.status_code == 413 and "the limit is 2,048" in detail(r)
        assert c.post(TRACE, json={"model": "tiny-lstm", "text": "a" * 100, "layer": 0}).status_code == 200
        form = c.post("/share", data={"text": "a" * 3000}, headers=HX)
        assert form.status_code == 413 and "the limit is 2,048" in form.text


def test_the_queue_timeout_counts_from_arrival_not_from_reaching_the_slot():
    from app.core.slots import ARRIVED, ModelSlots, Overloaded

    slots = ModelSlots(1, queue_timeout=1.0, run_timeout=5.0)
    release = threading.Event()
    threading.Thread(target=slots.run, args=(None, lambda: release.wait(10)), daemon=True).start()
    time.sleep(0.1)
    token = ARRIVED.set(time.monotonic() - 0.8)  # this request already waited 0.8 s for a worker thread
    try:
        t0 = time.monotonic()
        with pytest.raises(Overloaded, match=r"the server is busy: every model slot stayed taken for 1(\.\d)? s"):
            slots.run(None, lambda: "never")
        assert time.monotonic() - t0 < 0.6
        assert ARRIVED.get() is None  # a second run in the same request gets the whole queue timeout
        t0 = time.monotonic()
        with pytest.raises(Overloaded):
            slots.run(None, lambda: "never")
        assert time.monotonic() - t0 >= 0.9
    finally:
        release.set()
        ARRIVED.reset(token)
    token = ARRIVED.set(time.monotonic() - 60)  # waited long, but a slot is free now: it runs
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                assert slots.run(None, lambda: "ran") == "ran"
                break
            except Overloaded:  # the held slot is being handed back
                time.sleep(0.05)
        else:
            raise AssertionError("a free slot was refused")
    finally:
        ARRIVED.reset(token)


def test_requests_queued_for_a_model_slot_do_not_hold_up_cache_hits(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path / "d", max_concurrent_traces=1, queue_timeout=20) as c:
        known = {"model": "tiny-lstm", "text": "a text traced before the queue", "layer": 0, "state": "h"}
        assert c.post(TRACE, json=known).status_code == 200
        release = occupy_every_slot(c.app.state.service)
        queued: list[int] = []
        try:
            def new_trace(i: int) -> None:
                queued.append(c.post(TRACE, json={**known, "text": f"new text {i}"}).status_code)

            # more blocked requests than anyio's default 40 worker threads
            threads = [threading.Thread(target=new_trace, args=(i,), daemon=True) for i in range(48)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while c.app.state.service.slots.waiting < 48 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.app.state.service.slots.waiting == 48, (c.app.state.service.slots.waiting, len(queued))
            t0 = time.monotonic()
            hit = c.post(TRACE, json={**known, "units": [3]})
            assert hit.status_code == 200 and hit.json()["cached"] is True
            assert time.monotonic() - t0 < 3
        finally:
            release.set()
        for t in threads:
            t.join(60)
        assert queued == [200] * 48  # and once the slot is free, every queued request is served


def test_model_slots_go_to_waiting_requests_in_arrival_order():
    """A freed slot goes to the longest waiter, never to a request that just arrived (no barging)."""
    from app.core.slots import FifoSlots, ModelSlots

    slots = ModelSlots(1, queue_timeout=10.0, run_timeout=10.0)
    release = threading.Event()
    holder = threading.Thread(target=slots.run, args=(None, lambda: release.wait(10)), daemon=True)
    holder.start()
    time.sleep(0.1)
    order: list[str] = []
    waiters = []
    for name in "ABCD":
        t = threading.Thread(target=slots.run, args=(None, lambda name=name: order.append(name)), daemon=True)
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + 2
        while slots.waiting < len(waiters) and time.monotonic() < deadline:  # queued before the next one comes
            time.sleep(0.01)
    assert slots.waiting == 4
    release.set()
    for t in waiters:
        t.join(5)
    assert order == list("ABCD")

    fifo = FifoSlots(1)
    assert fifo.acquire(0) and not fifo.acquire(0)  # taken: no wait asked, no slot
    t0 = time.monotonic()
    assert not fifo.acquire(0.2) and time.monotonic() - t0 >= 0.19  # timed out, and left the queue
    fifo.release()
    assert fifo.acquire(0)  # the timed-out waiter did not keep the freed slot

    handed = FifoSlots(1)
    assert handed.acquire(0)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(handed.acquire(5)), daemon=True)
    waiter.start()
    time.sleep(0.2)  # the waiter is queued
    handed.release()
    assert not handed.acquire(0)  # a newcomer right at the release does not take the waiter's slot
    waiter.join(5)
    assert len(got) == 1 and got[0] is not None and got[0].joined is None  # it holds the slot


def _wait_for(done, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)


def _queue(slots, n_waiting: int, target, *args) -> list:
    """Start target(*args) on a thread once the previous ones are queued; returns its result list."""
    out: list = []

    def go() -> None:
        try:
            out.append(target(*args))
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out.append(e)

    threading.Thread(target=go, daemon=True).start()
    _wait_for(lambda: slots.waiting >= n_waiting)
    assert slots.waiting == n_waiting
    return out


def test_one_run_serves_queued_requests_of_its_batch_group_oldest_first():
    from app.core.slots import Batch, ModelSlots

    slots = ModelSlots(1, queue_timeout=10.0, run_timeout=10.0)
    runs: list[list[str]] = []

    def work(items: list[str]) -> list:
        runs.append(list(items))
        return [ValueError(f"no {it}") if it == "bad" else it.upper() for it in items]

    batch = Batch(group="g", size=3, work=work)
    other_group = Batch(group="h", size=3, work=work)
    release = threading.Event()
    threading.Thread(target=slots.run, args=(None, lambda: release.wait(10)), daemon=True).start()
    time.sleep(0.1)
    results = [
        _queue(slots, 1, slots.run_batched, "a", "a", batch),
        _queue(slots, 2, slots.run, None, lambda: runs.append(["other"]) or "other"),  # no group: never taken along
        _queue(slots, 3, slots.run_batched, "b", "bad", batch),
        _queue(slots, 4, slots.run_batched, "c", "elsewhere", other_group),  # another group: its own run later
        _queue(slots, 5, slots.run_batched, "a", "a", batch),  # the same key again: shares a's result
        _queue(slots, 6, slots.run_batched, "d", "d", batch),  # takes the place the twin does not use
        _queue(slots, 7, slots.run_batched, "e", "e", batch),  # one past the batch size: a later run
    ]
    release.set()
    _wait_for(lambda: all(results))
    assert runs == [["a", "bad", "d"], ["other"], ["elsewhere"], ["e"]], "the second a shares the first's place"
    assert [r[0] if not isinstance(r[0], Exception) else str(r[0]) for r in results] == \
        ["A", "other", "no bad", "ELSEWHERE", "A", "D", "E"]
    assert slots.batched == 2 and slots.shared == 1 and slots.waiting == 0
    assert slots.run(None, lambda: "free") == "free", "every slot came back"


def test_a_request_taken_along_gets_its_result_even_after_its_queue_budget():
    """The queue timeout ends with the slot (or the batch run) reached; the run timeout counts from there."""
    from app.core.slots import Batch, ModelSlots

    slots = ModelSlots(1, queue_timeout=0.5, run_timeout=10.0)

    def slow(items):
        time.sleep(0.8)  # longer than the riders' queue budget
        return [it * 2 for it in items]

    batch = Batch(group="g", size=4, work=slow)
    release = threading.Event()
    threading.Thread(target=slots.run, args=(None, lambda: release.wait(10)), daemon=True).start()
    time.sleep(0.1)
    first = _queue(slots, 1, slots.run_batched, 1, 1, batch)
    second = _queue(slots, 2, slots.run_batched, 2, 2, batch)
    release.set()
    _wait_for(lambda: (first and second))
    assert first == [2] and second == [4]


def test_queued_page_views_of_new_texts_share_one_batched_run(tiny_models_dir, tmp_path):
    from models.trace import run_trace

    texts = ["first text queued", "a second, longer text that queued", "third"]
    with make_client(tiny_models_dir, tmp_path / "d", max_concurrent_traces=1, trace_batch=4) as c:
        service = c.app.state.service
        before = service.traces_run
        release = occupy_every_slot(service)

        def page(text: str) -> int:
            return c.get("/", params={"model": "tiny-lstm", "text": text, "layer": "1", "state": "c"},
                         headers=HX).status_code

        statuses = [_queue(service.slots, n + 1, page, text) for n, text in enumerate(texts)]
        release.set()
        _wait_for(lambda: all(statuses), seconds=10)
        assert statuses == [[200], [200], [200]]
        assert service.traces_run - before == 3 and service.slots.batched == 2, "three texts, one run"
        entry = service.model("tiny-lstm")
        for text in texts:
            cached = service.view_trace(entry, text, 1, "c")
            assert cached.cached
            alone = run_trace(entry.checkpoint.model, entry.checkpoint.vocab, text, half=True)
            for k in alone.states:
                for s, values in alone.states[k].items():
                    assert np.allclose(cached.trace.states[k][s], values, rtol=2e-3, atol=1e-4), (text, k, s)


def test_a_rider_whose_identical_run_started_meanwhile_shares_it_and_a_failed_start_wakes_every_rider():
    from app.core.slots import Batch, ModelSlots

    slots = ModelSlots(1, queue_timeout=10.0, run_timeout=10.0)
    runs: list[list[str]] = []
    gate = threading.Event()

    def work(items):
        runs.append(list(items))
        gate.wait(10)
        return [it.upper() for it in items]

    batch = Batch(group="g", size=4, work=work)
    release = threading.Event()
    threading.Thread(target=slots.run, args=(None, lambda: release.wait(10)), daemon=True).start()
    time.sleep(0.1)
    first = _queue(slots, 1, slots.run_batched, "x", "x", batch)
    second = _queue(slots, 2, slots.run_batched, "y", "y", batch)
    with slots._lock:  # an identical run of "y" starts (elsewhere) after y queued
        pending: Future = Future()
        slots._inflight["y"] = pending
    release.set()
    _wait_for(lambda: runs)
    assert runs == [["x"]], "y joined the run already in flight instead"
    pending.set_result("Y from the other run")
    gate.set()
    _wait_for(lambda: first and second)
    assert first == ["X"] and second == ["Y from the other run"]

    broken = ModelSlots(1, queue_timeout=10.0, run_timeout=10.0)
    hold = threading.Event()
    threading.Thread(target=broken.run, args=(None, lambda: hold.wait(10)), daemon=True).start()
    time.sleep(0.1)
    a = _queue(broken, 1, broken.run_batched, "a", "a", batch)
    b = _queue(broken, 2, broken.run_batched, "b", "b", batch)
    real_submit = broken._submit

    def refuse(keys, fn):
        if len(keys) > 1:
            raise OSError("no thread for the batch")
        return real_submit(keys, fn)

    broken._submit = refuse
    hold.set()
    _wait_for(lambda: (a and b))
    assert [str(r[0]) for r in (a, b)] == ["no thread for the batch"] * 2, "the leader and its rider both hear it"
    assert broken.run(None, lambda: "free") == "free", "the slot came back"


def test_a_text_the_batch_refuses_fails_only_its_own_request(tiny_models_dir, tmp_path, monkeypatch):
    import app.trace.service as service_module

    real = service_module.run_traces

    def picky(model, vocab, texts, **kw):
        if any("refused" in t for t in texts):
            raise service_module.RnnscopeError("this text is refused")
        return real(model, vocab, texts, **kw)

    monkeypatch.setattr(service_module, "run_traces", picky)
    with make_client(tiny_models_dir, tmp_path / "d", max_concurrent_traces=1) as c:
        service = c.app.state.service
        release = occupy_every_slot(service)

        def trace(text: str) -> int:
            return c.post(TRACE, json={"model": "tiny-lstm", "text": text, "layer": 0, "state": "h",
                                       "units": [1]}).status_code

        texts = ["a good text", "a refused text", "another good one"]
        statuses = [_queue(service.slots, n + 1, trace, text) for n, text in enumerate(texts)]
        release.set()
        _wait_for(lambda: all(statuses), seconds=10)
        assert dict(zip(texts, (r[0] for r in statuses))) == {"a good text": 200, "a refused text": 422,
                                                              "another good one": 200}
        assert service.slots.batched == 2
