"""How the networks behave over time: gradient flow, saliency, the seed's scalar RNN, gate
saturation, interventions on a unit and counterfactual edits.

Everything here works on a CharLM and plain tensors; the web layer only draws the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .charlm import CharLM
from .errors import RnnscopeError
from . import deadline
from .trace import _record_layer, check_request, gate_weights, run_trace
from .vocab import CharVocab

LN2 = math.log(2)
MAX_LOOKBACK = 400
MAX_CLAMP = 1e4  # |value| a unit may be clamped to: far past any activation, well inside float32
MAX_TOPK = 20  # next-character predictions per position an intervention reports, before and after
EXACT_JACOBIAN_MAX_HIDDEN = 128  # above this, ||J||_F is estimated from random probes
JACOBIAN_PROBES = 32


# ------------------------------------------------------------------ gradient flow and saliency


@dataclass
class GradientFlow:
    position: int  # T: the position whose state / prediction is differentiated
    start: int  # first position t of the window
    jacobian_norm: np.ndarray  # (T - start + 1,) ||dh_T / dh_t||_F for t = start..T
    saliency: np.ndarray  # (T - start + 1,) ||d log p(next char at T) / d x_t|| (x_t = input embedding)
    layer: int
    probes: int | None = None  # None: exact; else the number of random probes behind the estimate
    target_id: int | None = None  # the character whose log-probability the saliency differentiates


def gradient_flow(model: CharLM, vocab: CharVocab, text: str, position: int | None = None, layer: int | None = None,
                  lookback: int = 200, probes: int | None = -1) -> GradientFlow:
    """Frobenius norms of dh_T/dh_t and the input saliency of the prediction at T, for the
    `lookback` steps before T.

    One backward pass whose batch rows are the vectors v in v^T J. Exact with v = each unit
    (H rows); for wide models (or `probes`=K) an unbiased estimate from K Rademacher vectors,
    E||J^T v||^2 = ||J||_F^2, with a fixed seed so the plot is reproducible. probes=-1 picks:
    exact up to EXACT_JACOBIAN_MAX_HIDDEN units, else JACOBIAN_PROBES probes.
    """
    if not text:
        raise RnnscopeError("the text is empty: give at least one character")
    T = len(text) - 1 if position is None else int(position)
    if not 0 <= T < len(text):
        raise RnnscopeError(f"position {T} is out of range: the text has positions 0..{len(text) - 1}")
    if not 1 <= lookback <= MAX_LOOKBACK:
        raise RnnscopeError(f"lookback must be between 1 and {MAX_LOOKBACK}, got {lookback}")
    layers, _, _ = check_request(model, None if layer is None else [layer], None, None)
    layer = layers[-1] if layer is None else layer
    model.eval()
    H = model.config.hidden
    start = max(0, T - lookback)
    ids = vocab.encode_tensor(text)
    state = _state_after(model, ids[:start])  # the state entering the window, from the text before it

    def expand(s, n):
        if s is None:
            return None
        return [tuple(t.expand(-1, n, -1).contiguous() for t in x) if isinstance(x, tuple) else x.expand(-1, n, -1).contiguous()
                for x in s]

    if probes == -1:
        probes = None if H <= EXACT_JACOBIAN_MAX_HIDDEN else JACOBIAN_PROBES
    if probes is not None and not 1 <= probes <= 4096:
        raise RnnscopeError(f"probes must be between 1 and 4096, got {probes}")
    if probes is None:
        seeds = torch.eye(H)  # row j backpropagates unit j of h_T: the whole Jacobian
    else:
        gen = torch.Generator().manual_seed(0)
        seeds = (torch.randint(0, 2, (probes, H), generator=gen) * 2 - 1).float() / probes**0.5
    B = seeds.shape[0]
    with torch.enable_grad():
        emb = model.embed(ids[start : T + 1]).detach()  # (W, E)
        x_in = emb[None].expand(B, -1, -1)  # (B, W, E)
        per_layer_state = expand(state, B)
        steps = T - start + 1
        h_nodes = []
        for t in range(steps):
            deadline.check()
            x = x_in[:, t : t + 1]  # (B, 1, E)
            new_state = []
            for k, mod in enumerate(model.layers[: layer + 1]):  # layers above do not reach h_T
                out, s = mod(x, None if per_layer_state is None else per_layer_state[k])
                if k == layer:
                    out.retain_grad()
                    h_nodes.append(out)
                    s = _rewire(s, out)
                new_state.append(s)
                x = out
            per_layer_state = new_state
        h_T = h_nodes[-1][:, 0, :]  # (B rows, H units)
        h_T.backward(seeds)
        jac = np.array([h.grad[:, 0, :].norm().item() for h in h_nodes])  # Frobenius over rows and units

    # Saliency: one row, gradient of log p(char at T+1) (or the argmax if T is the last position).
    with torch.enable_grad():
        e = model.embed(ids[start : T + 1])[None].detach().requires_grad_(True)  # (1, W, E)
        x, s_in = e, state
        for k, mod in enumerate(model.layers):
            x, _ = mod(x, None if s_in is None else s_in[k])
        logp = F.log_softmax(model.head(x[0, -1]), dim=-1)
        target = int(ids[T + 1]) if T + 1 < len(ids) else int(logp.argmax())
        logp[target].backward()
        sal = e.grad[0].norm(dim=-1).numpy()
    return GradientFlow(position=T, start=start, jacobian_norm=jac, saliency=sal, layer=layer, probes=probes,
                        target_id=target)


@torch.no_grad()
def _state_after(model: CharLM, ids: torch.Tensor):
    """Every layer's state after reading ids (None when there are none): fused, a chunk at a time,
    with a deadline check between chunks."""
    state = None
    for a in range(0, len(ids), FUSED_CHUNK):
        deadline.check()
        _, _, state = model(ids[None, a : a + FUSED_CHUNK], state)
    return state


def _rewire(state, out):
    """Make the carried h the very tensor we retain, so gradients reach it (LSTM: keep c)."""
    h_node = out.transpose(0, 1)  # (1, B, H) view of (B, 1, H)
    return (h_node, state[1]) if isinstance(state, tuple) else h_node


# ------------------------------------------------------------------ the seed's scalar RNN


@dataclass
class ScalarRun:
    h: list[float]  # h_1..h_T
    dhT_dh1: float
    dhT_dht: list[float]  # for t = 1..T


def scalar_rnn(w_hh: float = 3.0, w_xh: float = 2.0, b: float = 1.0, xs: list[float] | None = None,
               h0: float = 0.0) -> ScalarRun:
    """h_t = tanh(w_hh h_{t-1} + w_xh x_t + b): states and dh_T/dh_t = prod tanh'(a_s) w_hh."""
    xs = [1.0, 0.0, 0.0] if xs is None else list(xs)
    if not xs or len(xs) > 1000:
        raise RnnscopeError("give between 1 and 1000 inputs")
    for v in (w_hh, w_xh, b, h0, *xs):
        if not math.isfinite(v):
            raise RnnscopeError("weights and inputs must be finite numbers")
    hs, local = [], []
    h = h0
    for x in xs:
        h = math.tanh(w_hh * h + w_xh * x + b)
        hs.append(h)
        local.append((1 - h * h) * w_hh)  # dh_t / dh_{t-1}
    T = len(xs)
    back = [1.0] * T  # dh_T/dh_t for t = 1..T
    for t in range(T - 2, -1, -1):
        back[t] = back[t + 1] * local[t + 1]
    return ScalarRun(h=hs, dhT_dh1=back[0], dhT_dht=back)


# ------------------------------------------------------------------ gate saturation


def gate_saturation(model: CharLM, vocab: CharVocab, text: str, low: float = 0.1, high: float = 0.9) -> dict:
    """Per layer and gate: each unit's fraction of steps left-saturated (< low) and right (> high)."""
    gates = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}.get(model.config.cell)
    if gates is None:
        raise RnnscopeError("a vanilla RNN has no gates; pick an LSTM or GRU model")
    tr = run_trace(model, vocab, text, states=list(gates), topk=0)
    out = {}
    for layer, per in tr.states.items():
        out[layer] = {g: {"left": (per[g] < low).mean(axis=0), "right": (per[g] > high).mean(axis=0)} for g in gates}
    return out


# ------------------------------------------------------------------ interventions


@dataclass
class Intervention:
    surprisal_before: np.ndarray  # (T,) bits
    surprisal_after: np.ndarray
    prob_before: np.ndarray  # (T,) probability of `watch` as the next character (if given)
    prob_after: np.ndarray
    value_before: np.ndarray  # (T,) the unit's value
    value_after: np.ndarray
    # The k likeliest next characters after each position, likeliest first: (T, k) ids into the
    # vocabulary and their probabilities, with the unit free (before) and clamped (after). k = 0: None.
    topk_ids_before: np.ndarray | None = None
    topk_probs_before: np.ndarray | None = None
    topk_ids_after: np.ndarray | None = None
    topk_probs_after: np.ndarray | None = None
    # The k characters whose next-character probability the clamp moved most at each position,
    # largest |after - before| first: (T, k) ids and their probabilities before and after.
    change_ids: np.ndarray | None = None
    change_before: np.ndarray | None = None
    change_after: np.ndarray | None = None

    @property
    def topk(self) -> int:
        return 0 if self.topk_ids_before is None else int(self.topk_ids_before.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))


@torch.no_grad()
def intervene(model: CharLM, vocab: CharVocab, text: str, layer: int, state: str, unit: int, value: float = 0.0,
              start: int = 0, watch: str | None = None, topk: int = 5) -> Intervention:
    """Clamp one unit of h (or an LSTM's c) to `value` from position `start` on; compare predictions.

    The clamped run differs from the free one only from `start` on and only in layers from `layer`
    up: layers below run fused over the whole text (once, shared by both runs); the clamped layer
    steps its cell equations one character at a time from `start` (its input projections for a
    chunk at once, one h W_hh product per step), so the clamped value feeds every later step (a
    causal test); the layers above run fused over its new output. Equal to stepping every layer
    with the unit set by hand, up to float32 rounding (tests/models/test_dynamics.py).
    The `topk` likeliest next characters per position (at most the vocabulary), before and after,
    and the `topk` largest probability changes come from the same two runs' logits.
    """
    if state not in ("h", "c") or (state == "c" and model.config.cell != "lstm"):
        allowed = "h or c" if model.config.cell == "lstm" else "h"
        raise RnnscopeError(f"only a state can be clamped ({allowed}), not {state!r}")
    check_request(model, [layer], [state], [unit])
    if not text:
        raise RnnscopeError("the text is empty: give at least one character")
    if not 0 <= start < len(text):
        raise RnnscopeError(f"start {start} is out of range: the text has positions 0..{len(text) - 1}")
    if not math.isfinite(value) or abs(value) > MAX_CLAMP:
        raise RnnscopeError(f"the clamp value must be a number from {-MAX_CLAMP:,g} to {MAX_CLAMP:,g}, got {value!r}")
    if watch is not None and (len(watch) != 1 or watch not in vocab):
        raise RnnscopeError(f"watch must be one character the model knows, got {watch!r}")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or not 0 <= topk <= MAX_TOPK:
        raise RnnscopeError(f"topk must be a whole number from 0 to {MAX_TOPK}, got {topk!r}")
    k_top = min(int(topk), model.config.vocab_size)
    model.eval()
    ids = vocab.encode_tensor(text)
    T = len(ids)
    # The free run, layer by layer (fused, in chunks). The clamped run shares all of it before
    # `start`, and every layer below `layer` entirely.
    x = model.embed(ids)  # (T, E)
    entering = []  # each layer's state entering position `start` (None at 0: zeros)
    x_clamped, value_before = None, None
    for k, mod in enumerate(model.layers):
        h_seq, s_start = _fused(mod, x, start)
        entering.append(s_start)
        if k == layer:
            x_clamped, value_before = x[start:], _unit_values(model.config.cell, mod, x, h_seq, state, unit)
        x = h_seq
    logits_before = model.head(x)  # (T, V)
    deadline.check()

    # The clamped run: the clamped layer steps from `start` on its (unchanged) input, with the unit
    # set after every step; the layers above read its new output, fused.
    out = _clamped_layer(model.config.cell, model.layers[layer], x_clamped, entering[layer], state, unit, float(value))
    for k in range(layer + 1, len(model.layers)):
        out, _ = _fused(model.layers[k], out, None, entering[k])
    logits_after = torch.cat([logits_before[:start], model.head(out)])  # before the clamp both runs are one run
    values = np.concatenate([value_before[:start], np.full(T - start, value, dtype=np.float32)])

    def summarise(logits):
        logp = F.log_softmax(logits, -1)
        nxt = ids[1:]
        surprisal = np.full(len(ids), np.nan, dtype=np.float32)
        surprisal[:-1] = (-logp[torch.arange(len(nxt)), nxt] / LN2).numpy()
        prob = logp[:, vocab.chars.index(watch)].exp().numpy() if watch else np.full(len(ids), np.nan, np.float32)
        return surprisal, prob

    s0, p0 = summarise(logits_before)
    s1, p1 = summarise(logits_after)
    res = Intervention(s0, s1, p0, p1, value_before.astype(np.float32), values.astype(np.float32))
    if k_top:
        _top_predictions(res, F.softmax(logits_before.float(), -1), F.softmax(logits_after.float(), -1), k_top)
    return res


def _top_predictions(res: Intervention, before: torch.Tensor, after: torch.Tensor, k: int) -> None:
    """Fill the top-k fields from the two runs' next-character distributions (T, V)."""
    pb, ib = before.topk(k, dim=-1)
    pa, ia = after.topk(k, dim=-1)
    _, ic = (after - before).abs().topk(k, dim=-1)  # the largest moves, up or down
    res.topk_ids_before, res.topk_probs_before = ib.numpy().astype(np.int32), pb.numpy().astype(np.float32)
    res.topk_ids_after, res.topk_probs_after = ia.numpy().astype(np.int32), pa.numpy().astype(np.float32)
    res.change_ids = ic.numpy().astype(np.int32)
    res.change_before = before.gather(-1, ic).numpy().astype(np.float32)
    res.change_after = after.gather(-1, ic).numpy().astype(np.float32)


FUSED_CHUNK = 512  # characters per fused forward here, as in a trace: bounded memory, a deadline check each
STEP_CHECK = 32  # clamped steps between deadline checks


def _fused(mod, x: torch.Tensor, split: int | None, s0=None):
    """One layer's fused module over x (T, In) in chunks, from state s0: its output (T, H) and its
    state entering position `split` (the state after x[:split]; None when split is 0 or None)."""
    T = x.shape[0]
    cuts = sorted({0, T, *range(FUSED_CHUNK, T, FUSED_CHUNK), *(() if split is None else (split,))})
    pieces, s, at_split = [], s0, None
    for a, b in zip(cuts, cuts[1:]):
        deadline.check()
        if a == split:
            at_split = s
        h, s = mod(x[None, a:b], s)
        pieces.append(h[0])
    return (pieces[0] if len(pieces) == 1 else torch.cat(pieces)), at_split


def _unit_values(cell: str, mod, x: torch.Tensor, h_seq: torch.Tensor, state: str, unit: int) -> np.ndarray:
    """One unit of h or c at every position of the free run: h from the fused output, c rebuilt by
    the trace engine's own maths for that one unit (what a trace reports)."""
    if state == "h":
        return h_seq[:, unit].numpy().astype(np.float32, copy=True)
    keep = torch.tensor([unit])
    into = {"c": np.empty((h_seq.shape[0], 1), dtype=np.float32)}
    _record_layer(cell, x, h_seq, None, ["c"], keep, into, 0, gate_weights(cell, mod, keep))
    return into["c"][:, 0]


def _clamped_layer(cell: str, mod, x: torch.Tensor, s0, state: str, unit: int, value: float) -> torch.Tensor:
    """The layer's output (S, H) over its input x (S, In) from state s0, with `unit` of h (or an
    LSTM's c) set to `value` after every step: the cell equations one step at a time, the input
    projections x W_ih for a whole chunk at once, one h W_hh product per step."""
    H = mod.hidden_size
    w_ih, w_hh, b_ih, b_hh = mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0
    w_hh_t = w_hh.T.contiguous()  # (H, G): h (1, H) @ w_hh_t is one row-vector product
    if cell == "lstm":
        h, c = (torch.zeros(1, H), torch.zeros(1, H)) if s0 is None else (s0[0][0].clone(), s0[1][0].clone())
    else:
        h, c = torch.zeros(1, H) if s0 is None else s0[0].clone(), None
    relu = cell == "rnn" and getattr(mod, "nonlinearity", "tanh") == "relu"
    S = x.shape[0]
    out = torch.empty(S, H)
    for a in range(0, S, FUSED_CHUNK):
        b = min(S, a + FUSED_CHUNK)
        # The GRU keeps b_hh apart: its candidate scales (h W_hn + b_hn) by r.
        xp = F.linear(x[a:b], w_ih, b_ih if cell == "gru" else b_ih + b_hh)  # (n, G)
        for t in range(a, b):
            if t % STEP_CHECK == 0:
                deadline.check()
            pre = xp[t - a : t - a + 1]
            if cell == "lstm":
                g = torch.addmm(pre, h, w_hh_t)  # (1, 4H): i, f, g, o
                i_g, f_g, g_g, o_g = g.split(H, dim=1)
                c = torch.sigmoid(f_g) * c + torch.sigmoid(i_g) * torch.tanh(g_g)
                if state == "c":
                    c[0, unit] = value
                h = torch.sigmoid(o_g) * torch.tanh(c)
            elif cell == "gru":
                gh = torch.addmm(b_hh, h, w_hh_t)  # (1, 3H)
                x_r, x_z, x_n = pre.split(H, dim=1)
                h_r, h_z, h_n = gh.split(H, dim=1)
                r = torch.sigmoid(x_r + h_r)
                z = torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)
                h = n + z * (h - n)  # (1 - z) n + z h
            else:
                a_t = torch.addmm(pre, h, w_hh_t)
                h = torch.relu(a_t) if relu else torch.tanh(a_t)
            if state == "h":
                h[0, unit] = value
            out[t] = h[0]
    return out


# ------------------------------------------------------------------ counterfactual edits


@dataclass
class Counterfactual:
    edited: str
    delta: list[float | None]  # per character of the edited text; None where it has no counterpart
    before: list[float | None]
    after: list[float]


def counterfactual(model: CharLM, vocab: CharVocab, original: str, edited: str, layer: int, state: str,
                   unit: int, max_edits: int | None = None) -> Counterfactual:
    """Trace both texts and colour each edited character by the change in the chosen unit.

    Each edited character is compared with its counterpart in the original (align): None where it
    has none (inserted or changed)."""
    if not original or not edited:
        raise RnnscopeError("both the original and the edited text must be non-empty")
    a = run_trace(model, vocab, original, layers=[layer], states=[state], units=[unit], topk=0).states[layer][state][:, 0]
    deadline.check()
    b = run_trace(model, vocab, edited, layers=[layer], states=[state], units=[unit], topk=0).states[layer][state][:, 0]
    deadline.check()
    where = align(original, edited, MAX_ALIGN_EDITS if max_edits is None else max_edits)
    before: list[float | None] = [None if i < 0 else float(a[i]) for i in where.tolist()]
    after = [float(v) for v in b]
    delta = [None if p is None else q - p for p, q in zip(before, after)]
    return Counterfactual(edited=edited, delta=delta, before=before, after=after)


# ------------------------------------------------------------------ alignment

# Most characters inserted plus deleted that align() looks for between the common prefix and suffix.
# Its work grows as the square of this (numpy, one vector step per edit): 2,000 costs well under a
# second on the adversarial "a" * 5,000 against "ab" * 2,500 (bench/dynamics_speed.py).
MAX_ALIGN_EDITS = 2_000
SNAKE_STEPS = 8  # matches followed along every diagonal at once before the long ones go one by one
_NONE = -(1 << 40)  # no point reached on this diagonal (yet)


def align(original: str, edited: str, max_edits: int = MAX_ALIGN_EDITS) -> np.ndarray:
    """For each character of `edited`, the index of the character of `original` it is kept from
    (unchanged by the edit), or -1 when it has none (inserted or changed).

    The common prefix and suffix match as they stand; in between, Myers' O((N+M) D) shortest edit
    script (a longest common subsequence) when it takes at most `max_edits` insertions and
    deletions, else the whole middle counts as replaced. Vectorised over diagonals, so the cost is
    bounded by the texts' lengths and max_edits, whatever the texts (difflib's SequenceMatcher took
    25 minutes on 5,000 against 5,000 adversarial characters). Where an edit is unambiguous it
    gives what difflib does; where several alignments are equally short it may pick another.
    """
    N, M = len(original), len(edited)
    where = np.full(M, -1, dtype=np.int64)
    p = _common_run(original, edited, 0, 0, min(N, M))
    where[:p] = np.arange(p)
    if p == N == M:
        return where
    q = _common_run(original[::-1], edited[::-1], 0, 0, min(N, M) - p)
    where[M - q :] = np.arange(N - q, N)
    middle = _myers(original[p : N - q], edited[p : M - q], max_edits)
    if middle is not None:
        i, j = middle
        where[p + j] = p + i
    return where


def _common_run(a: str, b: str, x: int, y: int, limit: int) -> int:
    """How many characters a[x:] and b[y:] share from the start (at most `limit`): whole slices
    compared at C speed, the step doubling while they match and halving where they part."""
    n, step = 0, 16
    while n < limit:
        s = min(step, limit - n)
        if a[x + n : x + n + s] == b[y + n : y + n + s]:
            n += s
            step *= 2
        elif s == 1:
            break
        else:
            step = max(1, s // 2)
    return n


def _codes(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _myers(a: str, b: str, max_d: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The matched (i, j) index pairs of a shortest edit script between a and b (Myers 1986),
    or None when it needs more than max_d insertions and deletions.

    Round d holds, for every diagonal k = x - y in -d..d (step 2), the furthest x reachable with d
    edits (V): each is one step right or down from a neighbour of round d-1, then along its run of
    matches (the snake). Every round is a few numpy operations over its d+1 diagonals; snakes
    longer than SNAKE_STEPS are followed one by one with whole-slice comparisons.
    """
    N, M = len(a), len(b)
    if N == 0 or M == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    A, B = _codes(a), _codes(b)
    off = max_d + 1
    V = np.full(2 * max_d + 3, _NONE, dtype=np.int64)  # V[k + off]
    history: list[np.ndarray] = []  # round d: x after the snake on diagonals -d, -d+2, ..., d
    for d in range(max_d + 1):
        if d % 64 == 0:
            deadline.check()
        ks = np.arange(-d, d + 1, 2)
        if d == 0:
            x = np.zeros(1, dtype=np.int64)
        else:
            x = _step(V[ks - 1 + off], V[ks + 1 + off], ks, N, M)
        x = _snake(A, B, a, b, x, ks, N, M)
        V[ks + off] = x
        history.append(x)
        k_end = N - M
        if -d <= k_end <= d and (k_end + d) % 2 == 0 and x[(k_end + d) // 2] == N:
            return _backtrack(history, N, M)
    return None


def _step(left: np.ndarray, right: np.ndarray, ks: np.ndarray, N: int, M: int) -> np.ndarray:
    """Round d's starting x on each diagonal k: a step right from k-1 (x + 1) or down from k+1 (same
    x), whichever reaches further inside the N x M grid (down on a tie); _NONE where neither does."""
    across = np.where((left != _NONE) & (left + 1 <= N), left + 1, _NONE)
    down = np.where((right != _NONE) & (right - ks <= M), right, _NONE)
    return np.maximum(across, down)


def _snake(A, B, a: str, b: str, x: np.ndarray, ks: np.ndarray, N: int, M: int) -> np.ndarray:
    """x moved along each diagonal's run of matching characters."""
    x = x.copy()
    live = np.flatnonzero(x != _NONE)
    for _ in range(SNAKE_STEPS):
        if not live.size:
            return x
        xl = x[live]
        yl = xl - ks[live]
        ok = (xl < N) & (yl < M)
        live, xl, yl = live[ok], xl[ok], yl[ok]
        same = A[xl] == B[yl]
        live = live[same]
        x[live] += 1
    for n in live.tolist():  # long runs: whole slices at a time
        xn = int(x[n])
        yn = xn - int(ks[n])
        x[n] = xn + _common_run(a, b, xn, yn, min(N - xn, M - yn))
    return x


def _backtrack(history: list[np.ndarray], N: int, M: int) -> tuple[np.ndarray, np.ndarray]:
    """The matched pairs on the path from (N, M) back to (0, 0), taking at each round the move
    the forward pass took (_step's rule)."""
    xs, ys = [], []
    x, k = N, N - M
    for d in range(len(history) - 1, 0, -1):
        prev = history[d - 1]

        def at(kk: int) -> int:
            return int(prev[(kk + d - 1) // 2]) if -(d - 1) <= kk <= d - 1 else _NONE

        left, right = at(k - 1), at(k + 1)
        across = left + 1 if left != _NONE and left + 1 <= N else _NONE
        down = right if right != _NONE and right - k <= M else _NONE
        if down >= across:
            start, k_prev, x_prev = down, k + 1, right
        else:
            start, k_prev, x_prev = across, k - 1, left
        if x > start:  # the snake of this round: matches from start up to x on diagonal k
            xs.append(np.arange(start, x))
            ys.append(np.arange(start, x) - k)
        x, k = x_prev, k_prev
    if x > 0:  # round 0: the run of matches from (0, 0)
        xs.append(np.arange(0, x))
        ys.append(np.arange(0, x))
    if not xs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(xs[::-1]), np.concatenate(ys[::-1])
