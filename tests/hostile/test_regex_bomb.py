"""Regular expressions that are cheap to send and ruinous to compile, against a real `rnnscope serve`.

`regex` writes counted repeats out in full when it compiles, with no time limit: unchecked, `a{2000000}b`
froze a worker for ~0.4 s and kept ~130 MB (the module cached it), `(?:(?:a{1000}){1000}){1000}` and
`a{4294967294}` ran until memory ran out. Both ways a visitor's pattern gets compiled are tried here:
the Find units panel (GET /ui/find-units, probe=regex) and POST /api/v1/share, which compiles the
pattern to validate it. Each must be a fast 422 naming the pattern; /healthz must answer quickly in
between; the server's memory must not grow. The server runs under an address-space cap, so a
regression fails this test rather than the machine. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import json
import resource
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_tiny_model
from tests.faults.conftest import serving

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")]

TEXT = 'The cat sat on the mat. "Hello," she said, and the dog ran off.'
BOMBS = [
    "a{2000000}b", "(?:(?:a{1000}){1000}){1000}", "a{4294967294}", "(a{999}){999}", "a{0,4294967294}",
    "(?:a{1000}){1000,}", "(?:a|b{1000}){1000}", "(?:(?R)|a{1000}){1000}", "(?:(a)|b){1000}(?:(a)|b){1000}",
    "[a-z]{1000000}", "(?:\\w{500}){500}", "(?i)(?:[\\w--\\d]){1000}", "(?V1fi)(?:[\\p{L}\\p{N}]){999}",
    "x{99999999999999999999}", "(?:(?:(?:a{100}){100}){100}){100}", "\\N{1,1000000}", "a(?#c){3000000}",
    "(?:ab){1000}(?:cd){1000}(?:(?:ef){100}){100}", "((((a{1000}){1000}){1000}){1000})", "q{1000001}",
]
MESSAGE = "the regular expression"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def timed(req: urllib.request.Request | str, timeout: float = 30) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    return status, body, time.perf_counter() - t0


def find_units(base: str, pattern: str) -> tuple[int, str, float]:
    query = urllib.parse.urlencode({"model": "tiny-lstm", "text": TEXT, "source": "probe", "probe": "regex",
                                    "pattern": pattern})
    return timed(urllib.request.Request(f"{base}/ui/find-units?{query}", headers={"HX-Request": "true"}))


def share(base: str, pattern: str) -> tuple[int, str, float]:
    body = json.dumps({"model": "tiny-lstm", "text": TEXT, "probe": "regex", "pattern": pattern}).encode()
    return timed(urllib.request.Request(f"{base}/api/v1/share", data=body, method="POST",
                                        headers={"Content-Type": "application/json"}))


def test_regex_bombs_are_refused_fast_without_memory_growth(tmp_path):
    assert len(set(BOMBS)) == 20
    write_tiny_model(tmp_path / "models" / "tiny-lstm", "lstm", seed=3)
    with serving(tmp_path / "models", tmp_path / "data", tmp_path / "serve.log",
                 RNNSCOPE_TORCH_THREADS="1", RNNSCOPE_RATE_LIMIT="0", RNNSCOPE_SHARE_RATE_LIMIT="0") as server:
        pid = server.proc.pid
        # a cap well above what it needs (threads and malloc arenas reserve address space), far below a bomb
        cap = vm_size(pid) + (2 << 30)
        resource.prlimit(pid, resource.RLIMIT_AS, (cap, cap))
        for pattern in ("[A-Z][a-z]+", "h[ae]t|c.t", "(?:the){e<=1}"):  # warm-up: both routes work as before
            status, body, _ = find_units(server.base, pattern)
            assert status == 200, body
            status, body, _ = share(server.base, pattern)
            assert status in (200, 201), body
        before = rss_mb(pid)
        worst = {"find-units": 0.0, "share": 0.0, "healthz": 0.0}
        for pattern in BOMBS:
            status, body, seconds = find_units(server.base, pattern)
            assert status == 422 and 'data-field="pattern"' in body and MESSAGE in body, (pattern, status, body)
            worst["find-units"] = max(worst["find-units"], seconds)
            status, body, seconds = share(server.base, pattern)
            detail = json.loads(body)["detail"]
            assert status == 422 and detail.startswith("pattern: " + MESSAGE), (pattern, status, detail)
            worst["share"] = max(worst["share"], seconds)
            status, _, seconds = timed(server.base + "/healthz", timeout=10)
            assert status == 200
            worst["healthz"] = max(worst["healthz"], seconds)
        grown = rss_mb(pid) - before
        assert server.proc.poll() is None
        log = server.log()
    print(f"worst seconds {worst}; RSS grew {grown:.1f} MB over {len(BOMBS)} bombs x 2 routes")
    assert worst["find-units"] < 1 and worst["share"] < 1, worst
    assert worst["healthz"] < 0.3, worst
    assert grown < 50, f"RSS grew {grown:.1f} MB over {len(BOMBS)} bombs"
    assert "Traceback" not in log and "MemoryError" not in log
