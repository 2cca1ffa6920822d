"""How close is the full trace to the fused forward pass, the speed floor on this CPU?

For a 2-layer, 512-unit LSTM and GRU (random weights: speed does not depend on training) on
texts of 5,000 and 50,000 characters, prints the median time of
  (a) PyTorch's fused 2-layer nn.LSTM / nn.GRU (num_layers=2) returning only the top h,
  (b) a per-step loop of LSTMCell/GRUCell calls,
  (c) the full trace: every layer, every state and gate, top-k and surprisal, float32, as
      run_trace does it by default (a task graph on max(2, threads) workers of one torch thread),
  (c1) the same trace with overlap=False: everything in order on the calling thread,
  (g) the gate pre-activation GEMMs alone ([x_t ; h_t-1] times every layer's weights for all steps):
      work this route adds to (a) whatever else it does, so (a+g)/a is its floor at this thread count,
and the ratios c/a (target <= 1.3), c1/a, (a+g)/a and b/a, all measured side by side in this one run
(a, c, c1 and g take turns in every round of repeats).
The engine's buffer pool is sized to hold one full trace, as a server reusing memory would have it
(models/buffers.py); the first of the repeats maps fresh memory, the median is the steady state.

    python bench/trace_speed.py [--repeats 3] [--lengths 5000 50000] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from models.buffers import POOL
from models.charlm import CELL_STATES, CharLM, ModelConfig
from models.trace import run_trace
from models.vocab import CharVocab

ALPHABET = 'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ,.;:!?"\'\n-'


def median_time(fn, repeats: int) -> float:
    return median_times([fn], repeats)[0]


def median_times(fns, repeats: int) -> list[float]:
    """Each callable's median time over `repeats` rounds, the callables taking turns within a round,
    so that a slow spell of this shared machine lands on all of them alike, not on one."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            t = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t)
    return [statistics.median(spent) for spent in times]


@torch.no_grad()
def cell_loop(model: CharLM, idx: torch.Tensor) -> None:
    """The slow reference: one LSTMCell/GRUCell call per character per layer."""
    cells = []
    for layer in model.layers:
        cell_cls = torch.nn.LSTMCell if isinstance(layer, torch.nn.LSTM) else torch.nn.GRUCell
        cell = cell_cls(layer.input_size, layer.hidden_size)
        cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
        cells.append(cell)
    x_all = model.embed(idx[0])
    H = model.config.hidden
    state = [None] * len(cells)
    for t in range(x_all.size(0)):
        x = x_all[t : t + 1]
        for k, cell in enumerate(cells):
            if isinstance(cell, torch.nn.LSTMCell):
                h, c = cell(x, state[k] or (torch.zeros(1, H), torch.zeros(1, H)))
                state[k] = (h, c)
            else:
                h = cell(x, state[k] if state[k] is not None else torch.zeros(1, H))
                state[k] = h
            x = h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-repeats", type=int, default=1, help="the per-step loop is slow; fewer repeats")
    ap.add_argument("--lengths", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    vocab = CharVocab.from_text(ALPHABET)
    configs = {cell: ModelConfig(cell=cell, n_layers=2, hidden=512, emb=64, vocab_size=len(vocab))
               for cell in ("lstm", "gru")}
    full_trace_bytes = max(cfg.n_layers * len(CELL_STATES[cell]) * max(args.lengths) * cfg.hidden * 4
                           for cell, cfg in configs.items())  # layers x states x chars x units x float32
    POOL.resize(full_trace_bytes + (64 << 20))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} (loop: "
          f"{args.loop_repeats}); buffer pool {POOL.limit_bytes / 2**20:.0f} MiB")
    print(f"{'cell':5} {'chars':>7} {'(a) fused s':>12} {'(b) loop s':>11} {'(c) trace s':>12} {'(c1) s':>8} "
          f"{'(g) s':>7} {'c/a':>6} {'c1/a':>6} {'(a+g)/a':>8} {'b/a':>6}")
    for cell, cfg in configs.items():
        torch.manual_seed(0)
        model = CharLM(cfg).eval()
        fused = fused_module(model)
        for n in args.lengths:
            text = "".join(rng.choice(ALPHABET) for _ in range(n))
            idx = vocab.encode_tensor(text)[None, :]
            with torch.no_grad():
                same = fused(model.embed(idx[:, :500]))[0]  # warm-up, and the floor computes what the model does
                assert torch.allclose(same, model.top_hidden(idx[:, :500]), atol=1e-5)
                run_trace(model, vocab, text[:3000])
            a, c, c1, g = median_times([lambda: torch.no_grad()(fused)(model.embed(idx)),
                                        lambda: run_trace(model, vocab, text, topk=5),
                                        lambda: run_trace(model, vocab, text, topk=5, overlap=False),
                                        gate_gemms(model, idx)], args.repeats)
            b = median_time(lambda: cell_loop(model, idx), args.loop_repeats)
            print(f"{cell:5} {n:7d} {a:12.3f} {b:11.3f} {c:12.3f} {c1:8.3f} {g:7.3f} {c / a:6.2f} {c1 / a:6.2f} "
                  f"{(a + g) / a:8.2f} {b / a:6.2f}", flush=True)


@torch.no_grad()
def gate_gemms(model: CharLM, idx: torch.Tensor):
    """A timed callable: every layer's gate pre-activations for all steps, from its input and h."""
    xs, x = [], model.embed(idx)
    for layer in model.layers:  # inputs and outputs of each layer, computed once, outside the timing
        h, _ = layer(x)
        xs.append((x[0], h[0], layer))
        x = h

    def run() -> None:
        for x, h, layer in xs:
            pre = torch.addmm(layer.bias_ih_l0 + layer.bias_hh_l0, x, layer.weight_ih_l0.T)
            pre[1:].addmm_(h[:-1], layer.weight_hh_l0.T)

    return run


def fused_module(model: CharLM) -> torch.nn.Module:
    """One multi-layer nn.LSTM / nn.GRU holding the model's per-layer weights."""
    cfg = model.config
    cls = torch.nn.LSTM if cfg.cell == "lstm" else torch.nn.GRU
    fused = cls(cfg.emb, cfg.hidden, num_layers=cfg.n_layers, batch_first=True).eval()
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fused, f"{name}_l{k}").copy_(getattr(layer, f"{name}_l0"))
    return fused

if __name__ == "__main__":
    main()
