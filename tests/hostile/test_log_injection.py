"""Log injection: a visitor's path, query or headers cannot forge a log line or put control bytes in the log.

The access log writes the %-decoded request path; `GET /x%0AINFO:...` used to write a second line that
read as a record of its own, and %00 wrote a NUL. Against a real `rnnscope serve` (app/http/log_safety.py,
installed by create_app) and on the record class itself. Loopback only; bounded loops.
"""

from __future__ import annotations

import logging
import socket
import sys

import pytest

from app.http.log_safety import CONTINUATION, SafeLogRecord, escape, escape_block, install
from tests.conftest import write_tiny_model
from tests.faults.conftest import serving

FORGED = "INFO:     rnnscope.access: GET /forged 200 1 ms"
MARK = "zq"  # every hostile path starts /zq, so its access line is easy to find


def raw(base: str, request: bytes) -> bytes:
    """Send one raw HTTP/1.1 request (Connection: close); return the status line."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        for _ in range(1000):  # bounded: the server closes after one response
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n" in data:
                break
    return data.split(b"\r\n", 1)[0]


def get(path: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers + b"\r\n"


HOSTILE_PATHS = [
    b"/zq1%0A" + FORGED.replace(" ", "%20").encode(),  # LF: a forged record on its own line
    b"/zq2%0D%0A" + FORGED.replace(" ", "%20").encode(),  # CRLF
    b"/zq3%0D" + FORGED.replace(" ", "%20").encode(),  # CR alone: a terminal returns to the line start
    b"/zq4%00nul",
    b"/zq5%1B%5B2J%1B%5B31mred",  # ANSI escapes: clear the screen, colour
    b"/zq6%C2%85nel",  # U+0085, a C1 line break
    b"/zq7%E2%80%A8ls%E2%80%A9ps",  # U+2028 and U+2029, line and paragraph separators
    b"/zq8%E2%80%AEevil",  # U+202E, right-to-left override
    b"/zq9%7F%08%09tab",  # DEL, backspace, tab
    b"/zq10?text=%0A" + FORGED.replace(" ", "%20").encode(),  # the query: only its size is logged
]


@pytest.mark.slow
def test_hostile_paths_and_headers_cannot_forge_a_log_line(tmp_path):
    write_tiny_model(tmp_path / "models" / "tiny-lstm", "lstm", seed=5)
    with serving(tmp_path / "models", tmp_path / "data", tmp_path / "serve.log", RNNSCOPE_TORCH_THREADS="1",
                 RNNSCOPE_RATE_LIMIT="0") as server:
        statuses = [raw(server.base, get(path)) for path in HOSTILE_PATHS]
        # headers: %-escapes are not decoded there; raw CR, LF or NUL in a header is h11's 400
        statuses.append(raw(server.base, get(b"/zq11", b"X-Forwarded-For: 198.51.100.7%0A" + FORGED.encode()
                                         + b"\r\nUser-Agent: a%0Ab\x85\r\nReferer: /%00\r\n")))
        statuses.append(raw(server.base, get(b"/zq12", b"X-Evil: a\x00b\r\n")))
        statuses.append(raw(server.base, b"GET /zq13\x00 HTTP/1.1\r\nHost: x\r\n\r\n"))
        statuses.append(raw(server.base, b"GET /zq14 HTTP/1.1\r\nHost: x\r\nX-A: 1\rINFO: forged\r\n\r\n"))
        assert raw(server.base, get(b"/healthz")).startswith(b"HTTP/1.1 200")
        log_bytes = server.log_path.read_bytes()
    assert all(s.startswith(b"HTTP/1.1 ") for s in statuses), statuses
    assert b"\x00" not in log_bytes
    text = log_bytes.decode("utf-8")
    for bad in ("\r", "\x1b", "\x7f", "\x08", "\x85", "\u2028", "\u2029", "\u202e"):
        assert bad not in text, repr(bad)
    lines = text.split("\n")
    assert not [line for line in lines if "forged" in line and not line.startswith("INFO:     rnnscope.access: GET /zq")]
    access = {line.split()[3]: line for line in lines if line.startswith("INFO:     rnnscope.access: GET /zq")}
    assert access["/zq1\\nINFO:"].endswith("ms") and FORGED.replace("INFO:     ", "") in access["/zq1\\nINFO:"]
    assert "/zq2\\r\\nINFO:" in access and "/zq3\\rINFO:" in access
    assert "/zq4\\x00nul" in access and "/zq5\\x1b[2J\\x1b[31mred" in access and "/zq6\\x85nel" in access
    assert "/zq7\\u2028ls\\u2029ps" in access and "/zq8\\u202eevil" in access and "/zq9\\x7f\\x08\\ttab" in access
    assert "/zq10" in access and "(query" in access["/zq10"] and "forged" not in access["/zq10"]
    assert "/zq11" in access


def test_escape_keeps_text_and_escapes_controls():
    assert escape("plain ü 日本 \\n") == "plain ü 日本 \\n"
    assert escape("a\nb\r\tc\x00\x1b\x7f\x85\u2028\u2029\u202e\u2066") == \
        "a\\nb\\r\\tc\\x00\\x1b\\x7f\\x85\\u2028\\u2029\\u202e\\u2066"
    assert escape_block("Traceback\n  File x\nValueError: a\nINFO: forged\x00") == "\n".join(
        CONTINUATION + s for s in ["Traceback", "  File x", "ValueError: a", "INFO: forged\\x00"])


def test_safe_records_keep_one_line_per_message_and_indent_tracebacks():
    handler_lines = []
    formatter = logging.Formatter("%(levelname)s: %(name)s: %(message)s")
    try:
        raise ValueError("bad value\nINFO: rnnscope.access: GET /forged 200")
    except ValueError:
        exc_info = sys.exc_info()
    record = SafeLogRecord("rnnscope.test", logging.ERROR, __file__, 1, "path %s failed\n%s", ("/x\nINFO: f", "\x00"),
                           exc_info)
    assert record.msg == "path %s failed\n%s"  # the template stays (RepeatFilter keys on it)
    handler_lines = formatter.format(record).split("\n")
    assert handler_lines[0] == "ERROR: rnnscope.test: path /x\\nINFO: f failed\\n\\x00"
    assert all(line.startswith(CONTINUATION) for line in handler_lines[1:])
    assert any("ValueError: bad value" in line for line in handler_lines)
    assert formatter.format(record).split("\n") == handler_lines  # the cached traceback is not indented twice


def test_install_makes_every_record_safe_and_is_idempotent(caplog):
    before = logging.getLogRecordFactory()
    try:
        install()
        once = logging.getLogRecordFactory()
        install()
        assert logging.getLogRecordFactory() is once
        with caplog.at_level(logging.INFO, logger="rnnscope.test"):
            logging.getLogger("rnnscope.test").info("GET %s", "/x\nINFO: forged\x00")
        assert isinstance(caplog.records[-1], SafeLogRecord)
        assert caplog.records[-1].getMessage() == "GET /x\\nINFO: forged\\x00"
    finally:
        logging.setLogRecordFactory(before)
