"""A busy server, made on purpose: another request's model run holds a model slot until the block ends."""

from __future__ import annotations

import threading
from contextlib import contextmanager


@contextmanager
def slot_held(slots):
    """Hold one of `slots` (a ModelSlots; with max_concurrent_traces=1, the only one) for the with-block, from a
    thread, as a slow request would; released and joined afterwards whatever the block did."""
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=lambda: slots.run(None, lambda: (started.set(), release.wait(10))))
    holder.start()
    try:
        assert started.wait(10)
        yield
    finally:
        release.set()
        holder.join()
