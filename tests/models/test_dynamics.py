import math

import numpy as np
import pytest
import torch

from models.dynamics import MAX_TOPK, counterfactual, gate_saturation, gradient_flow, intervene, scalar_rnn
from models.errors import RnnscopeError
from models.trace import run_trace

from .helpers import TEXT, tiny_model


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_jacobian_norms_match_autograd_jacobian(cell):
    model, vocab = tiny_model(cell, layers=2)
    text = TEXT[:30]
    T, layer = 25, 1
    flow = gradient_flow(model, vocab, text, position=T, layer=layer, lookback=10)
    assert flow.start == 15 and len(flow.jacobian_norm) == 11
    ids = vocab.encode_tensor(text)
    # Reference: perturb h_t of the chosen layer through an explicit per-step loop.
    for t in (15, 20, 24):
        def h_T_from(h_t):
            st = None
            with torch.no_grad():
                _, _, st = model(ids[None, :t])
            x = model.embed(ids[t : t + 1])[None]
            new = []
            for k, mod in enumerate(model.layers):
                out, s = mod(x, None if st is None else st[k])
                if k == layer:
                    out = h_t.view(1, 1, -1)
                    s = (out.transpose(0, 1), s[1]) if isinstance(s, tuple) else out.transpose(0, 1)
                new.append(s)
                x = out
            st = new
            for u in range(t + 1, T + 1):
                x = model.embed(ids[u : u + 1])[None]
                new = []
                for k, mod in enumerate(model.layers):
                    x, s = mod(x, st[k])
                    new.append(s)
                    if k == layer:
                        top = x
                st = new
            return top[0, 0]

        with torch.no_grad():
            x = model.embed(ids[None, : t + 1])
            for k, mod in enumerate(model.layers):
                x, _ = mod(x)
                if k == layer:
                    h_t0 = x[0, -1].clone()
                    break
        J = torch.autograd.functional.jacobian(h_T_from, h_t0)
        assert math.isclose(flow.jacobian_norm[t - flow.start], J.norm().item(), rel_tol=1e-4), t
    assert flow.jacobian_norm[-1] == pytest.approx(math.sqrt(16), rel=1e-6)
    assert flow.saliency.shape == (11,) and np.all(flow.saliency >= 0)


def test_gradient_flow_rejects_bad_positions():
    model, vocab = tiny_model()
    with pytest.raises(RnnscopeError, match="position 99 is out of range"):
        gradient_flow(model, vocab, "abc", position=99)
    with pytest.raises(RnnscopeError, match="lookback"):
        gradient_flow(model, vocab, TEXT, lookback=0)


def test_scalar_rnn_reproduces_the_seed_example():
    run = scalar_rnn(3, 2, 1, xs=[1.0, 0.0, 0.0])
    h1 = math.tanh(2 + 1)
    h2 = math.tanh(3 * h1 + 1)
    h3 = math.tanh(3 * h2 + 1)
    assert run.h == pytest.approx([h1, h2, h3])
    assert run.dhT_dh1 == pytest.approx((1 - h3**2) * 3 * (1 - h2**2) * 3)
    small = scalar_rnn(0.5, 2, 1, xs=[1.0] * 30)
    large = scalar_rnn(3.0, 2, 1, xs=[1.0] * 30)
    assert abs(small.dhT_dh1) < 1e-6 and abs(large.dhT_dh1) < abs(small.dhT_dh1) * 10  # tanh saturates
    with pytest.raises(RnnscopeError):
        scalar_rnn(float("nan"))


def test_gate_saturation_fractions():
    model, vocab = tiny_model("lstm")
    sat = gate_saturation(model, vocab, TEXT)
    f = sat[0]["f"]
    tr = run_trace(model, vocab, TEXT, states=["f"])
    assert np.allclose(f["left"], (tr.states[0]["f"] < 0.1).mean(0))
    assert np.all((f["left"] + f["right"]) <= 1)
    rnn, v = tiny_model("rnn")
    with pytest.raises(RnnscopeError, match="no gates"):
        gate_saturation(rnn, v, TEXT)


@pytest.mark.parametrize("state", ["h", "c"])
def test_intervention_clamps_from_start_and_leaves_the_past_alone(state):
    model, vocab = tiny_model("lstm")
    res = intervene(model, vocab, TEXT, layer=1, state=state, unit=3, value=5.0 if state == "c" else 0.9, start=10, watch='"')
    assert np.allclose(res.surprisal_before[:10], res.surprisal_after[:10], atol=1e-5, equal_nan=True)
    assert np.allclose(res.value_after[10:], 5.0 if state == "c" else 0.9)
    assert np.abs(res.prob_after[10:] - res.prob_before[10:]).max() > 1e-4
    # Clamping to the value it already has changes nothing: the stepped path is exact.
    t = len(TEXT) - 2
    own = float(res.value_before[t])
    same = intervene(model, vocab, TEXT, layer=1, state=state, unit=3, value=own, start=t)
    assert same.surprisal_after[t] == pytest.approx(same.surprisal_before[t], abs=1e-4)
    assert same.surprisal_after[t] != pytest.approx(res.surprisal_after[t], abs=1e-6)


def test_intervention_bad_requests():
    model, vocab = tiny_model("gru")
    with pytest.raises(RnnscopeError, match="only a state can be clamped"):
        intervene(model, vocab, TEXT, 0, "c", 0)
    with pytest.raises(RnnscopeError, match="unit 99"):
        intervene(model, vocab, TEXT, 0, "h", 99)
    with pytest.raises(RnnscopeError, match="watch"):
        intervene(model, vocab, TEXT, 0, "h", 0, watch="€")


def hand_clamped_probs(model, vocab, text, layer, state, unit, value, start):
    """p(next char) at every position, from the cell equations written out by hand, with one unit of
    h (or c) set to `value` after every step from `start` on. (T, V)."""
    cell, H = model.config.cell, model.config.hidden
    L = len(model.layers)
    h = [torch.zeros(H) for _ in range(L)]
    c = [torch.zeros(H) for _ in range(L)]
    out = []
    with torch.no_grad():
        for t, i in enumerate(vocab.encode(text)):
            x = model.embed.weight[i]
            for k, mod in enumerate(model.layers):
                w_ih, w_hh, b_ih, b_hh = mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0
                clamp = k == layer and t >= start
                if cell == "lstm":
                    i_g, f_g, g_g, o_g = (w_ih @ x + b_ih + w_hh @ h[k] + b_hh).chunk(4)
                    c_new = torch.sigmoid(f_g) * c[k] + torch.sigmoid(i_g) * torch.tanh(g_g)
                    if clamp and state == "c":
                        c_new[unit] = value
                    h_new = torch.sigmoid(o_g) * torch.tanh(c_new)
                    c[k] = c_new
                elif cell == "gru":
                    gi, gh = w_ih @ x + b_ih, w_hh @ h[k] + b_hh
                    r = torch.sigmoid(gi[:H] + gh[:H])
                    z = torch.sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
                    n = torch.tanh(gi[2 * H :] + r * gh[2 * H :])
                    h_new = (1 - z) * n + z * h[k]
                else:
                    h_new = torch.tanh(w_ih @ x + b_ih + w_hh @ h[k] + b_hh)
                if clamp and state == "h":
                    h_new[unit] = value
                h[k] = h_new
                x = h_new
            out.append(torch.softmax(model.head(x), -1))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("cell,state,value", [("rnn", "h", 0.0), ("gru", "h", 0.0), ("lstm", "h", 0.0),
                                              ("lstm", "c", 0.0), ("lstm", "c", 3.0)])
def test_intervention_topk_after_equals_a_recomputation_with_the_unit_set_by_hand(cell, state, value):
    model, vocab = tiny_model(cell, layers=2)
    start, unit, k = 12, 5, 5
    res = intervene(model, vocab, TEXT, layer=0, state=state, unit=unit, value=value, start=start, topk=k)
    T = len(TEXT)
    assert res.topk == k
    for a in (res.topk_ids_before, res.topk_probs_before, res.topk_ids_after, res.topk_probs_after, res.change_ids,
              res.change_before, res.change_after):
        assert a.shape == (T, k)
    after = hand_clamped_probs(model, vocab, TEXT, 0, state, unit, value, start)
    before = hand_clamped_probs(model, vocab, TEXT, 0, state, unit, value, start=T)  # never clamped
    ref_ids = np.argsort(-after, axis=1)[:, :k]
    assert np.array_equal(res.topk_ids_after, ref_ids)
    np.testing.assert_allclose(res.topk_probs_after, np.take_along_axis(after, ref_ids, 1), rtol=1e-4, atol=1e-6)
    assert np.all(np.diff(res.topk_probs_after, axis=1) <= 0)  # likeliest first
    # The largest changes are the largest |after - before| of the hand-computed distributions.
    delta = after - before
    big = np.sort(np.abs(delta), axis=1)[:, ::-1][:, :k]
    moved = np.abs(res.change_after - res.change_before)
    np.testing.assert_allclose(moved[start:], big[start:], atol=1e-5)
    np.testing.assert_allclose(res.change_after - res.change_before,
                               np.take_along_axis(delta, res.change_ids, 1), atol=1e-5)
    assert moved[start:].max() > 1e-4  # the clamp really moved something
    # Before the clamp both runs are one run: the same guesses, no change.
    assert np.array_equal(res.topk_ids_after[:start], res.topk_ids_before[:start])
    assert np.array_equal(res.topk_probs_after[:start], res.topk_probs_before[:start])
    assert np.all(res.change_after[:start] == res.change_before[:start])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_intervention_topk_before_is_the_plain_traces_topk(cell):
    model, vocab = tiny_model(cell)
    res = intervene(model, vocab, TEXT, layer=1, state="h", unit=2, start=3, watch='"', topk=7)
    tr = run_trace(model, vocab, TEXT, layers=[1], states=["h"], units=[2], topk=7)
    assert np.array_equal(res.topk_ids_before, tr.topk_ids)
    np.testing.assert_allclose(res.topk_probs_before, tr.topk_probs, rtol=1e-5, atol=1e-7)
    # The watched character's probability agrees with the full distribution behind the top-k.
    q = vocab.chars.index('"')
    hit = res.topk_ids_after == q
    rows = hit.any(axis=1)
    np.testing.assert_allclose(res.topk_probs_after[hit], res.prob_after[rows], rtol=1e-5)


def test_intervention_topk_bounds():
    model, vocab = tiny_model("gru", layers=1)
    none = intervene(model, vocab, TEXT, 0, "h", 0, topk=0)
    assert none.topk == 0 and none.topk_ids_before is None and none.change_ids is None
    assert none.nbytes > 0
    assert intervene(model, vocab, TEXT, 0, "h", 0, topk=MAX_TOPK).topk == MAX_TOPK < len(vocab)
    tiny, small = tiny_model("gru", layers=1, text="abcab")  # 4 characters with the unknown one
    every = intervene(tiny, small, "abcab", 0, "h", 0, start=1, topk=MAX_TOPK)
    assert every.topk == len(small) == 4  # at most the vocabulary
    np.testing.assert_allclose(every.topk_probs_after.sum(axis=1), 1.0, rtol=1e-5)
    for bad in (-1, MAX_TOPK + 1, 2.5, True):
        with pytest.raises(RnnscopeError, match=f"topk must be a whole number from 0 to {MAX_TOPK}"):
            intervene(model, vocab, TEXT, 0, "h", 0, topk=bad)


def test_counterfactual_aligns_edited_text():
    model, vocab = tiny_model("lstm")
    original = 'He said "yes" and left.'
    edited = 'He said "yes and left.'
    cf = counterfactual(model, vocab, original, edited, 1, "c", 2)
    assert len(cf.delta) == len(edited)
    assert cf.delta[0] == pytest.approx(0.0, abs=1e-6)  # identical prefix, identical state
    later = [d for d in cf.delta[13:] if d is not None]
    assert later and max(abs(d) for d in later) > 0


def test_probe_estimate_of_jacobian_norm_tracks_the_exact_one():
    model, vocab = tiny_model("lstm", layers=2)
    exact = gradient_flow(model, vocab, TEXT, position=40, lookback=30, probes=None)
    est = gradient_flow(model, vocab, TEXT, position=40, lookback=30, probes=256)
    assert exact.probes is None and est.probes == 256
    assert est.jacobian_norm[-1] == pytest.approx(4.0, rel=1e-6)  # sqrt(16): J = I at t = T
    ratio = est.jacobian_norm / exact.jacobian_norm
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    np.testing.assert_allclose(est.saliency, exact.saliency, rtol=1e-5)
    again = gradient_flow(model, vocab, TEXT, position=40, lookback=30, probes=256)
    assert np.array_equal(again.jacobian_norm, est.jacobian_norm)  # fixed seed: reproducible
    with pytest.raises(RnnscopeError, match="probes"):
        gradient_flow(model, vocab, TEXT, probes=0)
