"""Deadlines that make long model work stop instead of running on after nobody waits for it.

Whoever runs model work on behalf of a request (the web app's model slots) sets a deadline for
the thread doing it; the long loops in models/ call check() between chunks or steps, and past
the deadline check() raises Overdue, which unwinds the work and frees whatever it held:

    with deadline.until(time.monotonic() + 30):
        trace = run_trace(...)  # raises Overdue once 30 s have passed, at the next chunk

A deadline belongs to one thread. Work that fans out to threads of its own (the trace's task
graph) reads current() once and passes it along to check(at) in those threads.
Without a deadline check() costs one attribute read and never raises: the CLI, the benches and
the training loop run as before.

Overdue is deliberately not an RnnscopeError: that one means "your input is wrong" (a 422),
while this one means the server gave up on the work (a 503).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

_local = threading.local()


class Overdue(Exception):
    """Model work ran past its deadline and was stopped (not the user's input: not an RnnscopeError)."""

    def __init__(self, late_s: float = 0.0):
        super().__init__(f"the work ran past its deadline ({late_s:.2f} s late) and was stopped")
        self.late_s = late_s


def current() -> float | None:
    """This thread's deadline (a time.monotonic() value), or None when it has none."""
    return getattr(_local, "at", None)


@contextmanager
def until(at: float | None) -> Iterator[float | None]:
    """Work in this block must end by `at` (time.monotonic()); None adds no deadline.

    Nested blocks keep the earlier of the two deadlines: inner work cannot outlive the outer limit."""
    outer = current()
    effective = outer if at is None else at if outer is None else min(outer, at)
    _local.at = effective
    try:
        yield effective
    finally:
        _local.at = outer


def within(seconds: float | None) -> AbstractContextManager[float | None]:
    """until(now + seconds); None adds no deadline."""
    return until(None if seconds is None else time.monotonic() + seconds)


def check(at: float | None = None) -> None:
    """Raise Overdue when the deadline has passed: `at` when given, else this thread's own."""
    limit = current() if at is None else at
    if limit is None:
        return
    now = time.monotonic()
    if now > limit:
        raise Overdue(now - limit)


def left(at: float | None = None) -> float | None:
    """Seconds until the deadline (negative once past), or None without one."""
    limit = current() if at is None else at
    return None if limit is None else limit - time.monotonic()
