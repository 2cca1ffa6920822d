"""How the networks behave over time: gradient flow, saliency, the seed's scalar RNN, gate
saturation, interventions on a unit and counterfactual edits.

Everything here works on a CharLM and plain tensors; the web layer only draws the results.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .charlm import CharLM
from .errors import RnnscopeError
from .trace import check_request, run_trace
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
    with torch.no_grad():  # the state entering the window, from the text before it
        _, _, state = model(ids[None, :start]) if start > 0 else (None, None, None)

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
    return GradientFlow(position=T, start=start, jacobian_norm=jac, saliency=sal, layer=layer, probes=probes)


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

    Before `start` both runs are the fused forward; from `start` the clamped run steps one
    character at a time so the clamped value feeds every later step (a causal test).
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
    base = run_trace(model, vocab, text, layers=[layer], states=[state], units=[unit], topk=0)
    logits_before, _, _ = model(ids[None])
    value_before = base.states[layer][state][:, 0]

    pieces, values = [], list(value_before[:start])
    if start > 0:
        _, _, st = model(ids[None, :start])  # the state entering the clamp
        pieces.append(logits_before[0, :start])  # before the clamp both runs are the same run
    else:
        st = None
    for t in range(start, len(ids)):
        x = model.embed(ids[t : t + 1])[None]  # (1, 1, E)
        new = []
        for k, mod in enumerate(model.layers):
            s_in = None if st is None else st[k]
            out, s = mod(x, s_in)
            if k == layer:
                if state == "h":
                    h = (s[0] if isinstance(s, tuple) else s).clone()
                    h[..., unit] = value
                    s = (h, s[1]) if isinstance(s, tuple) else h
                    values.append(float(h[0, 0, unit]))
                else:
                    h, c = s
                    c = c.clone()
                    c[..., unit] = value
                    h = _output_gate(mod, x[0], s_in) * torch.tanh(c)  # h_t = o_t * tanh(c_t), c clamped
                    s = (h, c)
                    values.append(float(c[0, 0, unit]))
                out = h.transpose(0, 1)
            new.append(s)
            x = out
        st = new
        pieces.append(model.head(x[0]))
    logits_after = torch.cat(pieces)  # (T, V)

    def summarise(logits):
        logp = F.log_softmax(logits, -1)
        nxt = ids[1:]
        surprisal = np.full(len(ids), np.nan, dtype=np.float32)
        surprisal[:-1] = (-logp[torch.arange(len(nxt)), nxt] / LN2).numpy()
        prob = logp[:, vocab.chars.index(watch)].exp().numpy() if watch else np.full(len(ids), np.nan, np.float32)
        return surprisal, prob

    s0, p0 = summarise(logits_before[0])
    s1, p1 = summarise(logits_after)
    res = Intervention(s0, s1, p0, p1, value_before.astype(np.float32), np.array(values, dtype=np.float32))
    if k_top:
        _top_predictions(res, F.softmax(logits_before[0].float(), -1), F.softmax(logits_after.float(), -1), k_top)
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


def _output_gate(mod, x, s0):
    """The LSTM output gate o_t for input x (1, E) and incoming state s0."""
    H = mod.hidden_size
    h_prev = torch.zeros(1, H) if s0 is None else s0[0][0]
    pre = x @ mod.weight_ih_l0.T + mod.bias_ih_l0 + h_prev @ mod.weight_hh_l0.T + mod.bias_hh_l0
    return pre[:, 3 * H :].sigmoid()[None]  # (1, 1, H)


# ------------------------------------------------------------------ counterfactual edits


@dataclass
class Counterfactual:
    edited: str
    delta: list[float | None]  # per character of the edited text; None where it has no counterpart
    before: list[float | None]
    after: list[float]


def counterfactual(model: CharLM, vocab: CharVocab, original: str, edited: str, layer: int, state: str,
                   unit: int) -> Counterfactual:
    """Trace both texts and colour each edited character by the change in the chosen unit."""
    if not original or not edited:
        raise RnnscopeError("both the original and the edited text must be non-empty")
    a = run_trace(model, vocab, original, layers=[layer], states=[state], units=[unit], topk=0).states[layer][state][:, 0]
    b = run_trace(model, vocab, edited, layers=[layer], states=[state], units=[unit], topk=0).states[layer][state][:, 0]
    before: list[float | None] = [None] * len(edited)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=original, b=edited, autojunk=False).get_opcodes():
        if tag == "equal":
            for off in range(i2 - i1):
                before[j1 + off] = float(a[i1 + off])
    after = [float(v) for v in b]
    delta = [None if p is None else q - p for p, q in zip(before, after)]
    return Counterfactual(edited=edited, delta=delta, before=before, after=after)
