"""Silent, slow and piled-up connections against a real `rnnscope serve` (app/http/server.py): each is closed
within its deadline, a flood of idle ones cannot lock out /healthz, and the log stays small.

Deadlines are set to 2 s here (30 s and less in production). Loopback only; every loop is bounded in
count and time; the server runs under an address-space cap."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from app.http.server import RepeatFilter, connection_cap, raise_nofile
from tests.conftest import write_tiny_model
from tests.share.server import free_port, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 2.0  # header, body and send timeouts of the servers below
SLACK = 3.0  # the deadline plus this: the timer, the loop, a busy 2-core box
MEMORY_CAP = 4 << 30  # address space of the server: a leak fails it, not the machine


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("connection-models")
    write_tiny_model(root / "tiny-lstm", "lstm", seed=9)
    return root


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@contextmanager
def hardened(models: Path, tmp: Path, **env_extra: str):
    """`rnnscope serve` on a free loopback port with 2 s deadlines; yields (port, pid, log path)."""
    port = free_port()
    exe = shutil.which("rnnscope", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "app.cli"]
    env = {**os.environ, "RNNSCOPE_MODELS_DIR": str(models), "RNNSCOPE_DATA_DIR": str(tmp / "data"),
           "RNNSCOPE_DEFAULT_MODEL": "tiny-lstm", "RNNSCOPE_RESCAN_SECONDS": "0", "RNNSCOPE_TORCH_THREADS": "1",
           "RNNSCOPE_HEADER_TIMEOUT": str(DEADLINE), "RNNSCOPE_BODY_TIMEOUT": str(DEADLINE),
           "RNNSCOPE_SEND_TIMEOUT": str(DEADLINE), **env_extra}
    env.pop("RNNSCOPE_DATABASE_URL", None)
    log_path = tmp / "serve.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_cap_memory)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rnnscope serve did not come up:\n" + log_path.read_text())
            time.sleep(0.2)
        yield port, proc.pid, log_path
    finally:
        stop(proc)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"", every: float = 0.5) -> float | None:
    """Seconds until the server closed `sock` (reading EOF or a reset), sending `trickle` every `every` s
    meanwhile; None when it stayed open for `seconds`."""
    t0 = time.monotonic()
    sock.settimeout(every)
    for _ in range(int(seconds / every) + 2):
        if time.monotonic() - t0 > seconds:
            return None
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:  # reset, broken pipe: closed
            return time.monotonic() - t0
    return None


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def get(port: int, path: str = "/healthz", timeout: float = 10) -> tuple[int, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        r.read()
        return r.status, time.perf_counter() - t0


def test_silent_slowloris_and_slow_body_connections_are_closed(models, tmp_path):
    with hardened(models, tmp_path) as (port, pid, log_path):
        with socket.create_connection(("127.0.0.1", port)) as silent:
            took = closed_within(silent, DEADLINE + SLACK)
        assert took is not None and took >= DEADLINE * 0.8, took

        # a slowloris: a request head one header line at a time, never finished; the deadline does not move
        with socket.create_connection(("127.0.0.1", port)) as loris:
            loris.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            took = closed_within(loris, DEADLINE + SLACK, trickle=b"X-a: b\r\n", every=0.3)
        assert took is not None, "a slowloris kept its connection open"

        # a slow body: the head arrives, the body trickles
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /api/v1/trace HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{")
            took = closed_within(slow, DEADLINE + SLACK, trickle=b" ", every=0.3)
        assert took is not None, "a slow body kept its connection open"

        # an idle keep-alive connection after a response: one request, then silence, then trickled bytes
        with socket.create_connection(("127.0.0.1", port)) as kept:
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            kept.settimeout(5)
            assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
            took = closed_within(kept, DEADLINE + SLACK, trickle=b"G", every=0.3)
        assert took is not None, "a connection trickling its second request head stayed open"

        assert get(port)[0] == 200  # and an ordinary request is still served
    log = log_path.read_text()
    assert "Traceback" not in log


def test_a_client_that_does_not_read_its_response_is_dropped(models, tmp_path):
    with hardened(models, tmp_path) as (port, pid, _):
        text = "The quick brown fox. " * 200  # 4,200 characters, every state: several MB of JSON
        body = ('{"model": "tiny-lstm", "topk": 0, "text": "%s"}' % text).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        with sock:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"POST /api/v1/trace HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(DEADLINE + SLACK + 2)  # read nothing for longer than the send timeout and the response's making
            sock.settimeout(5)
            got = 0
            head = b""
            for _ in range(100_000):  # bounded: at most a few MB arrive
                try:
                    chunk = sock.recv(1 << 20)
                except OSError:
                    break
                if not chunk:
                    break
                got += len(chunk)
                if len(head) < 4096:
                    head += chunk[:4096]
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        assert got < length, "the whole response arrived: the server never gave up on the reader"
        assert get(port)[0] == 200


def test_a_flood_of_idle_connections_leaves_healthz_fast_and_the_log_small(models, tmp_path):
    cap = 50
    with hardened(models, tmp_path, RNNSCOPE_MAX_CONNECTIONS=str(cap), RNNSCOPE_HEADER_TIMEOUT="20") as (port, pid,
                                                                                                      log_path):
        baseline_fds = open_fds(pid)
        with ExitStack() as stack:
            socks = []
            for _ in range(300):  # six times the cap, idle: connected, nothing sent
                s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
                socks.append(s)
            time.sleep(0.5)
            assert open_fds(pid) <= baseline_fds + cap + 5  # the cap holds: older idle ones were closed
            times = []
            for _ in range(20):
                status, seconds = get(port, timeout=5)
                assert status == 200
                times.append(seconds)
            times.sort()
            assert times[-1] < 0.3, times  # every one, not only the median
            # the oldest idle ones were closed for newer ones: reading them gives EOF at once
            socks[0].settimeout(2)
            try:
                assert socks[0].recv(1) == b""
            except ConnectionResetError:
                pass
        log = log_path.read_text()
    lines = [line for line in log.splitlines() if "connections open, the most allowed" in line]
    assert 1 <= len(lines) <= 3, lines  # hundreds of evictions, a few lines
    assert len(log) < 20_000
    assert "Too many open files" not in log and "Traceback" not in log


def test_repeat_filter_lets_one_through_then_counts_the_rest():
    now = [0.0]
    filt = RepeatFilter(window=10.0, clock=lambda: now[0])

    def record(msg: str = "accept failed: %s", level: int = logging.ERROR, args=("EMFILE",)) -> logging.LogRecord:
        return logging.LogRecord("asyncio", level, __file__, 1, msg, args, None)

    assert filt.filter(record())
    passed = sum(filt.filter(record()) for _ in range(10_000))
    assert passed == 0
    assert filt.filter(record("another message", args=()))  # another kind is not held back
    assert filt.filter(record(args=("ENFILE",)))  # nor the same template saying something else
    assert all(filt.filter(record(level=logging.INFO)) for _ in range(5))  # info lines never are
    now[0] = 11.0
    summary = record()
    assert filt.filter(summary)
    assert "10,000 more like this held back" in summary.getMessage()
    assert not filt.filter(record())
    # the same record through a second handler gets the same answer
    again = record("third kind", args=())
    assert filt.filter(again) and filt.filter(again)


def test_connection_cap_keeps_room_under_the_open_file_limit():
    assert connection_cap(1000, 20_000) == 1000
    assert connection_cap(1000, 1024) == 1024 - 256
    assert connection_cap(1000, 100) == 16  # never below a usable minimum
    assert connection_cap(5000, resource.RLIM_INFINITY) == 5000


def test_requests_in_progress_past_max_requests_get_a_503(models, tmp_path):
    with hardened(models, tmp_path, RNNSCOPE_MAX_REQUESTS="1", RNNSCOPE_SEND_TIMEOUT="30") as (port, pid, log_path):
        text = "The quick brown fox. " * 200
        body = ('{"model": "tiny-lstm", "topk": 100, "text": "%s"}' % text).encode()
        done: list[int] = []

        def big() -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/trace", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
                done.append(r.status)

        worker = threading.Thread(target=big)
        worker.start()
        time.sleep(0.3)  # the big one is in progress first: its model run and its 18 MB body take seconds
        refused = []
        for _ in range(100):  # bounded: while the big one is in progress
            if not worker.is_alive():
                break
            try:
                get(port, timeout=10)
            except urllib.error.HTTPError as e:
                refused.append((e.code, e.headers.get("retry-after"), e.read()))
            time.sleep(0.02)
        worker.join(timeout=60)
        assert done == [200]
        assert refused, "no request was refused while another was in progress"
        code, retry_after, detail = refused[0]
        assert code == 503 and int(retry_after) >= 1 and b"too many requests" in detail
        assert get(port)[0] == 200  # free again
    assert len(log_path.read_text()) < 20_000


def test_raise_nofile_never_lowers_the_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before, now = raise_nofile()
    assert before == soft and now >= soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now


def test_at_the_cap_a_newcomer_closes_a_slow_upload_when_none_is_idle(models, tmp_path):
    cap = 16
    with hardened(models, tmp_path, RNNSCOPE_MAX_CONNECTIONS=str(cap), RNNSCOPE_BODY_TIMEOUT="60") as (port, pid, _):
        with ExitStack() as stack:
            uploads = []
            for _ in range(cap + 4):  # every slot holds a body that never finishes
                s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
                s.sendall(b"POST /api/v1/trace HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100000\r\n\r\n{")
                uploads.append(s)
            time.sleep(1.5)  # past the grace a slow upload gets
            times = []
            for _ in range(5):
                status, seconds = get(port, timeout=5)
                assert status == 200
                times.append(seconds)
            assert max(times) < 0.3, times
            assert open_fds(pid) <= 11 + cap + 10
