"""Exact per-timestep trace of every layer's states and gates, at close to fused-forward speed.

PyTorch's fused nn.LSTM / nn.GRU return only h. The route here:
1. run each layer with its own fused module to get its h sequence (the speed floor);
2. recompute every gate for every step at once from [x_t ; h_{t-1}] with one batched matmul;
3. for the LSTM, recover c with the elementwise recurrence c_t = f_t * c_{t-1} + i_t * g_t.
Long texts run in chunks with the state carried over; only the requested layers, states and
units are kept, optionally as float16.

Position t in every output means "after reading character t".
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .charlm import CELL_STATES, CharLM
from .errors import RnnscopeError
from .vocab import CharVocab

LN2 = math.log(2)
GATE_STATES = {"i", "f", "g", "o", "kept", "written", "r", "z", "n", "c"}


@dataclass
class Trace:
    text: str
    cell: str
    layer_ids: list[int]
    states: dict[int, dict[str, np.ndarray]]  # layer -> state -> (T, U) values
    units: list[int] | None  # None = every unit
    topk_ids: np.ndarray | None  # (T, k) next-character ids, most likely first
    topk_probs: np.ndarray | None  # (T, k)
    surprisal_bits: np.ndarray  # (T,) -log2 p(text[t+1]); NaN at the last position
    unknown: list[int] = field(default_factory=list)  # positions of characters the model never saw

    @property
    def nbytes(self) -> int:
        total = self.surprisal_bits.nbytes + len(self.text) * 4
        for per_state in self.states.values():
            total += sum(a.nbytes for a in per_state.values())
        if self.topk_ids is not None:
            total += self.topk_ids.nbytes + self.topk_probs.nbytes
        return total


def check_request(model: CharLM, layers, states, units) -> tuple[list[int], list[str], list[int] | None]:
    """Normalise a (layers, states, units) request, or say exactly what is out of range."""
    cfg = model.config
    valid = CELL_STATES[cfg.cell]
    layer_ids = list(range(cfg.n_layers)) if layers is None else sorted(set(int(k) for k in layers))
    for k in layer_ids:
        if not 0 <= k < cfg.n_layers:
            raise RnnscopeError(f"layer {k} is out of range: this model has layers 0..{cfg.n_layers - 1}")
    state_ids = list(valid) if states is None else list(dict.fromkeys(states))
    for s in state_ids:
        if s not in valid:
            raise RnnscopeError(f"state {s!r} does not exist in a {cfg.cell} model; choose one of {', '.join(valid)}")
    unit_ids = None
    if units is not None:
        unit_ids = [int(u) for u in units]
        for u in unit_ids:
            if not 0 <= u < cfg.hidden:
                raise RnnscopeError(f"unit {u} is out of range: this model has units 0..{cfg.hidden - 1}")
    return layer_ids, state_ids, unit_ids


@torch.no_grad()
def warmup_state(model: CharLM, vocab: CharVocab, prefix: str):
    """The recurrent state after reading `prefix` (None for an empty prefix = zeros)."""
    if not prefix:
        return None
    _, _, state = model(vocab.encode_tensor(prefix)[None, :])
    return state


@torch.no_grad()
def run_trace(
    model: CharLM,
    vocab: CharVocab,
    text: str,
    *,
    layers=None,
    states=None,
    units=None,
    topk: int = 5,
    warmup: str = "",
    half: bool = False,
    chunk: int = 2048,
    overlap: bool | None = None,
) -> Trace:
    """Trace `text`; with `overlap`, gates and predictions of one chunk are worked out on a second
    thread while the fused forward reads the next chunk.

    None (the default) overlaps only when torch runs one intra-op thread, as the server's model
    slots do: measured by bench/trace_speed.py, overlap makes a 1-thread trace about 1.3x faster,
    but with 2 threads each the two threads' OpenMP teams oversubscribe the cores and it is slower.
    """
    if overlap is None:
        overlap = torch.get_num_threads() == 1
    if not text:
        raise RnnscopeError("the text is empty: give at least one character")
    layer_ids, state_ids, unit_ids = check_request(model, layers, states, units)
    model.eval()
    cfg = model.config
    out_dtype = np.float16 if half else np.float32
    keep_units = None if unit_ids is None else torch.tensor(unit_ids)
    ids = vocab.encode_tensor(text)  # (T,)
    T = len(ids)
    carry = warmup_state(model, vocab, warmup)
    width = cfg.hidden if unit_ids is None else len(unit_ids)
    # Each chunk writes its rows straight into the final arrays: no per-chunk lists to stitch,
    # which at 50,000 characters would copy (and fault in) every output a second time.
    recorded = {k: {s: np.empty((T, width), dtype=out_dtype) for s in state_ids} for k in layer_ids}
    heads: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []  # per chunk
    k_top = max(0, min(int(topk), cfg.vocab_size))
    later = _Later(overlap and T > chunk)

    try:
        for start in range(0, T, chunk):
            piece = ids[start : start + chunk]
            x = model.embed(piece[None, :])  # (1, t, E)
            new_carry = []
            for k, layer in enumerate(model.layers):
                s0 = None if carry is None else carry[k]
                h_seq, s1 = layer(x, s0)  # (1, t, H)
                new_carry.append(s1)
                if k in recorded:
                    later(_record_layer, cfg.cell, layer, x[0], h_seq[0], s0, state_ids, keep_units, recorded[k],
                          start)
                x = h_seq
            carry = new_carry
            later(_predict, model, x[0], ids[start + 1 : start + 1 + len(piece)], k_top, heads)
        later.wait()
    finally:
        later.close()

    return Trace(
        text=text,
        cell=cfg.cell,
        layer_ids=layer_ids,
        states=recorded,
        units=unit_ids,
        topk_ids=_join([h[1] for h in heads]) if k_top else None,
        topk_probs=_join([h[2] for h in heads]) if k_top else None,
        surprisal_bits=_join([h[0] for h in heads]).astype(np.float32, copy=False),
        unknown=vocab.unknown_positions(text),
    )


class _Later:
    """Runs work in submission order: on one background thread, or at once when not overlapping.

    One worker keeps every list appended in time order. Each task runs under no_grad (a
    thread-local mode in PyTorch). The first error is raised by wait().
    """

    def __init__(self, overlap: bool):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rnnscope-trace") if overlap else None
        self.pending: list[Future] = []

    def __call__(self, fn, *args) -> None:
        if self.pool is None:
            fn(*args)
        else:
            self.pending.append(self.pool.submit(torch.no_grad()(fn), *args))

    def wait(self) -> None:
        for f in self.pending:
            f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _predict(model: CharLM, top_h: torch.Tensor, nxt: torch.Tensor, k_top: int, into: list) -> None:
    """Surprisal of the actual next character (bits; NaN at the end) and the top-k guesses."""
    logp = F.log_softmax(model.head(top_h).float(), dim=-1)  # (t, V)
    s = torch.full((top_h.shape[0],), float("nan"))
    s[: len(nxt)] = -logp[torch.arange(len(nxt)), nxt] / LN2
    if k_top:
        p, i = logp.exp().topk(k_top, dim=-1)
        into.append((s.numpy(), i.numpy().astype(np.int32), p.numpy()))
    else:
        into.append((s.numpy(), None, None))


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """One chunk needs no copy; several are stitched together."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _record_layer(cell, layer, x, h, s0, want, keep_units, into, start) -> None:
    """Write this chunk's requested states for one layer into rows start.. of `into`'s arrays.

    x (t, In), h (t, H) come from the fused run. Gates are elementwise per unit, so with a unit
    subset only those units' weight rows are multiplied: the rest of the layer's gates are never
    materialised.
    """
    H = h.shape[1]
    units = torch.arange(H) if keep_units is None else keep_units
    U = len(units)

    def put(name, value):  # value (t, U), cast to the output's dtype on the way
        if name in into:
            np.copyto(into[name][start : start + value.shape[0]], value.numpy(), casting="same_kind")

    put("h", h if keep_units is None else h[:, keep_units])
    if not (set(want) - {"h"}):
        return
    if cell == "lstm":
        h0, c0 = (torch.zeros(1, 1, H), torch.zeros(1, 1, H)) if s0 is None else s0
        c0 = c0[0, 0, units]  # (U,)
    else:
        h0 = torch.zeros(1, 1, H) if s0 is None else s0
    n_gates = 4 if cell == "lstm" else 3
    rows = (torch.arange(n_gates)[:, None] * H + units[None, :]).reshape(-1)  # each gate's rows for our units
    whole = keep_units is None
    w_ih = layer.weight_ih_l0 if whole else layer.weight_ih_l0[rows]
    w_hh = layer.weight_hh_l0 if whole else layer.weight_hh_l0[rows]
    b_ih = layer.bias_ih_l0 if whole else layer.bias_ih_l0[rows]
    b_hh = layer.bias_hh_l0 if whole else layer.bias_hh_l0[rows]
    if cell == "lstm":
        # Pre-activations of all gates for all steps: x_t W_ih^T + h_{t-1} W_hh^T + b, as two
        # in-place GEMMs over the whole chunk (row 0 reads the incoming state h0).
        pre = torch.addmm(b_ih + b_hh, x, w_ih.T)  # (t, 4U)
        pre[1:].addmm_(h[:-1], w_hh.T)
        pre[:1].addmm_(h0[0], w_hh.T)
        i, f, g, o = pre.split(U, dim=1)
        i, f, o, g = i.sigmoid_(), f.sigmoid_(), o.sigmoid_(), g.tanh_()
        written = i * g  # (t, U)
        if {"c", "kept"} & set(want):
            c = _cell_recurrence(f, written, c0)  # (t, U)
            put("c", c)
            if "kept" in into:
                kept = torch.empty_like(c)
                torch.mul(f[1:], c[:-1], out=kept[1:])
                torch.mul(f[:1], c0[None], out=kept[:1])
                put("kept", kept)
        put("i", i), put("f", f), put("g", g), put("o", o), put("written", written)
    elif cell == "gru":
        gi = torch.addmm(b_ih, x, w_ih.T)  # (t, 3U)
        gh = torch.empty_like(gi)
        torch.addmm(b_hh, h[:-1], w_hh.T, out=gh[1:])  # (t-1, 3U): h_{t-1} for t >= 1
        torch.addmm(b_hh, h0[0], w_hh.T, out=gh[:1])
        i_r, i_z, i_n = gi.split(U, dim=1)
        h_r, h_z, h_n = gh.split(U, dim=1)
        r = (i_r + h_r).sigmoid_()
        z = (i_z + h_z).sigmoid_()
        n = (i_n + r * h_n).tanh_()
        put("r", r), put("z", z), put("n", n)


def _cell_recurrence(f: torch.Tensor, u: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """c_t = f_t * c_{t-1} + u_t for all t: a cheap elementwise scan over time (numpy, in place)."""
    f_np, out = f.numpy(), u.numpy().copy()  # out starts as u_t and becomes c_t
    c = c0.numpy().astype(np.float32).reshape(-1).copy()
    for t in range(out.shape[0]):
        np.multiply(f_np[t], c, out=c)
        np.add(c, out[t], out=c)
        out[t] = c
    return torch.from_numpy(out)
