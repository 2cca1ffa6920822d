"""Arrays to the plain JSON values the API answers with: rounded floats, per-position predictions."""

from __future__ import annotations

import numpy as np


def rounded(a, decimals: int) -> list:
    """Nested lists of floats rounded to `decimals` (float16 noise beyond that only costs bytes)."""
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def predictions(chars: list[str], ids: np.ndarray | None, probs: np.ndarray | None,
                decimals: int) -> list[list[dict]] | None:
    """Per position [{char, p}], likeliest first; None when the trace kept no predictions."""
    if ids is None or probs is None:
        return None
    return [[{"char": chars[i], "p": p} for i, p in zip(ri, rp)]
            for ri, rp in zip(np.asarray(ids).tolist(), rounded(probs, decimals))]
