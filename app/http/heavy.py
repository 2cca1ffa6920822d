"""Work that is not a model run but still costs seconds of CPU: big response bodies and generation streams.

Measured on 2 shared cores (bench/heavy_responses.py, models/zoo/austen-lstm, 7,000 characters, layer 1,
state c, every unit, top-100 predictions: 39 MB of JSON, 14 MB gzipped), eight requests at once:

                                   before                           after
  identical, gzip                  15-16 s each, /healthz p99 6.2 s  3.1-3.2 s each (one shared build), p99 32 ms
  different texts, no gzip         5-23 s, p99 1.5 s, max 1.65 s     6-20 s, p99 34 ms, max 91 ms
  different texts, gzip            7-24 s, p99 1.5 s, max 1.59 s     7-23 s, p99 28 ms, max 139 ms

Before, every request built its body at once: json.dumps of a 39 MB value is one C call that holds
the GIL for seconds, so the event loop could not run. (Different texts are each a model run too,
queued on the model slots: that, not the bodies, sets their 6-23 s.)

- ResponseSlots: big bodies are built on one of a few slots, in arrival order (FifoSlots); a request
  that cannot get one within the queue timeout gets a 503 with Retry-After (app.core.slots.Overloaded).
  Identical requests in flight share one build.
- json_chunks: the body, serialised in the worker thread in pieces of a few thousand numbers (the
  thread lets go of the GIL between pieces, so the event loop keeps answering; app.http.server also sets a
  1 ms switch interval), joined into 1 MB chunks.
- encoded, ReadyResponse: gzip in the same thread (zlib lets go of the GIL) when the client accepts
  it; the chunks go out one at a time with Content-Length and Content-Encoding, so GZipMiddleware
  passes them through untouched.
- StreamSlots: at most N generation streams at once; one more is a 503 at once (a stream is
  minutes of stepping a model, so queueing for one would only hold a connection open).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response

from app.core.slots import BUSY_RETRY_S, FifoSlots, Overloaded

T = TypeVar("T")

HEAVY_VALUES = 200_000  # numbers in one response from which it takes a response slot (~1.5 MB of JSON)
PIECE_VALUES = 4_096  # numbers serialised per json.dumps call: ~1-2 ms holding the GIL
CHUNK_BYTES = 1 << 20  # a big body goes out in pieces of about this many bytes
GZIP_MIN_BYTES = 1024  # as GZipMiddleware's minimum_size in app/main.py
GZIP_LEVEL = 1  # as app.main.GZIP_LEVEL: 39 MB -> ~14 MB in ~0.4 s on one core
STREAM_RETRY_S = 10

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode  # JSONResponse's


class ResponseSlots:
    """n slots for building big bodies, handed out in arrival order; a 503 after queue_timeout s.
    build() shares one body among identical requests in flight (eight clients asking for the same
    39 MB trace at once cost one build, not eight)."""

    def __init__(self, slots: int, queue_timeout: float):
        self.slots = slots
        self.queue_timeout = queue_timeout
        self._free = FifoSlots(slots)
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future] = {}
        self.served = 0  # bodies built on a slot (tests, stats)
        self.shared = 0  # requests answered with a body built for an identical one

    def build(self, key: Hashable, work: Callable[[], T]) -> T:
        """work() on a slot, or the result of an identical build already in flight."""
        with self._lock:
            running = self._inflight.get(key)
            if running is None:
                mine = self._inflight[key] = Future()
        if running is not None:
            try:
                result = running.result(timeout=2 * self.queue_timeout)  # its queueing, then its build
            except FutureTimeout:
                raise Overloaded("the server is busy building this same large response for another request; "
                                 "try again shortly", BUSY_RETRY_S) from None
            with self._lock:
                self.shared += 1
            return result
        try:
            with self.hold():
                result = work()
        except BaseException as e:
            mine.set_exception(e)
            raise
        else:
            mine.set_result(result)
            return result
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self._free.acquire(self.queue_timeout) is None:
            raise Overloaded(f"the server is busy building other large responses (waited {self.queue_timeout:g} s); "
                             "try again shortly, or ask for fewer values (one state, fewer units, a smaller topk)",
                             BUSY_RETRY_S)
        try:
            yield
            self.served += 1
        finally:
            self._free.release()


class StreamSlots:
    """At most n streams at once; take() is the ticket of one (its release() is idempotent)."""

    def __init__(self, n: int):
        self.n = n
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        return self._open

    def take(self) -> StreamTicket:
        with self._lock:
            if self._open >= self.n:
                raise Overloaded(f"{self.n} generation streams are already running, the most this server runs at "
                                 "once; try again shortly", STREAM_RETRY_S)
            self._open += 1
        return StreamTicket(self)

    def _give_back(self) -> None:
        with self._lock:
            self._open -= 1


class StreamTicket:
    def __init__(self, slots: StreamSlots):
        self._slots = slots
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._slots._give_back()

    def bind(self, owner: Any) -> None:
        """Release when `owner` (the stream's generator) is collected, should nothing else release it:
        Starlette may drop a stream that never started without closing it."""
        weakref.finalize(owner, self.release)


# ---- bodies built in pieces ------------------------------------------------------------------
@dataclass(frozen=True)
class Pieces:
    """A long JSON list written a few rows at a time: rows(s) is the JSON value of the rows in slice s.
    The feature that owns the shape says how a slice is written (app.trace.schemas); this writes the list."""

    length: int
    per_row: int  # numbers in one row: sizes the slices so each json.dumps call stays short
    rows: Callable[[slice], list]


def json_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON (what JSONResponse writes), serialised in pieces."""
    return b"".join(json_chunks(value))


def json_chunks(value: Any, size: int = CHUNK_BYTES) -> list[bytes]:
    """json_bytes(value) cut into chunks of about `size` bytes: no step holds the GIL for a whole
    39 MB join, and the event loop hands the socket one chunk at a time."""
    parts: list[str] = []
    _write(value, parts)
    chunks: list[bytes] = []
    group: list[str] = []
    length = 0
    for part in parts:
        group.append(part)
        length += len(part)
        if length >= size:
            chunks.append("".join(group).encode("utf-8"))
            group, length = [], 0
    if group or not chunks:
        chunks.append("".join(group).encode("utf-8"))
    return chunks


def _rows(n: int, per_row: int) -> Iterator[slice]:
    step = max(1, PIECE_VALUES // max(1, per_row))
    for start in range(0, n, step):
        yield slice(start, start + step)


def _list_of_pieces(pieces: Iterator[str], parts: list[str]) -> None:
    """'[' + the pieces' items joined by ',' + ']'; each piece is a JSON list whose brackets are dropped."""
    parts.append("[")
    first = True
    for piece in pieces:
        time.sleep(0)  # let go of the GIL between pieces: a thread waiting for it (the event loop) may take it
        if piece == "[]":
            continue
        if not first:
            parts.append(",")
        parts.append(piece[1:-1])
        first = False
    parts.append("]")


def _write(value: Any, parts: list[str]) -> None:
    if isinstance(value, dict):
        parts.append("{")
        for n, (k, v) in enumerate(value.items()):
            if n:
                parts.append(",")
            parts.append(_dumps(str(k)))
            parts.append(":")
            _write(v, parts)
        parts.append("}")
    elif isinstance(value, Pieces):
        _list_of_pieces((_dumps(value.rows(s)) for s in _rows(value.length, value.per_row)), parts)
    elif isinstance(value, (list, tuple)) and len(value) > PIECE_VALUES:
        _list_of_pieces((_dumps(list(value[s])) for s in _rows(len(value), 1)), parts)
    elif isinstance(value, list) and any(isinstance(v, (dict, Pieces)) for v in value):
        parts.append("[")
        for n, v in enumerate(value):
            if n:
                parts.append(",")
            _write(v, parts)
        parts.append("]")
    else:
        parts.append(_dumps(value))


def accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def encoded(chunks: list[bytes], gzip_ok: bool) -> tuple[list[bytes], str | None]:
    """(the chunks to send, their Content-Encoding): gzipped here, in the caller's worker thread, when
    the client accepts it (zlib lets go of the GIL while it works)."""
    if not gzip_ok or sum(map(len, chunks)) < GZIP_MIN_BYTES:
        return chunks, None
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    out = [z.compress(chunk) for chunk in chunks] + [z.flush()]
    return [c for c in out if c], "gzip"


class ReadyResponse(Response):
    """A body already built (and compressed) in a worker thread, sent a chunk at a time with its
    Content-Length; with Content-Encoding set, GZipMiddleware passes it through untouched."""

    def __init__(self, chunks: list[bytes], encoding: str | None, media_type: str = "application/json"):
        headers = {"Vary": "Accept-Encoding"}
        if encoding:
            headers["Content-Encoding"] = encoding
        super().__init__(b"", media_type=media_type, headers=headers)
        self.chunks = [c for c in chunks if c] or [b""]
        self.headers["content-length"] = str(sum(map(len, self.chunks)))

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.chunks) - 1
        for n, chunk in enumerate(self.chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": n < last})
