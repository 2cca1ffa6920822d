"""The LSTM cell recurrence c_t = f_t * c_{t-1} + u_t as one compiled loop over time.

It is the one sequential step of recording c (everything else is batched matrix work), and a
lazy trace runs it once per unit a view reads: a numpy loop pays ~3 µs of call overhead per
step, which for one unit of 5,000 characters was most of a 20 ms neuron change. Compiled, it is
the arithmetic alone: the same float32 multiply and add per element, in the same order.
"""

from __future__ import annotations

import threading

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _scan(f: np.ndarray, u: np.ndarray, c0: np.ndarray, out: np.ndarray) -> None:
    T, U = f.shape
    c = c0.copy()
    for t in range(T):
        for j in range(U):
            c[j] = f[t, j] * c[j] + u[t, j]
            out[t, j] = c[j]


def cell_recurrence(f: np.ndarray, u: np.ndarray, c0: np.ndarray) -> np.ndarray:
    """(T, U) float32 c_t for gates f (T, U), increments u (T, U) and the cell state before, c0 (U,)."""
    out = np.empty(f.shape, np.float32)
    _scan(f, u, np.ascontiguousarray(c0, dtype=np.float32).reshape(-1), out)
    return out


def compile_in_background() -> threading.Thread:
    """Compile (or load from numba's cache) off the caller's thread, so the first trace does not wait."""

    def run() -> None:
        block = np.zeros((2, 4), np.float32)
        # A gate sliced from the joined pre-activations is strided, i * g is contiguous: numba
        # compiles each pair of layouts apart, so warm every pair.
        for f in (block[:, :2].copy(), block[:, ::2]):
            for u in (block[:, :2].copy(), block[:, ::2]):
                cell_recurrence(f, u, np.zeros(2, np.float32))

    thread = threading.Thread(target=run, name="cell-scan-compile", daemon=True)
    thread.start()
    return thread
