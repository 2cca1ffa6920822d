"""Process-wide settings for model runs: bounded native caches and one share of the cores per slot."""

from __future__ import annotations

import os

ONEDNN_CACHE = 8  # oneDNN primitives kept; a trace of a new length needs a new one anyway
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc mallopt() parameters
MMAP_THRESHOLD = 16 << 20  # blocks above this come from and go back to the OS
TRIM_THRESHOLD = 64 << 20  # free memory an arena keeps at its top for the next trace


def bound_native_memory() -> list[str]:
    """Stop two native caches from growing a long-running server without bound; returns what was set.

    Measured under bench/load.py (texts of 200-5,000 characters): RSS grew ~0.5 MB per request
    with the trace cache full and flat. oneDNN keeps a compiled LSTM primitive per sequence length
    (up to 1,024 of them, ~0.3 MB each), and glibc's heap fragmented under large float arrays freed
    from many threads. Trace outputs now come from mapped buffers outside malloc
    (models/buffers.py); what malloc still serves is each chunk's temporaries (a few MiB each).
    A fixed 16 MiB mmap threshold keeps those in two arenas for reuse: at 128 KiB every trace
    faulted in ~180 MB of fresh pages (0.68 s against 0.57 s for 2,000 characters on a 2x512
    LSTM). Must run before the first model pass; an operator's own ONEDNN_PRIMITIVE_CACHE_CAPACITY
    is kept.
    """
    done = []
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(ONEDNN_CACHE)
        done.append(f"oneDNN primitive cache {ONEDNN_CACHE}")
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                and libc.mallopt(M_ARENA_MAX, 2) == 1):
            done.append(f"malloc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB, "
                        "2 arenas")
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass
    return done


def default_torch_threads(slots: int, cpus: int | None = None) -> int:
    """One share of the cores per concurrent run: 2 runs on 2 cores get 1 thread each, never 2 x 2."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, slots))
