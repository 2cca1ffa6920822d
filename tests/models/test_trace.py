"""The trace must equal what PyTorch's own modules and an explicit per-step loop compute."""

import math
import random

import numpy as np
import pytest
import torch

from models.cache import ByteLRU
from models.charlm import CELL_STATES
from models.errors import RnnscopeError
from models.trace import run_trace, run_traces, warmup_state

from .helpers import TEXT, tiny_model

TOL = 1e-5


def reference_loop(model, vocab, text, warmup=""):
    """Explicit per-step cell equations with the model's weights: every state of every layer."""
    ids = vocab.encode_tensor(warmup + text)
    cell, H = model.config.cell, model.config.hidden
    out = [{} for _ in model.layers]
    with torch.no_grad():
        x_all = model.embed(ids)  # (T, E)
        h = [torch.zeros(H) for _ in model.layers]
        c = [torch.zeros(H) for _ in model.layers]
        for t in range(len(ids)):
            x = x_all[t]
            for k, layer in enumerate(model.layers):
                W_ih, W_hh, b_ih, b_hh = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
                rec = {}
                if cell == "rnn":
                    h[k] = torch.tanh(W_ih @ x + b_ih + W_hh @ h[k] + b_hh)
                elif cell == "lstm":
                    i, f, g, o = (W_ih @ x + b_ih + W_hh @ h[k] + b_hh).chunk(4)
                    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                    rec.update(i=i, f=f, g=g, o=o, kept=f * c[k], written=i * g)
                    c[k] = f * c[k] + i * g
                    h[k] = o * torch.tanh(c[k])
                    rec["c"] = c[k]
                else:
                    xr, xz, xn = (W_ih @ x + b_ih).chunk(3)
                    hr, hz, hn = (W_hh @ h[k] + b_hh).chunk(3)
                    r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
                    n = torch.tanh(xn + r * hn)
                    h[k] = (1 - z) * n + z * h[k]
                    rec.update(r=r, z=z, n=n)
                rec["h"] = h[k]
                if t >= len(warmup):
                    for name, v in rec.items():
                        out[k].setdefault(name, []).append(v.clone())
                x = h[k]
    return [{s: torch.stack(v).numpy() for s, v in per.items()} for per in out]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_every_state_matches_explicit_cell_loop(cell, layers):
    model, vocab = tiny_model(cell, layers=layers, seed=layers)
    tr = run_trace(model, vocab, TEXT)
    ref = reference_loop(model, vocab, TEXT)
    assert set(tr.states) == set(range(layers))
    for k in range(layers):
        assert set(tr.states[k]) == set(ref[k]), "every state the cell has is traced"
        for name, want in ref[k].items():
            got = tr.states[k][name]
            assert got.shape == (len(TEXT), 16)
            assert np.abs(got - want).max() <= TOL, (cell, layers, k, name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_hidden_and_final_cell_match_pytorch_multilayer_module(cell):
    """h of every layer equals nn.LSTM/GRU/RNN(num_layers=3)'s output and final states."""
    model, vocab = tiny_model(cell, layers=3)
    ref = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](8, 16, num_layers=3)
    singles = []
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(layer, f"{name}_l0"))
        x = model.embed(vocab.encode_tensor(TEXT))[:, None, :]  # (T, 1, E)
        top, final = ref(x)
        # Each layer alone, fed the previous layer's output, is PyTorch's own per-layer answer.
        inp = x
        for k in range(3):
            one = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](inp.size(-1), 16)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(one, f"{name}_l0").copy_(getattr(ref, f"{name}_l{k}"))
            inp, _ = one(inp)
            singles.append(inp[:, 0].numpy())
    tr = run_trace(model, vocab, TEXT)
    assert np.abs(tr.states[2]["h"] - top[:, 0].numpy()).max() <= TOL
    for k in range(3):
        assert np.abs(tr.states[k]["h"] - singles[k]).max() <= TOL
    if cell == "lstm":
        c_final = final[1][:, 0].numpy()  # (layers, H)
        for k in range(3):
            assert np.abs(tr.states[k]["c"][-1] - c_final[k]).max() <= TOL


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chunked_trace_equals_single_pass(cell, overlap):
    model, vocab = tiny_model(cell)
    text = TEXT * 7
    whole = run_trace(model, vocab, text, chunk=100_000)
    chunked = run_trace(model, vocab, text, chunk=37, overlap=overlap)
    assert np.array_equal(whole.topk_ids[: len(text) - 1], chunked.topk_ids[: len(text) - 1])
    for k in whole.states:
        for s in whole.states[k]:
            assert np.abs(whole.states[k][s] - chunked.states[k][s]).max() <= TOL
    assert np.allclose(whole.surprisal_bits, chunked.surprisal_bits, atol=1e-4, equal_nan=True)


def test_long_text_50k_chars_matches_pytorch():
    model, vocab = tiny_model("lstm", layers=2)
    rng = random.Random(0)
    text = "".join(rng.choice(TEXT) for _ in range(50_000))
    tr = run_trace(model, vocab, text, chunk=8192)
    ref = torch.nn.LSTM(8, 16, num_layers=2)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(layer, f"{name}_l0"))
        top, (h_n, c_n) = ref(model.embed(vocab.encode_tensor(text))[:, None, :])
    assert tr.states[1]["h"].shape == (50_000, 16)
    assert np.abs(tr.states[1]["h"] - top[:, 0].numpy()).max() <= TOL
    assert np.abs(tr.states[0]["c"][-1] - c_n[0, 0].numpy()).max() <= TOL
    assert np.abs(tr.states[1]["c"][-1] - c_n[1, 0].numpy()).max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_state_and_gate_over_50k_chars_matches_the_explicit_loop_and_pytorch(cell):
    """At the longest supported length, chunked, every traced value of every layer is exact."""
    model, vocab = tiny_model(cell, layers=2, seed=7)
    rng = random.Random(1)
    text = "".join(rng.choice(TEXT) for _ in range(50_000))
    tr = run_trace(model, vocab, text, chunk=8192, overlap=True)  # the helper-thread route, at full length
    ref = reference_loop(model, vocab, text)
    for k in range(2):
        assert set(tr.states[k]) == set(ref[k])
        for name, want in ref[k].items():
            assert tr.states[k][name].shape == (50_000, 16)
            assert np.abs(tr.states[k][name] - want).max() <= TOL, (cell, k, name)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](8, 16, num_layers=2)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(module, f"{name}_l{k}").copy_(getattr(layer, f"{name}_l0"))
        top, final = module(model.embed(vocab.encode_tensor(text))[:, None, :])
    assert np.abs(tr.states[1]["h"] - top[:, 0].numpy()).max() <= TOL
    h_n = final[0] if cell == "lstm" else final
    for k in range(2):
        assert np.abs(tr.states[k]["h"][-1] - h_n[k, 0].numpy()).max() <= TOL


def test_warmup_prefix_sets_the_initial_state():
    model, vocab = tiny_model("lstm")
    warm = 'He said "'
    tr = run_trace(model, vocab, TEXT, warmup=warm)
    ref = reference_loop(model, vocab, TEXT, warmup=warm)
    for k in range(2):
        for name in ("h", "c", "f"):
            assert np.abs(tr.states[k][name] - ref[k][name]).max() <= TOL
    assert warmup_state(model, vocab, "") is None
    cold = run_trace(model, vocab, TEXT)
    assert np.abs(cold.states[1]["c"][0] - tr.states[1]["c"][0]).max() > 0


def test_subset_keeps_only_what_was_asked():
    model, vocab = tiny_model("lstm", layers=3)
    full = run_trace(model, vocab, TEXT)
    part = run_trace(model, vocab, TEXT, layers=[1], states=["c", "f"], units=[3, 0, 15], half=True)
    assert list(part.states) == [1] and set(part.states[1]) == {"c", "f"}
    assert part.states[1]["c"].dtype == np.float16 and part.states[1]["c"].shape == (len(TEXT), 3)
    assert np.abs(part.states[1]["c"].astype(np.float32) - full.states[1]["c"][:, [3, 0, 15]]).max() < 2e-3
    assert part.nbytes < full.nbytes


def test_surprisal_and_topk_agree_with_softmax():
    model, vocab = tiny_model("gru")
    tr = run_trace(model, vocab, TEXT, topk=5)
    with torch.no_grad():
        logp = torch.log_softmax(model(vocab.encode_tensor(TEXT)[None])[0][0], -1)
    ids = vocab.encode(TEXT)
    for t in (0, 10, len(TEXT) - 2):
        assert math.isclose(tr.surprisal_bits[t], -logp[t, ids[t + 1]].item() / math.log(2), rel_tol=1e-4)
        assert tr.topk_ids[t, 0] == int(logp[t].argmax())
        assert math.isclose(tr.topk_probs[t, 0], logp[t].exp().max().item(), rel_tol=1e-4)
    assert np.isnan(tr.surprisal_bits[-1])
    assert np.all(np.diff(tr.topk_probs, axis=1) <= 0)


def test_bad_requests_say_what_is_wrong():
    model, vocab = tiny_model("gru", layers=2)
    with pytest.raises(RnnscopeError, match="layer 2 is out of range"):
        run_trace(model, vocab, TEXT, layers=[2])
    with pytest.raises(RnnscopeError, match="state 'c' does not exist in a gru model"):
        run_trace(model, vocab, TEXT, states=["c"])
    with pytest.raises(RnnscopeError, match="unit 16 is out of range"):
        run_trace(model, vocab, TEXT, units=[16])
    with pytest.raises(RnnscopeError, match="empty"):
        run_trace(model, vocab, "")


def test_unknown_characters_are_reported_not_dropped():
    model, vocab = tiny_model()
    tr = run_trace(model, vocab, "He€llo☃")
    assert tr.unknown == [2, 6]
    assert tr.states[0]["h"].shape[0] == 7


def test_byte_lru_evicts_by_size():
    cache = ByteLRU(max_bytes=100, size_of=len)
    cache.put("a", "x" * 40)
    cache.put("b", "y" * 40)
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", "z" * 40)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.nbytes == 80
    cache.put("huge", "w" * 500)
    assert cache.get("huge") is None and cache.nbytes == 80
    value, hit = cache.get_or_compute("a", lambda: "never")
    assert hit and value == "x" * 40


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_unit_subset_of_every_gate_equals_the_full_trace(cell):
    model, vocab = tiny_model(cell, layers=2)
    full = run_trace(model, vocab, TEXT)
    units = [9, 2, 14]
    part = run_trace(model, vocab, TEXT, units=units)
    for k in range(2):
        for name, block in full.states[k].items():
            assert np.abs(part.states[k][name] - block[:, units]).max() <= TOL, (k, name)


def test_the_task_graph_runs_on_max_2_threads_of_one_torch_thread_and_leaves_the_callers_count(monkeypatch):
    import models.taskgraph as tg

    model, vocab = tiny_model("lstm")
    seen = []
    real_run = tg.TaskGraph.run

    def spy(self, workers):
        seen.append(workers)
        return real_run(self, workers)

    monkeypatch.setattr(tg.TaskGraph, "run", spy)
    threads = torch.get_num_threads()
    inside = []
    real_add = tg.TaskGraph.add
    monkeypatch.setattr(tg.TaskGraph, "add", lambda self, key, fn, **kw: real_add(
        self, key, lambda: (inside.append(torch.get_num_threads()), fn()), **kw))
    try:
        torch.set_num_threads(1)
        run_trace(model, vocab, TEXT * 3, chunk=16)
        torch.set_num_threads(2)
        run_trace(model, vocab, TEXT * 3, chunk=16)
        assert torch.get_num_threads() == 2
        run_trace(model, vocab, TEXT * 3, chunk=16, overlap=False)
    finally:
        torch.set_num_threads(threads)
    assert seen == [2, 2, 1]
    n = len(inside) // 3
    assert set(inside[: 2 * n]) == {1} and set(inside[2 * n :]) == {2}  # workers use one; in order, the caller's



def test_an_error_in_a_worker_task_reaches_the_caller(monkeypatch):
    import models.trace as mt

    model, vocab = tiny_model("lstm")

    def broken(*args):
        raise ValueError("worker failed")

    monkeypatch.setattr(mt, "_predict", broken)
    with pytest.raises(ValueError, match="worker failed"):
        run_trace(model, vocab, TEXT * 3, chunk=16, overlap=True)


def test_a_dropped_trace_hands_its_output_buffers_back_to_the_pool(monkeypatch):
    import models.trace as mt
    from models.buffers import BufferPool

    POOL = BufferPool(64 << 20)
    monkeypatch.setattr(mt, "POOL", POOL)
    model, vocab = tiny_model("lstm", hidden=32)
    text = (TEXT * 120)[:8192]  # 8,192 steps x 32 units x float32 = 1 MiB per state: pooled
    free_before, reused_before = 0, 0
    tr = run_trace(model, vocab, text, layers=[1], states=["c", "f"], topk=0)
    expected = run_trace(model, vocab, text, layers=[1], states=["c", "f"], topk=0, overlap=False)
    c = tr.states[1]["c"].copy()
    del tr
    assert POOL.free_bytes >= free_before + 2 * (1 << 20)  # no garbage collection needed: freed on drop
    again = run_trace(model, vocab, text, layers=[1], states=["c", "f"], topk=0)
    assert POOL.reused >= reused_before + 2
    assert np.array_equal(again.states[1]["c"], c) and np.array_equal(again.states[1]["c"], expected.states[1]["c"])


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_batched_texts_each_match_the_explicit_cell_loop(cell, overlap):
    """Texts of different lengths in one batch, chunks ending inside and exactly at a text's end."""
    model, vocab = tiny_model(cell, layers=2, seed=5)
    texts = [TEXT[:3], TEXT * 2, TEXT[:37], TEXT[:40], TEXT[5:45] + TEXT]
    traces = run_traces(model, vocab, texts, chunk=20, overlap=overlap, topk=3)
    assert [t.text for t in traces] == texts, "one trace per text, in the order given"
    for text, tr in zip(texts, traces):
        ref = reference_loop(model, vocab, text)
        alone = run_trace(model, vocab, text, chunk=20, topk=3)
        assert tr.surprisal_bits.shape == (len(text),) and math.isnan(tr.surprisal_bits[-1])
        assert np.abs(tr.surprisal_bits[:-1] - alone.surprisal_bits[:-1]).max() <= TOL
        assert np.array_equal(tr.topk_ids[:-1], alone.topk_ids[:-1])
        for k in range(2):
            assert set(tr.states[k]) == set(ref[k])
            for name, want in ref[k].items():
                assert tr.states[k][name].shape == (len(text), 16)
                assert np.abs(tr.states[k][name] - want).max() <= TOL, (cell, len(text), k, name)


def test_batched_texts_share_a_warmup_and_keep_a_unit_subset():
    model, vocab = tiny_model("lstm", layers=2, seed=6)
    prefix, texts = TEXT[:19], [TEXT[:30], TEXT[7:60]]
    traces = run_traces(model, vocab, texts, layers=[1], states=["c", "f"], units=[4, 0], warmup=prefix, chunk=16)
    for text, tr in zip(texts, traces):
        ref = reference_loop(model, vocab, text, warmup=prefix)
        assert list(tr.states) == [1] and set(tr.states[1]) == {"c", "f"}
        for name in ("c", "f"):
            assert np.abs(tr.states[1][name] - ref[1][name][:, [4, 0]]).max() <= TOL


def test_batched_trace_refuses_an_empty_text_by_position():
    model, vocab = tiny_model("gru")
    with pytest.raises(RnnscopeError, match="text 1 is empty"):
        run_traces(model, vocab, ["abc", ""])
    with pytest.raises(RnnscopeError, match="no texts"):
        run_traces(model, vocab, [])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("warmup", ["", TEXT[:11]])
@pytest.mark.parametrize("hidden", [16, 32])  # every unit at 32 takes the [x ; h] route, a few units the other
def test_a_lazy_trace_recomputes_every_state_as_the_explicit_cell_loop_computes_it(cell, warmup, hidden):
    model, vocab = tiny_model(cell, layers=3, hidden=hidden, seed=7)
    texts = [TEXT * 3, TEXT[:23], TEXT]  # batched, of three lengths: chunks of 16 end mid-text
    lazy = run_traces(model, vocab, texts, warmup=warmup, chunk=16, lazy=True)
    for text, tr in zip(texts, lazy):
        ref = reference_loop(model, vocab, text, warmup=warmup)
        for k, per in tr.states.items():
            assert type(per).__name__ == "RecomputedStates"
            every = per.arrays()
            assert list(every) == list(per) == list(CELL_STATES[cell]) and set(every) == set(ref[k])
            for name, expected in ref[k].items():
                assert every[name].dtype == np.float32 and every[name].shape == expected.shape
                assert np.abs(every[name] - expected).max() <= TOL, (k, name)
                assert np.abs(per[name] - expected).max() <= TOL, (k, name)
                for u in (0, 5, 15):
                    assert np.abs(per.column(name, u) - expected[:, u]).max() <= TOL, (k, name, u)
            some = per.arrays(["h", CELL_STATES[cell][1]], units=[9, 2])
            for name, block in some.items():
                assert np.abs(block - ref[k][name][:, [9, 2]]).max() <= TOL


def test_a_lazy_trace_keeps_only_h_and_reads_as_float16_when_half():
    model, vocab = tiny_model("lstm", layers=2, seed=3)
    eager = run_trace(model, vocab, TEXT, half=True)
    lazy = run_trace(model, vocab, TEXT, half=True, lazy=True)
    H, T = model.config.hidden, len(TEXT)
    # h as float32 for every layer, the ids, one start state per chunk; no gates held
    assert lazy.nbytes < eager.nbytes / 3
    assert sum(per.h.nbytes for per in lazy.states.values()) == 2 * T * H * 4
    for k in eager.states:
        for name in eager.states[k]:
            got = lazy.states[k][name]
            assert got.dtype == np.float16
            assert np.abs(got.astype(np.float32) - eager.states[k][name].astype(np.float32)).max() <= 1e-3
        assert lazy.states[k].column("c", 4).dtype == np.float16
    assert np.array_equal(lazy.surprisal_bits, eager.surprisal_bits, equal_nan=True)
    assert np.array_equal(lazy.topk_ids, eager.topk_ids)


def test_a_lazy_trace_of_a_vanilla_rnn_is_an_eager_one_and_subsets_are_refused():
    model, vocab = tiny_model("rnn")
    lazy, eager = run_trace(model, vocab, TEXT, lazy=True), run_trace(model, vocab, TEXT)
    assert type(lazy.states[0]).__name__ == "LayerStates" and lazy.nbytes == eager.nbytes
    lstm, vocab = tiny_model("lstm")
    for subset in ({"layers": [0]}, {"states": ["c"]}, {"units": [1]}):
        with pytest.raises(ValueError, match="every layer, state and unit"):
            run_trace(lstm, vocab, TEXT, lazy=True, **subset)
    lazy = run_trace(lstm, vocab, TEXT, lazy=True)
    with pytest.raises(KeyError):
        lazy.states[0]["r"]
    assert "c" in lazy.states[0] and "r" not in lazy.states[0]
    assert dict(lazy.states[0].items()).keys() == set(CELL_STATES["lstm"])
    assert lazy.states[0].arrays(["c"], units=[])["c"].shape == (len(TEXT), 0)
