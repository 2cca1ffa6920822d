"""The one timer the speed scripts share, so their medians are measured the same way."""

from __future__ import annotations

import statistics
import time


def median_ms(fn, repeats: int, before=None) -> float:
    """Median wall time of fn() over `repeats` calls, in ms; `before()` (untimed) runs ahead of each, e.g. to empty a
    cache so that every call is cold."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)
