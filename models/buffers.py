"""Large output arrays: memory mapped in one system call, and kept for reuse once dropped.

On the virtual machines measured here, the first write to fresh memory costs about 2-4 s per GB
when it is faulted in page by page (np.empty, then writing), about 0.4 s per GB (sometimes much
more) when mmap's MAP_POPULATE maps it up front, and nothing when the pages are still mapped
from an array dropped earlier. A 50,000-character trace writes 0.8-1.6 GB; a server's traces
come and go through its cache, so a bounded pool of dropped buffers removes that cost in
steady state.
"""

from __future__ import annotations

import bisect
import math
import mmap
import threading
import weakref

import numpy as np

MIN_POOLED_BYTES = 1 << 20  # smaller arrays fault in few pages: plain np.empty
GRAIN = 1 << 20  # regions are whole MiB, so texts of nearby lengths share them
MAX_WASTE = 1.5  # a free region serves a request at most this many times smaller


class BufferPool:
    """Hands out arrays backed by mapped regions; a region comes back when its array (and every
    view of it) is gone, and is kept while the free regions total at most `limit_bytes`."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = int(limit_bytes)
        self._free: list[tuple[int, int, mmap.mmap]] = []  # (size, serial, region), sorted by size
        self._free_bytes = 0
        self._serial = 0
        self._lock = threading.Lock()
        self.reused = 0  # arrays served from a kept region (for tests and benchmarks)

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    def resize(self, limit_bytes: int) -> None:
        with self._lock:
            self.limit_bytes = int(limit_bytes)
            while self._free and self._free_bytes > self.limit_bytes:
                self._drop_largest()

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """Like np.empty (contents undefined), from a kept region when one fits."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        flag = getattr(mmap, "MAP_POPULATE", 0)
        if nbytes < MIN_POOLED_BYTES or not flag:
            return np.empty(shape, dtype)
        region = self._take(nbytes)
        if region is None:
            try:
                region = mmap.mmap(-1, -(-nbytes // GRAIN) * GRAIN,
                                   flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flag)
            except OSError:  # out of address space, or a kernel that refuses the flag
                return np.empty(shape, dtype)
        root = np.frombuffer(region, dtype=dtype, count=math.prod(shape))
        weakref.finalize(root, self._give_back, region)  # views of root keep root alive
        return root.reshape(shape)

    def _take(self, nbytes: int) -> mmap.mmap | None:
        with self._lock:
            at = bisect.bisect_left(self._free, (nbytes, -1))
            if at < len(self._free) and self._free[at][0] <= nbytes * MAX_WASTE + GRAIN:
                size, _, region = self._free.pop(at)
                self._free_bytes -= size
                self.reused += 1
                return region
        return None

    def _give_back(self, region: mmap.mmap) -> None:
        size = len(region)
        with self._lock:
            if size > self.limit_bytes:
                return  # dropped: unmapped when its last reference goes
            self._serial += 1
            bisect.insort(self._free, (size, self._serial, region))
            self._free_bytes += size
            while self._free_bytes > self.limit_bytes:
                self._drop_largest()

    def _drop_largest(self) -> None:
        size, _, _ = self._free.pop()
        self._free_bytes -= size


POOL = BufferPool(256 * 1024 * 1024)
