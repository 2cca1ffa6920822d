"""Big API responses against a real `rnnscope serve`: N parallel whole-layer traces with top-100 predictions
(tens of MB of JSON each) while /healthz is polled and a small new trace is asked for.

    .venv/bin/python bench/heavy_responses.py                       # models/zoo/austen-lstm, 7,000 characters, 8 clients
    .venv/bin/python bench/heavy_responses.py --chars 2000 --clients 4
    .venv/bin/python bench/heavy_responses.py --distinct --no-gzip   # the worst case: nothing shared, 39 MB each

Starts the server itself on loopback (a free port, a temp share database) and stops it at the end. Reports
each big request's time and size, /healthz p50/p99/max during the burst, and the small trace's time.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.share.server import running_server  # noqa: E402

WORDS = ("the of and to her a in was she that it not be had his as with you for but Elizabeth said Mr Darcy "
         "could would very been my all which on have so no by at Jane sister mother Bennet").split()


def text_of(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    while sum(map(len, out)) + len(out) < n:
        out.append(rng.choice(WORDS))
    return " ".join(out)[:n]


def post(port: int, body: dict, gzip_ok: bool, timeout: float = 300, parse: bool = False) -> tuple[int, int, float]:
    """(status, bytes on the wire, seconds)"""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if gzip_ok:
        headers["Accept-Encoding"] = "gzip"
    conn.request("POST", "/api/v1/trace", json.dumps(body).encode(), headers)
    r = conn.getresponse()
    data = r.read()  # not parsed: a 39 MB json.loads here would hold this process's GIL and stall the poller
    if parse and r.getheader("content-encoding") == "gzip":
        json.loads(gzip.decompress(data))
    elif parse and r.status == 200:
        json.loads(data)
    conn.close()
    return r.status, len(data), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", default=str(ROOT / "models" / "zoo"))
    ap.add_argument("--model", default="austen-lstm")
    ap.add_argument("--chars", type=int, default=7000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--no-gzip", action="store_true", help="clients do not send Accept-Encoding: gzip")
    ap.add_argument("--distinct", action="store_true", help="each client's text differs by its last character "
                    "(no two requests can share a run or a body)")
    ap.add_argument("--pythonpath", default="", help="PYTHONPATH for the server (e.g. a worktree of an older commit)")
    args = ap.parse_args()

    big = {"model": args.model, "text": text_of(args.chars, 1), "layer": 1, "state": "c", "topk": 100}
    with tempfile.TemporaryDirectory() as tmp, \
            running_server(Path(args.models_dir), Path(tmp) / "data", Path(tmp) / "serve.log",
                           RNNSCOPE_DEFAULT_MODEL=args.model, RNNSCOPE_TORCH_THREADS="1",
                           **({"PYTHONPATH": args.pythonpath} if args.pythonpath else {})) as base:
        port = int(base.rsplit(":", 1)[1])
        status, size, secs = post(port, big, not args.no_gzip, parse=True)  # warm: the model run, compiled kernels
        print(f"warm-up: {status}, {size / 1e6:.1f} MB on the wire, {secs:.1f} s")

        results: list[tuple[int, int, float]] = []
        health: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    c.request("GET", "/healthz")
                    c.getresponse().read()
                    c.close()
                    health.append(time.perf_counter() - t0)
                except OSError:
                    health.append(float("inf"))
                time.sleep(0.05)

        def one(n: int) -> None:
            body = {**big, "text": big["text"][:-1] + "abcdefghijklmnopqrstuvwxyz"[n % 26]} if args.distinct else big
            results.append(post(port, body, not args.no_gzip))

        small: list[tuple[int, int, float]] = []

        def small_trace() -> None:
            time.sleep(1.0)
            small.append(post(port, {"model": args.model, "text": text_of(300, 99), "layer": 0, "state": "h",
                                     "units": [1, 2]}, True, parse=True))

        poller = threading.Thread(target=poll)
        poller.start()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(n,)) for n in range(args.clients)] + [threading.Thread(target=small_trace)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stop.set()
        poller.join()

    times = sorted(r[2] for r in results)
    print(f"{args.clients} parallel: statuses {sorted(r[0] for r in results)}, "
          f"{statistics.mean(r[1] for r in results) / 1e6:.1f} MB each on the wire, "
          f"{times[0]:.1f}-{times[-1]:.1f} s each, {wall:.1f} s wall")
    hs = sorted(health)
    p99 = hs[min(len(hs) - 1, int(len(hs) * 0.99))]
    print(f"/healthz during the burst: n={len(hs)} p50 {statistics.median(hs) * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {hs[-1] * 1000:.0f} ms")
    print(f"small new trace: {small[0][0]}, {small[0][2]:.2f} s")
    print(f"cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
