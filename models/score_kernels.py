"""Compiled scoring kernels over float16 blocks (what the trace cache holds): ROC AUC, Pearson, spans.

The numpy routes (models.probes) make many whole-array passes per block: a tiled transpose, an
int32 sort and about ten more for the AUC; a float32 copy and four reductions for Pearson. Here
each kernel reads a block once or a few times per column, runs without the GIL (worker threads
score blocks in parallel) and stays in one core's cache, so ranking all 8,192 units of a 2-layer
512-unit LSTM on 2,000 characters fits the issue's 100 ms on two cores (bench/probe_speed.py).
float16 has 16 bits, which makes an exact 2-pass radix sort possible; float32 input keeps the
numpy routes.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

TILE = 32  # columns transposed together: one 64-byte cache line of a row feeds 32 of them
HALF_TO_FLOAT32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # by bit pattern


@numba.njit(nogil=True, cache=True)
def _twice_u_kernel(bits: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per column of bits (T, N), the int16 view of float16 values: 2 * #(neg < pos) + #(neg == pos).

    label (T,) is 1 for positives, 0 for negatives. Equal values (with -0 equal to +0) count half.
    """
    T, N = bits.shape
    out = np.empty(N, np.int64)
    tile = np.empty((TILE, T), np.int32)  # per column: order key | label << 16
    low = np.empty(T, np.int32)
    sorted_keys = np.empty(T, np.int32)
    lo = np.empty(257, np.int64)
    hi = np.empty(257, np.int64)
    for c0 in range(0, N, TILE):
        width = min(TILE, N - c0)
        for t in range(T):
            lab = np.int32(label[t]) << 16
            for c in range(width):
                v = np.int32(bits[t, c0 + c])
                s = v >> 15  # -1 for a negative value, 0 otherwise
                tile[c, t] = (32768 + ((v & 0x7FFF) ^ s) - s) | lab  # sign-magnitude -> order, in [1, 65535]
        for c in range(width):
            keys = tile[c]
            lo[:] = 0
            hi[:] = 0
            for t in range(T):
                k = keys[t]
                lo[(k & 255) + 1] += 1
                hi[((k >> 8) & 255) + 1] += 1
            for d in range(256):
                lo[d + 1] += lo[d]
                hi[d + 1] += hi[d]
            for t in range(T):  # stable LSD radix sort: by the low byte, then by the high byte
                k = keys[t]
                d = k & 255
                low[lo[d]] = k
                lo[d] += 1
            for t in range(T):
                k = low[t]
                d = (k >> 8) & 255
                sorted_keys[hi[d]] = k
                hi[d] += 1
            # 2U = sum over positives of the negatives below their run of equal values
            #    + (P * N - sum over negatives of the positives below theirs): no branch on the data.
            below_pos = np.int64(0)
            below_neg = np.int64(0)
            pos_seen = np.int64(0)
            neg_seen = np.int64(0)
            run_pos = np.int64(0)
            run_neg = np.int64(0)
            prev = np.int32(-1)
            for t in range(T):
                k = sorted_keys[t]
                value = k & 0xFFFF
                is_pos = np.int64(k >> 16)
                new_run = value != prev
                run_pos = pos_seen if new_run else run_pos
                run_neg = neg_seen if new_run else run_neg
                below_pos += is_pos * run_neg
                below_neg += (1 - is_pos) * run_pos
                pos_seen += is_pos
                neg_seen += 1 - is_pos
                prev = value
            out[c0 + c] = below_pos + pos_seen * neg_seen - below_neg
    return out


@numba.njit(nogil=True, cache=True)
def _sums_kernel(bits: np.ndarray, weights: np.ndarray, table: np.ndarray) -> tuple:
    """Per column of bits (T, N), the int16 view of float16 values: (sum x, sum x^2, sum x * w), float64.

    `table` is HALF_TO_FLOAT32. The inner loop runs along a row, so it reads the block once, in order.
    """
    T, N = bits.shape
    s1 = np.zeros(N)
    s2 = np.zeros(N)
    sw = np.zeros(N)
    for t in range(T):
        w = weights[t]
        for c in range(N):
            v = np.float64(table[np.uint16(bits[t, c])])
            s1[c] += v
            s2[c] += v * v
            sw[c] += v * w
    return s1, s2, sw


@numba.njit(nogil=True, cache=True)
def _counts_above_kernel(bits: np.ndarray, inside: np.ndarray, threshold: float, table: np.ndarray) -> tuple:
    """Per column of bits (T, N), float16 bit patterns: how many values exceed threshold inside the
    span (inside[t] = 1) and outside it, as int64. One in-order read of the block."""
    T, N = bits.shape
    above_in = np.zeros(N, np.int64)
    above_out = np.zeros(N, np.int64)
    for t in range(T):
        w = np.int64(inside[t])
        for c in range(N):
            on = np.int64(np.float64(table[np.uint16(bits[t, c])]) > threshold)
            above_in[c] += on * w
            above_out[c] += on * (1 - w)
    return above_in, above_out


# ---- float16 arrays in: the bit-pattern views and the table stay in this module -----------------
def twice_mann_whitney_u(x: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per column of float16 x (T, N) against bool label (T,): 2 * #(neg < pos) + #(neg == pos), int64."""
    return _twice_u_kernel(x.view(np.int16), label.view(np.uint8))


def column_sums(x: np.ndarray, weights: np.ndarray) -> tuple:
    """Per column of float16 x (T, N): (sum x, sum x^2, sum x * weights), float64."""
    return _sums_kernel(x.view(np.int16), weights, HALF_TO_FLOAT32)


def counts_above(x: np.ndarray, inside: np.ndarray, threshold: float) -> tuple:
    """Per column of float16 x (T, N): values above threshold inside the bool span mask, and outside."""
    return _counts_above_kernel(x.view(np.int16), inside.view(np.uint8), float(threshold), HALF_TO_FLOAT32)


def compile_in_background() -> threading.Thread:
    """Compile (or load from numba's cache) now, off the caller's thread, so the first probe does not wait."""

    def run() -> None:
        label = np.array([False, True])
        x = np.zeros((2, 2), dtype=np.float16)
        weights = label.astype(np.float64)
        for view in (x, x[:, ::2]):  # a contiguous block (a trace's, the cache's), a strided one
            twice_mann_whitney_u(view, label)  # numba compiles each layout
            column_sums(view, weights)
            counts_above(view, label, 0.5)

    thread = threading.Thread(target=run, name="score-kernels-compile", daemon=True)
    thread.start()
    return thread
