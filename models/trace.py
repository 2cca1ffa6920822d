"""Exact per-timestep trace of every layer's states and gates, at close to fused-forward speed.

PyTorch's fused nn.LSTM / nn.GRU return only h. The route here:
1. run each layer with its own fused module to get its h sequence (the speed floor);
2. recompute every gate for every step at once from [x_t ; h_{t-1}] with one batched matmul;
3. for the LSTM, recover c with the elementwise recurrence c_t = f_t * c_{t-1} + i_t * g_t.
Long texts run in chunks with the state carried over, as a task graph on worker threads
(models/taskgraph.py); only the requested layers, states and units are kept, optionally as
float16, in buffers that dropped traces hand back (models/buffers.py). Several texts can go
through the fused forwards as one batch (run_traces), which a server with a queue wants.
A lazy trace (run_traces(lazy=True)) stops after step 1: it keeps each layer's h and does
steps 2-3 when a state is read, for the units read (RecomputedStates).

Position t in every output means "after reading character t".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from . import deadline
from .buffers import POOL
from .cell_scan import cell_recurrence
from .charlm import CELL_STATES, CharLM
from .errors import RnnscopeError
from .taskgraph import TaskGraph
from .vocab import CharVocab

LN2 = math.log(2)
GATE_STATES = {"i", "f", "g", "o", "kept", "written", "r", "z", "n", "c"}
LAZY_CELLS = ("lstm", "gru")  # a vanilla RNN has only h: a lazy trace of one is an eager one
FEW_UNITS = 16  # up to this many units, an LSTM's gate products skip building [x_t ; h_t-1]


class LayerStates(Mapping):
    """One layer's traced states by name: (T, U) arrays, as recorded."""

    def __init__(self, stored: dict[str, np.ndarray]):
        self.stored = stored

    def __getitem__(self, name: str) -> np.ndarray:
        return self.stored[name]

    def column(self, name: str, index: int) -> np.ndarray:
        """One unit's values (T,)."""
        return self.stored[name][:, index]

    def arrays(self, names=None, units=None) -> dict[str, np.ndarray]:
        """{state: (T, U) values} for `names` (default all), every unit or the `units` listed."""
        names = list(self.stored) if names is None else names
        return {n: self.stored[n] if units is None else self.stored[n][:, units] for n in names}

    def __iter__(self):
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.stored.values())


class RecomputedStates(Mapping):
    """One layer's states from a lazy trace: only h is kept (float32), with the state at each
    chunk start; any other state is recomputed when read, for the units read.

    The recomputation runs the eager trace's per-chunk code (_record_layer) from the same inputs and
    start states, so it gives the eager trace's values up to float32 rounding. One unit costs a
    (T, In+H) x (In+H, 4) product and a scan over T (milliseconds); every unit of a state costs
    what an eager trace spends recording it. A whole 2x512 LSTM trace then takes 4 KiB per
    character instead of 16 for float16 copies of every state, and tracing a text skips steps 2-3.
    """

    def __init__(self, cell: str, layer, names: list[str], inputs, h: np.ndarray, starts: list, chunk: int,
                 dtype, extra_bytes: int = 0):
        self.cell, self.layer, self.names = cell, layer, names
        self.inputs = inputs  # (a, b) -> (b - a, In) tensor: the layer's input at positions a..b-1
        self.h, self.starts, self.chunk, self.dtype = h, starts, chunk, dtype  # starts[j]: state before chunk j
        self.extra_bytes = extra_bytes  # memory this layer holds beyond h (layer 0: the text's ids)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays([name])[name]  # KeyError for a state the cell does not have

    def column(self, name: str, index: int) -> np.ndarray:
        return self.arrays([name], [index])[name][:, 0]

    @torch.no_grad()
    def arrays(self, names=None, units=None) -> dict[str, np.ndarray]:
        """{state: (T, U) values}: several states of one layer cost one recomputation, not one each."""
        names = self.names if names is None else list(names)
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise KeyError(unknown[0])
        keep_units = None if units is None else torch.tensor([int(u) for u in units], dtype=torch.long)
        T, H = self.h.shape
        out = {n: np.empty((T, H if keep_units is None else len(keep_units)), self.dtype) for n in names}
        if "h" in out:
            out["h"][:] = self.h if keep_units is None else self.h[:, keep_units.numpy()]
        gated = [n for n in names if n != "h"]
        if gated and (keep_units is None or len(keep_units)):
            weights = gate_weights(self.cell, self.layer, keep_units)
            into = {n: out[n] for n in gated}
            for j, s0 in enumerate(self.starts):
                deadline.check()
                a, b = j * self.chunk, min(T, (j + 1) * self.chunk)
                _record_layer(self.cell, self.inputs(a, b), torch.from_numpy(self.h[a:b]), s0, gated, keep_units,
                              into, a, weights)
        return out

    # Mapping's own versions would read (recompute) a state per call; these never do, or do it once.
    def __contains__(self, name) -> bool:
        return name in self.names

    def items(self):
        return self.arrays().items()

    def values(self):
        return self.arrays().values()

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nbytes(self) -> int:
        return self.h.nbytes + self.extra_bytes + sum(
            t.nbytes for s0 in self.starts if s0 is not None for t in (s0 if isinstance(s0, tuple) else (s0,)))


def lazy_trace_bytes(config, length: int, topk: int) -> int:
    """What run_traces(lazy=True) keeps for a text of `length` characters, with `topk` predictions."""
    if config.cell not in LAZY_CELLS:
        per_char = config.n_layers * config.hidden * 2  # a vanilla RNN keeps its one state, h, as float16
    else:
        per_char = config.n_layers * config.hidden * 4 + 8  # h as float32, the text's ids (int64)
    return length * (per_char + topk * 8 + 4)  # top-k ids (int32) and probabilities, surprisal (float32)


@dataclass
class Trace:
    text: str
    cell: str
    layer_ids: list[int]
    states: dict[int, LayerStates | RecomputedStates]  # layer -> state -> (T, U) values
    units: list[int] | None  # None = every unit
    topk_ids: np.ndarray | None  # (T, k) next-character ids, most likely first
    topk_probs: np.ndarray | None  # (T, k)
    surprisal_bits: np.ndarray  # (T,) -log2 p(text[t+1]); NaN at the last position
    unknown: list[int] = field(default_factory=list)  # positions of characters the model never saw

    @property
    def nbytes(self) -> int:
        total = self.surprisal_bits.nbytes + len(self.text) * 4
        for per_layer in self.states.values():
            total += per_layer.nbytes
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


def run_trace(model: CharLM, vocab: CharVocab, text: str, **options) -> Trace:
    """Trace one text: run_traces for a batch of one, with the same keyword options."""
    return run_traces(model, vocab, [text], **options)[0]


@torch.no_grad()
def run_traces(
    model: CharLM,
    vocab: CharVocab,
    texts: list[str],
    *,
    layers=None,
    states=None,
    units=None,
    topk: int = 5,
    warmup: str = "",
    half: bool = False,
    chunk: int = 512,
    overlap: bool = True,
    lazy: bool = False,
) -> list[Trace]:
    """Trace each text, in chunks of `chunk` characters with the state carried across: one Trace
    each, in the order given.

    With `overlap` (the default), the work runs as a task graph on max(2, torch threads) worker
    threads of one torch thread each: layer k+1 reads chunk j while layer k reads chunk j+1,
    and gates and predictions fill the gaps (bench/trace_speed.py measures both routes). Without
    it, everything runs in order on the calling thread with its own torch thread count.

    The fused forwards run the texts as one batch: a step's matrix-vector products become one
    small matrix product, which costs little more than one text's (bench/batch_trace_speed.py
    measures what it buys). Gates and predictions are worked out per text as before. Each text's
    values match PyTorch's for that text alone up to float32 rounding.

    With `lazy` (every layer and unit; `half` then sets the dtype of what is read), a gated
    cell's trace keeps only each layer's h and works out every other state when it is read (see
    RecomputedStates): what a cache wants, a quarter of the memory of an eager float16 trace
    and no gate recording.
    """
    if not texts:
        raise RnnscopeError("no texts to trace")
    for n, text in enumerate(texts):
        if not text:
            raise RnnscopeError("the text is empty: give at least one character" if len(texts) == 1
                                else f"text {n} is empty: give at least one character")
    layer_ids, state_ids, unit_ids = check_request(model, layers, states, units)
    model.eval()
    cfg = model.config
    out_dtype = np.float16 if half else np.float32
    lazy = lazy and cfg.cell in LAZY_CELLS
    if lazy and (layers is not None or units is not None or states is not None):
        raise ValueError("a lazy trace keeps every layer, state and unit: it needs layers, states and units unset")
    order = sorted(range(len(texts)), key=lambda n: -len(texts[n]))  # longest first: the rows still
    rows = [vocab.encode_tensor(texts[n]) for n in order]  # running in a chunk are always a prefix
    width = cfg.hidden if unit_ids is None else len(unit_ids)
    # Each chunk writes its rows straight into the final arrays (no per-chunk lists to stitch),
    # allocated by the first tasks of the graph from the buffer pool (models/buffers.py).
    recorded: list[dict[int, dict[str, np.ndarray]]] = [{k: {} for k in layer_ids} for _ in rows]
    k_top = max(0, min(int(topk), cfg.vocab_size))
    keep = ["h"] if lazy else state_ids
    carry = warmup_state(model, vocab, warmup)
    keep_units = None if unit_ids is None else torch.tensor(unit_ids)
    run = _TraceRun(model, rows, chunk, carry, recorded, keep, keep_units, k_top, width,
                    np.float32 if lazy else out_dtype)
    workers = max(2, torch.get_num_threads()) if overlap else 1
    try:
        run.graph.run(workers)
    finally:
        run.graph = None  # its tasks are bound methods of run: without this cycle the outputs are
        # freed (and their buffers pooled) as soon as the caller drops the trace, not at the next GC
    traces: list[Trace | None] = [None] * len(texts)
    for b, n in enumerate(order):
        heads = [run.heads[(b, j)] for j in range(math.ceil(len(rows[b]) / run.chunk))]
        if lazy:
            per_layer = _recomputed_layers(model, rows[b], recorded[b], run.starts(b), run.chunk, state_ids, out_dtype)
        else:
            per_layer = {k: LayerStates(recorded[b][k]) for k in layer_ids}
        traces[n] = Trace(
            text=texts[n],
            cell=cfg.cell,
            layer_ids=layer_ids,
            states=per_layer,
            units=unit_ids,
            topk_ids=_join([h[1] for h in heads]) if k_top else None,
            topk_probs=_join([h[2] for h in heads]) if k_top else None,
            surprisal_bits=_join([h[0] for h in heads]).astype(np.float32, copy=False),
            unknown=vocab.unknown_positions(texts[n]),
        )
    return traces


def _recomputed_layers(model: CharLM, ids: torch.Tensor, recorded: dict, starts: dict, chunk: int, names,
                       dtype) -> dict[int, RecomputedStates]:
    """A lazy trace's layers: layer 0 reads the text's embedding, layer k the h of layer k-1."""
    out: dict[int, RecomputedStates] = {}
    for k, layer in enumerate(model.layers):
        if k == 0:
            inputs, extra = (lambda a, b: model.embed(ids[a:b])), ids.nbytes
        else:
            inputs, extra = partial(_rows_of, recorded[k - 1]["h"]), 0
        out[k] = RecomputedStates(model.config.cell, layer, names, inputs, recorded[k]["h"], starts[k], chunk,
                                  dtype, extra)
    return out


def _rows_of(values: np.ndarray, a: int, b: int) -> torch.Tensor:
    return torch.from_numpy(values[a:b])


class _TraceRun:
    """One batch of traces as a task graph: ("fwd", k, j) runs layer k's fused module over chunk j
    of every text still running, ("rec", k, j) records their states and gates, ("pred", j) the
    top layer's predictions.

    Rows are sorted longest first, so the texts still running in chunk j are rows 0..active(j)-1;
    a row that ends inside a chunk is padded there, and what the padding computes is never read.
    Sequence tensors are held only until their last reader has run.
    """

    def __init__(self, model: CharLM, rows, chunk, carry, recorded, state_ids, keep_units, k_top, width, dtype):
        self.model, self.rows, self.chunk = model, rows, max(1, int(chunk))
        self.recorded, self.state_ids, self.keep_units, self.k_top = recorded, state_ids, keep_units, k_top
        # The caller's deadline (models/deadline.py): the graph's worker threads check it before each forward.
        self.until = deadline.current()
        L = model.config.n_layers
        self.lengths = [len(r) for r in rows]
        self.n_chunks = math.ceil(self.lengths[0] / self.chunk)
        n = len(rows)
        self.state_in = {(k, 0): None if carry is None else _repeat_rows(carry[k], n) for k in range(L)}
        self.seq: dict[tuple[int, int], list] = {}  # (layer, chunk) -> [tensor, readers left]; layer -1 = embedding
        self.seq_lock = threading.Lock()
        self.heads: dict[tuple[int, int], tuple] = {}  # (row, chunk) -> predictions
        self.layer_ids = layer_ids = list(recorded[0])  # the layers recorded
        self.weights = {k: gate_weights(model.config.cell, model.layers[k], keep_units)
                        if _wants_gates(state_ids) else None for k in layer_ids}
        self.graph = g = TaskGraph()
        for k in layer_ids:
            g.add(("alloc", k), partial(self.allocate, k, width, dtype), priority=(0, -1, k))
        for j in range(self.n_chunks):
            for k in range(L):
                g.add(("fwd", k, j), partial(self.forward, k, j),
                      after=[key for key in (("fwd", k - 1, j), ("fwd", k, j - 1)) if min(key[1:]) >= 0],
                      priority=(0, j + k, k))
                if k in layer_ids:
                    g.add(("rec", k, j), partial(self.record, k, j), after=[("fwd", k, j), ("alloc", k)],
                          priority=(1, j, k))
            g.add(("pred", j), partial(self.predict, j), after=[("fwd", L - 1, j)], priority=(1, j, L))

    def allocate(self, k: int, width: int, dtype) -> None:
        for b, length in enumerate(self.lengths):
            for s in self.state_ids:
                self.recorded[b][k][s] = POOL.empty((length, width), dtype)

    def _active(self, j: int) -> list[tuple[int, int]]:
        """(row, characters of it in chunk j) for the rows still running there."""
        start = j * self.chunk
        return [(b, min(self.chunk, n - start)) for b, n in enumerate(self.lengths) if n > start]

    def _readers(self, k: int) -> int:
        """How many tasks read layer k's output sequence of a chunk (k = -1: the embedding)."""
        L, recorded = self.model.config.n_layers, self.layer_ids
        return (0 <= k < L - 1) + (k >= 0 and k in recorded) + (k + 1 in recorded) + (k == L - 1)

    def _put(self, k: int, j: int, value: torch.Tensor) -> None:
        if n := self._readers(k):
            with self.seq_lock:
                self.seq[(k, j)] = [value, n]

    def _take(self, k: int, j: int) -> torch.Tensor:
        with self.seq_lock:
            held = self.seq[(k, j)]
            held[1] -= 1
            if held[1] == 0:
                del self.seq[(k, j)]
            return held[0]

    def forward(self, k: int, j: int) -> None:
        deadline.check(self.until)
        active = self._active(j)
        if k == 0:
            start = j * self.chunk
            piece = torch.zeros(len(active), active[0][1], dtype=self.rows[0].dtype)  # padded with id 0
            for b, n in active:
                piece[b, :n] = self.rows[b][start : start + n]
            x = self.model.embed(piece)  # (B, t, E)
            self._put(-1, j, x)
        else:
            x = self._take(k - 1, j)
        h_seq, s1 = self.model.layers[k](x, _first_rows(self.state_in[(k, j)], len(active)))  # (B, t, H)
        self.state_in[(k, j + 1)] = s1
        self._put(k, j, h_seq)

    def record(self, k: int, j: int) -> None:
        x, h = self._take(k - 1, j), self._take(k, j)
        s0 = self.state_in[(k, j)]
        for b, n in self._active(j):
            _record_layer(self.model.config.cell, x[b, :n], h[b, :n], _row(s0, b), self.state_ids, self.keep_units,
                          self.recorded[b][k], j * self.chunk, self.weights[k])

    def starts(self, b: int) -> dict[int, list]:
        """Row b's state before each of its chunks, per layer (what a lazy trace recomputes from)."""
        n_chunks = math.ceil(self.lengths[b] / self.chunk)
        return {k: [_each(_row(self.state_in[(k, j)], b), torch.clone) for j in range(n_chunks)]
                for k in range(self.model.config.n_layers)}

    def predict(self, j: int) -> None:
        L = self.model.config.n_layers
        top_h = self._take(L - 1, j)
        start = j * self.chunk
        for b, n in self._active(j):
            nxt = self.rows[b][start + 1 : start + 1 + n]
            self.heads[(b, j)] = _predict(self.model, top_h[b, :n], nxt, self.k_top)


def _each(state, fn):
    """fn applied to each tensor of a layer's state (h, or (h, c)), each (1, rows, H); None stays None."""
    if state is None:
        return None
    return tuple(fn(t) for t in state) if isinstance(state, tuple) else fn(state)


def _first_rows(state, n: int):
    """A layer's state for the first n rows of the batch."""
    return _each(state, lambda t: t if t.shape[1] == n else t[:, :n].contiguous())


def _row(state, b: int):
    """Row b of a layer's state as a one-row state."""
    return _each(state, lambda t: t[:, b : b + 1])


def _repeat_rows(state, n: int):
    """A one-row warm-up state for every row of the batch."""
    return _each(state, lambda t: t if n == 1 else t.expand(-1, n, -1).contiguous())


def _predict(model: CharLM, top_h: torch.Tensor, nxt: torch.Tensor, k_top: int) -> tuple:
    """Surprisal of the actual next character (bits; NaN at the end) and the top-k guesses."""
    logp = F.log_softmax(model.head(top_h).float(), dim=-1)  # (t, V)
    s = torch.full((top_h.shape[0],), float("nan"))
    s[: len(nxt)] = -logp[torch.arange(len(nxt)), nxt] / LN2
    if k_top:
        p, i = logp.exp().topk(k_top, dim=-1)
        return s.numpy(), i.numpy().astype(np.int32), p.numpy()
    return s.numpy(), None, None


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """One chunk needs no copy; several are stitched together."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class GateWeights:
    """One layer's gate weights for the units kept, prepared once per trace, not per chunk.

    The LSTM's are joined as [W_ih | W_hh] with the two biases summed: one GEMM over
    [x_t ; h_t-1] is about a sixth cheaper than two over the same rows. The GRU's stay apart:
    its candidate needs h_t-1 W_hn on its own (it is scaled by r).
    """

    units: torch.Tensor  # (U,) unit ids
    w: torch.Tensor  # lstm (4U, In+H); gru W_ih rows (3U, In)
    b: torch.Tensor  # lstm (4U,) b_ih + b_hh; gru b_ih rows (3U,)
    w_hh: torch.Tensor | None = None  # gru only (3U, H)
    b_hh: torch.Tensor | None = None


def gate_weights(cell: str, layer, keep_units: torch.Tensor | None) -> GateWeights | None:
    """None for a vanilla RNN: it has no gates, only h."""
    if cell not in ("lstm", "gru"):
        return None
    H = layer.hidden_size
    units = torch.arange(H) if keep_units is None else keep_units
    n_gates = 4 if cell == "lstm" else 3
    rows = (torch.arange(n_gates)[:, None] * H + units[None, :]).reshape(-1)  # each gate's rows for our units
    whole = keep_units is None
    w_ih = layer.weight_ih_l0 if whole else layer.weight_ih_l0[rows]
    w_hh = layer.weight_hh_l0 if whole else layer.weight_hh_l0[rows]
    b_ih = layer.bias_ih_l0 if whole else layer.bias_ih_l0[rows]
    b_hh = layer.bias_hh_l0 if whole else layer.bias_hh_l0[rows]
    if cell == "lstm":
        return GateWeights(units, torch.cat([w_ih, w_hh], dim=1), b_ih + b_hh)
    return GateWeights(units, w_ih, b_ih, w_hh, b_hh)


def _wants_gates(states) -> bool:
    """Anything beyond h needs the layer's gates recomputed (c included: it is rebuilt from them)."""
    return bool(set(states) - {"h"})


def _record_layer(cell, x, h, s0, want, keep_units, into, start, weights: GateWeights | None) -> None:
    """Write this chunk's requested states for one layer into rows start.. of `into`'s arrays.

    x (t, In), h (t, H) come from the fused run; `weights` from gate_weights (None only when just h
    is wanted). Gates are elementwise per unit, so with a unit subset only those units' weight rows
    are multiplied: the rest of the layer's gates are never materialised.
    """
    H = h.shape[1]

    def put(name, value):  # value (t, U); torch's cast to float16 is ~25x numpy's here
        if name in into:
            torch.from_numpy(into[name][start : start + value.shape[0]]).copy_(value)

    put("h", h if keep_units is None else h[:, keep_units])
    if not _wants_gates(want):
        return
    U = len(weights.units)
    h0 = (torch.zeros(1, 1, H) if s0 is None else (s0[0] if cell == "lstm" else s0))[0]  # (1, H)
    if cell == "lstm":
        c0 = torch.zeros(U) if s0 is None else s0[1][0, 0, weights.units]  # (U,)
        # Pre-activations of all gates for all steps from [x_t ; h_t-1] (row 0 reads the incoming h0).
        t, n_in = x.shape
        if U <= FEW_UNITS:  # copying [x ; h] would cost more than the few products it saves
            pre = F.linear(x, weights.w[:, :n_in], weights.b)  # (t, 4U)
            pre[1:] += F.linear(h[:-1], weights.w[:, n_in:])
            pre[:1] += F.linear(h0, weights.w[:, n_in:])
        else:
            xh = torch.empty(t, n_in + H)
            xh[:, :n_in] = x
            xh[:1, n_in:] = h0
            xh[1:, n_in:] = h[:-1]
            pre = F.linear(xh, weights.w, weights.b)  # (t, 4U)
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
        gi = torch.addmm(weights.b, x, weights.w.T)  # (t, 3U)
        gh = torch.empty_like(gi)
        torch.addmm(weights.b_hh, h[:-1], weights.w_hh.T, out=gh[1:])  # (t-1, 3U): h_{t-1} for t >= 1
        torch.addmm(weights.b_hh, h0, weights.w_hh.T, out=gh[:1])
        i_r, i_z, i_n = gi.split(U, dim=1)
        h_r, h_z, h_n = gh.split(U, dim=1)
        r = (i_r + h_r).sigmoid_()
        z = (i_z + h_z).sigmoid_()
        n = (i_n + r * h_n).tanh_()
        put("r", r), put("z", z), put("n", n)


def _cell_recurrence(f: torch.Tensor, u: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """c_t = f_t * c_{t-1} + u_t for all t: an elementwise scan over time (models/cell_scan.py)."""
    return torch.from_numpy(cell_recurrence(f.numpy(), u.numpy(), c0.numpy()))
