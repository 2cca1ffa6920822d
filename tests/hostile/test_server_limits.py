"""Limits that only a real `rnnscope serve` (uvicorn + h11) enforces: oversized request lines and headers,
and the per-client rate limit keyed by the address a trusted proxy forwards."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.conftest import write_tiny_model
from tests.faults.conftest import serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("server-limit-models")
    write_tiny_model(root / "tiny-lstm", "lstm", seed=9)
    return root


def raw(base: str, request: bytes) -> bytes:
    """Send one raw HTTP/1.1 request; return the status line and headers the server answered with."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer and close before reading it all
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def test_oversized_request_lines_and_headers_get_a_400_not_a_hang(models, tmp_path):
    with serving(models, tmp_path / "data", tmp_path / "serve.log") as server:
        head = raw(server.base, b"GET /?text=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        head = raw(server.base, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 500_000 + b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        # a long text that fits the request line is told the text limit, in the page
        head = raw(server.base, b"GET /?text=" + b"a" * 30_000 + b" HTTP/1.1\r\nHost: x\r\nHX-Request: true\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 422 ") and b"content-security-policy" in head.lower()
        with urllib.request.urlopen(server.base + "/healthz", timeout=10) as r:  # and it still serves
            assert r.status == 200


def test_rate_limit_keys_on_the_forwarded_client_address_from_a_loopback_proxy(models, tmp_path):
    def get(base: str, client: str) -> tuple[int, dict[str, str], str]:
        req = urllib.request.Request(base + "/api/v1/models", headers={"X-Forwarded-For": client})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    with serving(models, tmp_path / "data", tmp_path / "serve.log", RNNSCOPE_RATE_LIMIT="2") as server:
        assert [get(server.base, "198.51.100.1")[0] for _ in range(2)] == [200, 200]
        status, headers, body = get(server.base, "198.51.100.1")
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert json.loads(body)["detail"].startswith("too many requests from your address")
        assert get(server.base, "198.51.100.2")[0] == 200  # another visitor behind the same proxy
        log = server.log()
    assert "rate limit 2/min per client" in log
