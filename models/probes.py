"""Per-character probes computed from the text itself, and vectorised unit ranking.

A probe gives each position t a label (binary) or a number, describing the text *after reading
character t* — the same convention as the trace. Ranking scores every unit of every state of
every layer at once: ROC AUC for binary probes (taken as max(AUC, 1-AUC), the sign says which
way), |Pearson r| for numeric ones. Scores become rankings (best first, and one entry per unit)
in models.ranking.
"""

from __future__ import annotations

import io
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import regex

from . import regex_limits
from .errors import RnnscopeError
from .ranking import UnitScore, top_units  # UnitScore: what every ranking holds (models.evaluate reads it here)
from .score_kernels import column_sums, counts_above, twice_mann_whitney_u

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
        Probe("short_string", BINARY, "inside a one-quote string literal, '...' or \"...\" (Python tokenize)"),
        Probe("long_string", BINARY, "inside a triple-quoted string literal, e.g. a docstring (Python tokenize)"),
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


@dataclass(frozen=True)
class PythonSpans:
    comment: np.ndarray  # bool (T,)
    string: np.ndarray  # every string literal
    long_string: np.ndarray  # the triple-quoted ones (docstrings and other multi-line text)


def python_spans(text: str) -> PythonSpans:
    """Comment and string masks from Python's tokenize; a tolerant scanner where it fails."""
    comment = np.zeros(len(text), dtype=bool)
    string = np.zeros(len(text), dtype=bool)
    long_string = np.zeros(len(text), dtype=bool)
    offsets = _line_offsets(text)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                a = offsets[tok.start[0] - 1] + tok.start[1]
                b = offsets[tok.end[0] - 1] + tok.end[1]
                (comment if tok.type == tokenize.COMMENT else string)[a:b] = True
                if tok.type == tokenize.STRING and _is_triple_quoted(tok.string):
                    long_string[a:b] = True
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _scan_spans(text)
    return PythonSpans(comment, string, long_string)


def _is_triple_quoted(literal: str) -> bool:
    body = literal.lstrip("rbufRBUF")  # string prefixes
    return body[:3] in ('"""', "'''")


def _scan_spans(text: str) -> PythonSpans:
    """Comments and strings by a small state machine, for code that does not tokenize."""
    comment = np.zeros(len(text), dtype=bool)
    string = np.zeros(len(text), dtype=bool)
    long_string = np.zeros(len(text), dtype=bool)
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
            if len(quote) == 3:
                long_string[t : min(s, n)] = True
            t = max(s, t + 1)
        else:
            t += 1
    return PythonSpans(comment, string, long_string)


def _forget(pattern: str) -> None:
    """Drop what `regex` remembers about a pattern even uncached: whether it is locale-sensitive, a small
    entry per distinct pattern that its module otherwise trims only when its (unused) cache fills."""
    remembered = getattr(sys.modules.get(regex.compile.__module__), "_locale_sensitive", None)
    if isinstance(remembered, dict):
        remembered.pop((str, pattern), None)


def regex_mask(text: str, pattern: str | None) -> np.ndarray:
    if not pattern:
        raise RnnscopeError("the regex probe needs a pattern")
    regex_limits.check(pattern)  # compiling is not time-limited: refuse what would compile too big first
    try:  # never kept in the module's cache: 500 visitors' patterns would stay in memory for good
        compiled = regex.compile(pattern, cache_pattern=False)
    except (regex.error, ValueError, OverflowError, RecursionError) as e:  # ValueError: (?V0V1), (?au)
        raise RnnscopeError(f"invalid regular expression: {e}") from None
    finally:
        _forget(pattern)
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
    if probe in ("comment", "string", "short_string", "long_string"):
        spans = python_spans(text)
        if probe == "short_string":
            return spans.string & ~spans.long_string
        return getattr(spans, probe)
    if probe == "word_start":
        return np.array([c.isalnum() and (t == 0 or not text[t - 1].isalnum()) for t, c in enumerate(text)], dtype=bool)
    if probe == "vowel":
        return np.array([c in "aeiouAEIOU" for c in text], dtype=bool)
    return regex_mask(text, pattern)


# ---------------------------------------------------------------- scoring, all units at once


def auc_all(x: np.ndarray, y: np.ndarray, block: int = 256, tile: int = 128) -> np.ndarray:
    """ROC AUC of every column of x (T, N) against binary y (T,): P(x_pos > x_neg) + ties/2.

    float16 input (what the trace cache holds) goes to the compiled radix kernel
    (models.score_kernels), exact. Other input goes through numpy: each value becomes an
    order-preserving int32 key with the label in its lowest bit, so in a run of equal values the
    negatives sort first. A positive at sorted index j then has j - (positives before it) negatives
    below or equal to it, and the same count taken at its run's start (a running maximum, since
    the count never decreases) is the negatives strictly below; their mean is its share of the
    AUC. float32 gives up its last mantissa bit to the label (values 1 ulp apart count as tied).
    Columns pass through reused buffers (tiled transpose).
    """
    y = np.ascontiguousarray(y, dtype=bool)
    P = int(y.sum())
    T, N = x.shape
    if P == 0 or P == T:
        raise RnnscopeError("the probe marks every character the same way in this text; pick a text with both")
    if x.dtype == np.float16:
        twice_u = twice_mann_whitney_u(x, y)
    else:
        twice_u = _pairs_below(np.asarray(x, dtype=np.float32), y.astype(np.int32)[None, :], block, tile)
    return twice_u / (2.0 * P * (T - P))


def _pairs_below(x: np.ndarray, label: np.ndarray, block: int, tile: int) -> np.ndarray:
    """Per column of float32 x: twice the Mann-Whitney U, 2 * #(neg < pos) + #(neg == pos), as int64."""
    T, N = x.shape
    out = np.empty(N, dtype=np.int64)
    shape = (min(block, N), T)
    keys_all, lab_all, a_all, scratch_all = (np.empty(shape, dtype=np.int32) for _ in range(4))
    b_all = np.empty(shape, dtype=np.int64)  # numpy's running maximum is several times faster on int64
    run_all = np.empty(shape, dtype=bool)
    index = np.arange(T, dtype=np.int32)[None, :]
    magnitude = np.int32(0x7FFFFFFF)
    for a in range(0, N, block):
        n = min(block, N - a)
        keys, lab, neg_le, neg_lt, run_start = keys_all[:n], lab_all[:n], a_all[:n], b_all[:n], run_all[:n]
        scratch = scratch_all[:n]
        for r in range(0, T, tile):  # tiled transpose of the float32 bits
            np.copyto(keys[:, r : r + tile].view(np.float32), x[r : r + tile, a : a + n].T)
        # Sign-magnitude bits -> a signed int in the values' order (-0 and +0 both become 0).
        np.right_shift(keys, 31, out=scratch)  # -1 for negative values, 0 otherwise
        keys &= magnitude
        keys ^= scratch
        keys -= scratch
        keys &= np.int32(~1)  # the last bit goes to the label
        keys |= label
        keys.sort(axis=1)
        np.bitwise_and(keys, 1, out=lab)
        np.cumsum(lab, axis=1, out=neg_le)
        neg_le -= lab  # positives before each index
        np.subtract(index, neg_le, out=neg_le)  # negatives before it: for a positive, those <= it
        run_start[:, 0] = True
        np.bitwise_xor(keys[:, 1:], keys[:, :-1], out=scratch[:, 1:])
        np.greater_equal(scratch[:, 1:].view(np.uint32), 2, out=run_start[:, 1:])  # a new value begins
        np.multiply(neg_le, run_start, out=neg_lt)
        np.maximum.accumulate(neg_lt, axis=1, out=neg_lt)  # negatives before the run: those < it
        neg_lt += neg_le
        neg_lt *= lab
        neg_lt.sum(axis=1, dtype=np.int64, out=out[a : a + n])
    return out


def pearson_all(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of x (T, N) with y (T,); 0 where a column is constant.

    float16 input goes to the compiled one-pass kernel (float64 sums); other input through numpy.
    """
    y = np.asarray(y, dtype=np.float64)
    yc = y - y.mean()
    ny = np.sqrt((yc**2).sum())
    if ny == 0:
        raise RnnscopeError("the probe has the same value at every character of this text; pick a longer text")
    if x.dtype == np.float16:
        sx, sxx, xc_dot = column_sums(x, yc)  # xc_dot: sum_t (y_t - mean) x_t
        rounding = 1e-12  # float64 sums of float16 values: a 1-ulp wiggle is still variance
    else:
        xs = x.astype(np.float32, copy=False)
        xc_dot = (yc.astype(np.float32) @ xs).astype(np.float64)
        sx = xs.sum(axis=0, dtype=np.float64)
        sxx = np.einsum("tn,tn->n", xs, xs, dtype=np.float64)
        rounding = 1e-6
    var = sxx - sx**2 / len(y)
    var = np.where(var > rounding * np.maximum(sxx, 1e-30), var, 0.0)  # constant columns, up to rounding
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(var > 0, xc_dot / (np.sqrt(var) * ny), 0.0)
    return np.clip(r, -1.0, 1.0)


def rank_units(blocks: dict[tuple[int, str], np.ndarray], values: np.ndarray, kind: str, top: int = 20,
               workers: int = 1) -> list[UnitScore]:
    """Score every unit of every (layer, state) block (each (T, U)) and return the best `top`."""
    return top_units(blocks, *unit_scores(blocks, values, kind, workers), top)


def unit_scores(blocks: dict[tuple[int, str], np.ndarray], values: np.ndarray, kind: str,
                workers: int = 1) -> tuple[np.ndarray, np.ndarray, str]:
    """(score, sign, metric) of every column of every block in turn, against the probe's values.

    `workers` threads take whole blocks each (the caller's share of the cores): numpy releases the
    GIL while it sorts, and a block's buffers stay in one core's cache.
    """
    keys = list(blocks)
    score_fn = auc_all if kind == BINARY else pearson_all
    if workers > 1 and len(keys) > 1:
        with ThreadPoolExecutor(min(workers, len(keys))) as pool:
            scores = list(pool.map(lambda k: score_fn(blocks[k], values), keys))
    else:
        scores = [score_fn(blocks[k], values) for k in keys]
    raw = np.concatenate(scores)  # each block as it is stored
    if kind == BINARY:
        score, sign, metric = np.maximum(raw, 1 - raw), np.where(raw >= 0.5, 1, -1), "auc"
    else:
        score, sign, metric = np.abs(raw), np.where(raw >= 0, 1, -1), "pearson"
    return score, sign, metric


EDGE_MIN = 4  # spans this long or longer leave their first and last characters out of the count


def span_edges(start: int, end: int) -> list[int]:
    """The characters of text[start:end] that count neither inside nor outside it: its first and last.

    A value is read after its character, so a unit that reacts to a boundary character switches as
    it reads it: after the closing quote of `"Why?"` the quote cell is already off, and a unit one
    step behind (an LSTM's kept) is still off after the opening one. Counting those two either way
    would mark the very unit the span outlines as wrong at its edges; shorter spans keep every character.
    """
    return [start, end - 1] if end - start >= EDGE_MIN else []


def span_scores(x: np.ndarray, inside: np.ndarray, threshold: float | np.ndarray,
                ignore: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each column: (fraction of span chars above threshold) - (fraction of the rest above it).

    Positive scores are units that switch on inside the span and stay off elsewhere; the
    second array scores the reverse (off inside, on elsewhere), as in LSTMVis's selection.
    `threshold` is one value or one per column (each unit's own, e.g. on its colour scale);
    the positions in `ignore` (span_edges) count on neither side.
    """
    inside = np.ascontiguousarray(inside, dtype=bool)
    skip = sorted({int(t) for t in (ignore or []) if 0 <= int(t) < len(inside)})
    n_in = int(inside.sum()) - sum(1 for t in skip if inside[t])
    n_out = len(inside) - int(inside.sum()) - sum(1 for t in skip if not inside[t])
    if not inside.any() or n_in <= 0:
        raise RnnscopeError("the selected span is empty: select at least one character")
    if inside.all() or n_out <= 0:
        raise RnnscopeError("the span covers the whole text: leave some characters outside it")
    N = x.shape[1]
    limits = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (N,))
    above_in = np.zeros(N, dtype=np.float64)
    above_out = np.zeros(N, dtype=np.float64)
    for limit in np.unique(limits):
        cols = np.flatnonzero(limits == limit)
        part = x if cols.size == N else x[:, cols]
        if part.dtype == np.float16:  # the compiled one-pass count; values compared exactly, as float64
            a_in, a_out = counts_above(part, inside, float(limit))
        else:
            on = part > limit
            a_in, a_out = on[inside].sum(axis=0), on[~inside].sum(axis=0)
        a_in, a_out = np.asarray(a_in, dtype=np.float64), np.asarray(a_out, dtype=np.float64)
        for t in skip:  # take the ignored characters back out of their side's count
            hit = np.asarray(part[t], dtype=np.float64) > limit
            if inside[t]:
                a_in = a_in - hit
            else:
                a_out = a_out - hit
        above_in[cols], above_out[cols] = a_in, a_out
    in_frac = above_in / n_in
    out_frac = above_out / n_out
    return in_frac - out_frac, out_frac - in_frac  # off inside minus off outside is the negation
