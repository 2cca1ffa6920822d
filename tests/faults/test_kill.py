"""A share link, once acknowledged, survives the server being killed with SIGKILL in the middle of load.

Real `rnnscope serve` processes on one data folder: many clients create links at once, the process is
killed (-9) while requests are in flight, a new process starts on the same SQLite file (WAL), and
every link that got a 200 opens with exactly the view it was made for.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from html import unescape

import pytest

from tests.conftest import write_tiny_model

from .conftest import serving, start, stop

pytestmark = pytest.mark.slow

CLIENTS = 16


def post_json(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_acknowledged_links_survive_sigkill_mid_load(tmp_path):
    models = tmp_path / "models"
    write_tiny_model(models / "tiny-lstm", "lstm", seed=5)
    data = tmp_path / "data"
    acked: dict[str, str] = {}  # id -> text of every link the server answered 200 for
    failures: list[str] = []
    refused: list[tuple[int, dict]] = []
    lock = threading.Lock()
    server = start(models, data, tmp_path / "serve-1.log", RNNSCOPE_TORCH_THREADS="1",
                   RNNSCOPE_SHARE_RATE_LIMIT="0")  # hundreds of links from one address: no share rate limit
    try:
        def client(i: int) -> None:
            n = 0
            while True:
                text = f"client {i} link {n}: \"quoted\" text."
                try:
                    status, body = post_json(server.base + "/api/v1/share",
                                             {"model": "tiny-lstm", "text": text, "unit": n % 16})
                except (OSError, http.client.HTTPException, ValueError) as e:  # the server is gone: stop
                    with lock:
                        failures.append(type(e).__name__)
                    return
                with lock:
                    if status == 200:
                        acked[body["id"]] = text
                    else:
                        refused.append((status, body))
                n += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)  # mid-load: every client has a request in flight or about to
        server.proc.wait(timeout=10)
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    finally:
        stop(server)

    assert len(acked) >= 150 and not refused, refused[:3]
    assert len(failures) == CLIENTS  # each client saw the kill as a failed request, not a 200
    assert (data / "shares.sqlite3-wal").exists()  # the kill left the write-ahead log to be recovered

    with serving(models, data, tmp_path / "serve-2.log") as again:
        for sid, text in acked.items():
            with urllib.request.urlopen(f"{again.base}/api/v1/share/{sid}", timeout=30) as r:
                assert r.status == 200
                assert json.loads(r.read())["view"]["text"] == text
        sid, text = next(iter(acked.items()))
        with urllib.request.urlopen(f"{again.base}/s/{sid}", timeout=30) as r:  # and the page opens too
            assert r.status == 200 and text in unescape(r.read().decode())
    con = sqlite3.connect(data / "shares.sqlite3")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM shares").fetchone()[0] >= len(acked)
    finally:
        con.close()
