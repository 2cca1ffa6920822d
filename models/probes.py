"""Per-character probes computed from the text itself, and vectorised unit ranking.

A probe gives each position t a label (binary) or a number, describing the text *after reading
character t* — the same convention as the trace. Ranking scores every unit of every state of
every layer at once: ROC AUC for binary probes (taken as max(AUC, 1-AUC), the sign says which
way), |Pearson r| for numeric ones.
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass

import numpy as np
import regex

from .errors import RnnscopeError

BINARY, NUMERIC = "binary", "numeric"
OPENERS, CLOSERS = "([{", ")]}"
REGEX_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Probe:
    id: str
    kind: str
    title: str


PROBES = {
    p.id: p
    for p in (
        Probe("quotes", BINARY, 'inside double quotes (each " toggles, a blank line resets)'),
        Probe("brackets", BINARY, "inside parentheses or brackets"),
        Probe("bracket_depth", NUMERIC, "nesting depth of parentheses and brackets"),
        Probe("line_position", NUMERIC, "characters since the last newline"),
        Probe("indent", NUMERIC, "indentation of the current line"),
        Probe("comment", BINARY, "inside a # comment (Python tokenize, tolerant fallback)"),
        Probe("string", BINARY, "inside a string literal (Python tokenize, tolerant fallback)"),
        Probe("word_start", BINARY, "first character of a word"),
        Probe("vowel", BINARY, "a vowel"),
        Probe("regex", BINARY, "inside a match of your regular expression"),
    )
}


def quotes(text: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=bool)
    inside, prev = False, ""
    for t, ch in enumerate(text):
        if ch == "\n" and prev == "\n":
            inside = False
        elif ch == '"':
            inside = not inside
        elif ch == "\u201c":
            inside = True
        elif ch == "\u201d":
            inside = False
        out[t] = inside
        prev = ch
    return out


def bracket_depth(text: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    depth = 0
    for t, ch in enumerate(text):
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth = max(0, depth - 1)
        out[t] = depth
    return out


def line_position(text: str) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    col = 0
    for t, ch in enumerate(text):
        col = 0 if ch == "\n" else col + 1
        out[t] = col
    return out


def indent(text: str) -> np.ndarray:
    """Leading-whitespace width of the current line, as far as it has been read (tabs = 4)."""
    out = np.zeros(len(text), dtype=np.float32)
    width, leading = 0, True
    for t, ch in enumerate(text):
        if ch == "\n":
            width, leading = 0, True
        elif leading and ch in " \t":
            width += 4 if ch == "\t" else 1
        else:
            leading = False
        out[t] = width
    return out


def _line_offsets(text: str) -> list[int]:
    offsets, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        offsets.append(pos)
    return offsets


def python_spans(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(comment, string) masks from Python's tokenize; a tolerant scanner where it fails."""
    comment = np.zeros(len(text), dtype=bool)
    string = np.zeros(len(text), dtype=bool)
    offsets = _line_offsets(text)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                a = offsets[tok.start[0] - 1] + tok.start[1]
                b = offsets[tok.end[0] - 1] + tok.end[1]
                (comment if tok.type == tokenize.COMMENT else string)[a:b] = True
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _scan_spans(text)
    return comment, string


def _scan_spans(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Comments and strings by a small state machine, for code that does not tokenize."""
    comment = np.zeros(len(text), dtype=bool)
    string = np.zeros(len(text), dtype=bool)
    t, n = 0, len(text)
    while t < n:
        ch = text[t]
        if ch == "#":
            end = text.find("\n", t)
            end = n if end < 0 else end
            comment[t:end] = True
            t = end
        elif ch in "'\"":
            quote = text[t : t + 3] if text[t : t + 3] in ('"""', "'''") else ch
            s = t + len(quote)
            while s < n:
                if text[s] == "\\":
                    s += 2
                    continue
                if text.startswith(quote, s):
                    s += len(quote)
                    break
                if len(quote) == 1 and text[s] == "\n":
                    break
                s += 1
            string[t : min(s, n)] = True
            t = max(s, t + 1)
        else:
            t += 1
    return comment, string


def regex_mask(text: str, pattern: str | None) -> np.ndarray:
    if not pattern:
        raise RnnscopeError("the regex probe needs a pattern")
    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        raise RnnscopeError(f"invalid regular expression: {e}") from None
    out = np.zeros(len(text), dtype=bool)
    try:
        for m in compiled.finditer(text, timeout=REGEX_TIMEOUT_S):
            out[m.start() : m.end()] = True
    except TimeoutError:
        raise RnnscopeError(
            f"the regular expression took longer than {REGEX_TIMEOUT_S}s on this text "
            "(catastrophic backtracking?); simplify it"
        ) from None
    return out


def labels(probe: str, text: str, pattern: str | None = None) -> np.ndarray:
    """The probe's per-character values: bool for binary probes, float32 for numeric ones."""
    if probe not in PROBES:
        raise RnnscopeError(f"unknown probe {probe!r}: choose one of {', '.join(PROBES)}")
    if probe == "quotes":
        return quotes(text)
    if probe == "brackets":
        return bracket_depth(text) > 0
    if probe == "bracket_depth":
        return bracket_depth(text)
    if probe == "line_position":
        return line_position(text)
    if probe == "indent":
        return indent(text)
    if probe in ("comment", "string"):
        comment, string = python_spans(text)
        return comment if probe == "comment" else string
    if probe == "word_start":
        return np.array([c.isalnum() and (t == 0 or not text[t - 1].isalnum()) for t, c in enumerate(text)], dtype=bool)
    if probe == "vowel":
        return np.array([c in "aeiouAEIOU" for c in text], dtype=bool)
    return regex_mask(text, pattern)


# ---------------------------------------------------------------- scoring, all units at once


def auc_all(x: np.ndarray, y: np.ndarray, block: int = 256, tile: int = 128) -> np.ndarray:
    """ROC AUC of every column of x (T, N) against binary y (T,): P(x_pos > x_neg) + ties/2.

    One SIMD float sort per column and no argsort: the label rides in the lowest mantissa bit
    (a 1-ulp nudge at most), set so that inside a run of equal values the negatives sort first.
    Ordinal ranks then over-count each tied (positive, negative) pair by one half, which is
    subtracted per run. Columns pass through a reused cache-sized buffer (tiled transpose).
    """
    y = np.asarray(y, dtype=bool)
    P = int(y.sum())
    T, N = x.shape
    if P == 0 or P == T:
        raise RnnscopeError("the probe marks every character the same way in this text; pick a text with both")
    label = y.astype(np.int32)[None, :]
    fdt = np.float32 if T * T < 2**24 else np.float64  # rank sums stay exact in float32 when small
    ranks = np.arange(1, T + 1, dtype=fdt)
    rank_sum = np.empty(N, dtype=np.float64)
    buf = np.empty((min(block, N), T), dtype=np.float32)
    keys_all = buf.view(np.int32)
    scratch_all = np.empty_like(keys_all)
    pos_all = np.empty(buf.shape, dtype=fdt)
    for a in range(0, N, block):
        n = min(block, N - a)
        cols, keys, scratch, is_pos = buf[:n], keys_all[:n], scratch_all[:n], pos_all[:n]
        for r in range(0, T, tile):  # tiled transpose; adding 0.0 turns -0.0 into +0.0 on the way
            np.add(x[r : r + tile, a : a + n].T, np.float32(0.0), out=cols[:, r : r + tile], casting="unsafe")
        # Low bit = label for values >= 0, (1 - label) for negatives (where a larger bit is a smaller
        # value): either way a positive sorts after an equal negative.
        np.right_shift(keys, 31, out=scratch)  # -1 for negative values, 0 otherwise
        scratch &= 1
        scratch ^= label
        keys &= np.int32(~1)
        keys |= scratch
        cols.sort(axis=1)
        np.right_shift(keys, 31, out=scratch)  # recover the label: low bit xor sign
        scratch &= 1
        scratch ^= keys
        scratch &= 1
        np.copyto(is_pos, scratch, casting="unsafe")
        rank_sum[a : a + n] = is_pos @ ranks  # ordinal ranks of the positives
        rank_sum[a : a + n] -= 0.5 * _tied_pairs(keys, scratch)
    return (rank_sum - P * (P + 1) / 2) / (P * (T - P))


def _tied_pairs(keys: np.ndarray, is_pos: np.ndarray) -> np.ndarray:
    """Per row of sorted keys: the number of (positive, negative) pairs with equal values.

    Only entries that sit in a run of equal values are looked at, so the cost follows the number
    of ties, not the size of the block.
    """
    n, T = keys.shape
    flat = keys.reshape(-1)
    same = ((flat[1:] ^ flat[:-1]).view(np.uint32) < 2)  # equal up to the label bit
    same[T - 1 :: T] = False  # a row's last entry and the next row's first are not a run
    if not same.any():
        return np.zeros(n)
    in_run = np.zeros(n * T, dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    idx = np.flatnonzero(in_run)
    starts = np.ones(len(idx), dtype=bool)
    starts[1:] = ~same[idx[1:] - 1] | (idx[1:] != idx[:-1] + 1)
    first = np.flatnonzero(starts)
    pos = np.add.reduceat(is_pos.reshape(-1)[idx], first)
    size = np.diff(np.append(first, len(idx)))
    return np.bincount(idx[first] // T, weights=pos * (size - pos), minlength=n)


def pearson_all(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of x (T, N) with y (T,); 0 where a column is constant."""
    y = np.asarray(y, dtype=np.float64)
    yc = y - y.mean()
    ny = np.sqrt((yc**2).sum())
    if ny == 0:
        raise RnnscopeError("the probe has the same value at every character of this text; pick a longer text")
    xs = x.astype(np.float32, copy=False)
    xc_dot = (yc.astype(np.float32) @ xs).astype(np.float64)  # (N,) = sum_t (y_t - mean) x_t
    sx = xs.sum(axis=0, dtype=np.float64)
    sxx = np.einsum("tn,tn->n", xs, xs, dtype=np.float64)
    var = sxx - sx**2 / len(y)
    var = np.where(var > 1e-6 * np.maximum(sxx, 1e-30), var, 0.0)  # constant columns, up to rounding
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(var > 0, xc_dot / (np.sqrt(var) * ny), 0.0)
    return np.clip(r, -1.0, 1.0)


@dataclass
class UnitScore:
    layer: int
    state: str
    unit: int
    score: float  # AUC in [0.5, 1] or |r| in [0, 1]
    sign: int  # +1: higher where the probe is positive / larger; -1: lower
    metric: str  # "auc" or "pearson"


def rank_units(blocks: dict[tuple[int, str], np.ndarray], values: np.ndarray, kind: str, top: int = 20) -> list[UnitScore]:
    """Score every unit of every (layer, state) block (each (T, U)) and return the best `top`."""
    keys = list(blocks)
    score_fn = auc_all if kind == BINARY else pearson_all
    raw = np.concatenate([score_fn(blocks[k], values) for k in keys])  # each block as it is stored
    if kind == BINARY:
        score, sign, metric = np.maximum(raw, 1 - raw), np.where(raw >= 0.5, 1, -1), "auc"
    else:
        score, sign, metric = np.abs(raw), np.where(raw >= 0, 1, -1), "pearson"
    order = np.argsort(-score, kind="stable")[: max(1, top)]
    widths = np.cumsum([0] + [blocks[k].shape[1] for k in keys])
    out = []
    for j in order:
        b = int(np.searchsorted(widths, j, side="right") - 1)
        layer, state = keys[b]
        out.append(UnitScore(layer, state, int(j - widths[b]), round(float(score[j]), 6), int(sign[j]), metric))
    return out


def span_scores(x: np.ndarray, inside: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each column: (fraction of span chars above threshold) - (fraction of the rest above it).

    Positive scores are units that switch on inside the span and stay off elsewhere; the
    second array scores the reverse (off inside, on elsewhere), as in LSTMVis's selection.
    """
    inside = np.asarray(inside, dtype=bool)
    if not inside.any():
        raise RnnscopeError("the selected span is empty: select at least one character")
    if inside.all():
        raise RnnscopeError("the span covers the whole text: leave some characters outside it")
    on = x > threshold
    in_frac = on[inside].mean(axis=0)
    out_frac = on[~inside].mean(axis=0)
    off_in = (~on[inside]).mean(axis=0)
    off_out = (~on[~inside]).mean(axis=0)
    return in_frac - out_frac, off_in - off_out
