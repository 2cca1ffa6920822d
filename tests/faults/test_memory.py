"""Memory stays flat on a real server once its trace cache is full, whatever lengths the texts have.

Without app.core.runtime.bound_native_memory, oneDNN's per-length LSTM primitives and glibc heap
fragmentation grew RSS by ~0.4 MB for every new text length, forever.
"""

from __future__ import annotations

import random
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_tiny_model

from .conftest import serving

pytestmark = pytest.mark.slow

TEXT = ('"I cannot think what you mean," said she, "by talking of it." He laughed. '
        "Nobody answered; the room was quiet for a while, and then the door opened.\n") * 60


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_rss_is_flat_after_warm_up_with_texts_of_every_length(tmp_path):
    write_tiny_model(tmp_path / "models" / "tiny-lstm", "lstm", layers=2, hidden=128)
    rnd = random.Random(0)

    def visit(base: str) -> None:
        n = rnd.randint(200, 3000)
        start = rnd.randrange(len(TEXT) - n)
        query = urllib.parse.urlencode({"text": TEXT[start : start + n], "unit": rnd.randrange(128)})
        req = urllib.request.Request(f"{base}/?{query}", headers={"HX-Request": "true"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
            r.read()

    with serving(tmp_path / "models", tmp_path / "data", tmp_path / "serve.log",
                 RNNSCOPE_CACHE_BYTES=str(16 * 1024 * 1024)) as server:
        for _ in range(40):  # warm-up: the trace cache fills, allocator pools settle
            visit(server.base)
        warm = rss_mb(server.proc.pid)
        for _ in range(120):
            visit(server.base)
        grown = rss_mb(server.proc.pid) - warm
        log = server.log()
    assert "native memory bounded" in log
    assert grown < 25, f"RSS grew {grown:.1f} MB over 120 requests after warm-up"
