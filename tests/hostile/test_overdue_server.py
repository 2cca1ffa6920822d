"""Model runs against a real `rnnscope serve`: overdue work stops and frees its slot, the adversarial
counterfactual alignment is bounded, interventions keep one text limit, and /healthz answers throughout.

The server runs under an address-space cap with one model slot; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import resource
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from tests.app.core.test_overdue import text_of
from tests.conftest import write_tiny_model
from tests.faults.conftest import serving
from tests.hostile.test_regex_bomb import vm_size

pytestmark = pytest.mark.slow

MEMORY_HEADROOM = 4 << 30  # address space the server may add once up: a runaway run fails inside it, not the machine
RUN_TIMEOUT = 0.5
FREED_WITHIN = 2.5  # seconds from the 503 until a small request has been served on the one slot
HEALTH_MS = 300.0

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 2x768 LSTM, on which a 5,000-20,000-character run takes seconds; a tiny one for quick requests."""
    root = tmp_path_factory.mktemp("overdue-models")
    write_tiny_model(root / "big-lstm", "lstm", layers=2, hidden=768)
    write_tiny_model(root / "tiny-lstm", "lstm")
    return root


@contextmanager
def capped_server(models, tmp_path, **env: str):
    """A real server, its address space capped once it is up; yields its base URL."""
    with serving(models, tmp_path / "data", tmp_path / "serve.log", **env) as server:
        cap = vm_size(server.proc.pid) + MEMORY_HEADROOM
        resource.prlimit(server.proc.pid, resource.RLIMIT_AS, (cap, cap))
        yield server.base


def post(url: str, body: dict, timeout: float = 60) -> tuple[int, dict, float]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), time.monotonic() - t0


def health_ms(base: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
        assert r.status == 200
    return (time.perf_counter() - t0) * 1000


def quick(base: str) -> tuple[int, float]:
    status, _, took = post(base + "/api/v1/trace", {"model": "big-lstm", "text": f"Hi {time.monotonic()}",
                                                    "layer": 0, "state": "h", "units": [0]})
    return status, took


SLOW = {
    "trace": ("/api/v1/trace", {"model": "big-lstm", "text": text_of(20_000), "layer": 1, "state": "c",
                                "units": [3]}),
    "intervene": ("/api/v1/intervene", {"model": "big-lstm", "text": text_of(5_000), "layer": 0, "state": "c",
                                        "unit": 3, "start": 0, "topk": 5}),
    "gradients": ("/api/v1/gradients", {"models": ["big-lstm"], "text": text_of(20_000), "lookback": 400}),
    "counterfactual": ("/api/v1/counterfactual", {"model": "big-lstm", "original": text_of(5_000),
                                                  "edited": text_of(5_000)[::-1], "layer": 1, "state": "c",
                                                  "unit": 3}),
}


def test_every_kind_of_overdue_run_stops_and_frees_its_slot(models, tmp_path):
    env = {"RNNSCOPE_MAX_CONCURRENT_TRACES": "1", "RNNSCOPE_TRACE_TIMEOUT": str(RUN_TIMEOUT),
           "RNNSCOPE_QUEUE_TIMEOUT": "30", "RNNSCOPE_DEFAULT_MODEL": "big-lstm"}
    with capped_server(models, tmp_path, **env) as base:
        # warm the model (loaded, oneDNN primitives built) so the slow requests below are slow for their length
        assert quick(base)[0] == 200
        for kind, (path, body) in SLOW.items():
            outcome: dict = {}
            slow = threading.Thread(target=lambda: outcome.update(zip(("status", "body", "took"),
                                                                      post(base + path, body))))
            slow.start()
            healths = []
            while slow.is_alive() and len(healths) < 200:
                healths.append(health_ms(base))
                time.sleep(0.05)
            slow.join(timeout=60)
            assert outcome.get("status") == 503, (kind, outcome)
            assert "stopped" in outcome["body"]["detail"], (kind, outcome["body"])
            status, took = quick(base)
            assert status == 200 and took < FREED_WITHIN, (kind, status, took)
            assert max(healths, default=0.0) < HEALTH_MS, (kind, max(healths))


def test_an_adversarial_counterfactual_is_answered_in_bounded_time(models, tmp_path):
    with capped_server(models, tmp_path) as base:
        for original, edited in (("a" * 1100, "ab" * 550), ("a" * 5000, "ab" * 2500), ("ab" * 2500, "ba" * 2500)):
            status, body, took = post(base + "/api/v1/counterfactual", {
                "model": "tiny-lstm", "original": original, "edited": edited, "layer": 0, "state": "h", "unit": 0})
            # before: ~15 s for the first pair, ~25 minutes for the second
            assert status == 200 and took < 10, (len(original), status, took)
            assert len(body["delta"]) == len(edited)
            assert health_ms(base) < HEALTH_MS


def test_interventions_take_one_text_limit_and_a_clamp_after_start_is_quick(models, tmp_path):
    with capped_server(models, tmp_path) as base:
        status, body, _ = post(base + "/api/v1/intervene", {"model": "tiny-lstm", "text": "a" * 5001, "layer": 0,
                                                            "state": "h", "unit": 0})
        assert status == 413 and "5,000" in body["detail"], body
        status, body, took = post(base + "/api/v1/intervene", {
            "model": "tiny-lstm", "text": text_of(5000), "layer": 1, "state": "c", "unit": 2, "value": 1.0,
            "start": 4000, "topk": 20})
        assert status == 200 and took < 10, (status, took)
        assert len(body["surprisal_after"]) == 5000
