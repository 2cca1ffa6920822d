import difflib
import math
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import deadline
from models.dynamics import (MAX_ALIGN_EDITS, MAX_TOPK, align, counterfactual, gate_saturation, gradient_flow, intervene,
                             scalar_rnn)
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


def reference_clamped_logits(model, vocab, text, layer, state, unit, value, start):
    """The clamped run the slow way: every layer's own nn module stepped one character at a time
    from `start` (the fused forward before it), the unit set after each step. (T, V) logits."""
    ids = vocab.encode_tensor(text)
    with torch.no_grad():
        logits_free, _, _ = model(ids[None])
        pieces, st = [logits_free[0, :start]], None
        if start > 0:
            _, _, st = model(ids[None, :start])
        for t in range(start, len(ids)):
            x = model.embed(ids[t : t + 1])[None]
            new = []
            for k, mod in enumerate(model.layers):
                s_in = None if st is None else st[k]
                out, s = mod(x, s_in)
                if k == layer:
                    if state == "h":
                        h = (s[0] if isinstance(s, tuple) else s).clone()
                        h[..., unit] = value
                        s = (h, s[1]) if isinstance(s, tuple) else h
                    else:
                        h_prev = torch.zeros(1, mod.hidden_size) if s_in is None else s_in[0][0]
                        pre = (x[0] @ mod.weight_ih_l0.T + mod.bias_ih_l0 + h_prev @ mod.weight_hh_l0.T
                               + mod.bias_hh_l0)
                        o = pre[:, 3 * mod.hidden_size :].sigmoid()[None]
                        c = s[1].clone()
                        c[..., unit] = value
                        h = o * torch.tanh(c)
                        s = (h, c)
                    out = h.transpose(0, 1)
                new.append(s)
                x = out
            st = new
            pieces.append(model.head(x[0]))
    return torch.cat(pieces)


@pytest.mark.parametrize("cell,state", [("rnn", "h"), ("gru", "h"), ("lstm", "h"), ("lstm", "c")])
@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("start", [0, 23])
def test_intervention_matches_a_stepped_reference_run(cell, state, layer, start):
    model, vocab = tiny_model(cell, layers=3, hidden=12, seed=layer + start)
    value = 2.5 if state == "c" else -0.7
    res = intervene(model, vocab, TEXT, layer=layer, state=state, unit=4, value=value, start=start, watch='"', topk=6)
    ref = F.log_softmax(reference_clamped_logits(model, vocab, TEXT, layer, state, 4, value, start), -1)
    ids = vocab.encode_tensor(TEXT)
    bits = (-ref[torch.arange(len(ids) - 1), ids[1:]] / math.log(2)).numpy()
    np.testing.assert_allclose(res.surprisal_after[:-1], bits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(res.prob_after, ref[:, vocab.chars.index('"')].exp().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(res.topk_probs_after, np.take_along_axis(ref.exp().numpy(), res.topk_ids_after, 1),
                               atol=1e-5, rtol=1e-5)
    assert np.all(res.value_after[start:] == np.float32(value))
    np.testing.assert_array_equal(res.value_after[:start], res.value_before[:start])
    tr = run_trace(model, vocab, TEXT, layers=[layer], states=[state], units=[4], topk=0)
    np.testing.assert_allclose(res.value_before, tr.states[layer][state][:, 0], atol=1e-5)
    if layer > 0:  # layers below the clamp see nothing of it: the free run's predictions only move through it
        assert np.abs(res.surprisal_after[start:-1] - res.surprisal_before[start:-1]).max() > 1e-6


def test_intervention_over_several_chunks_matches_one_chunk(monkeypatch):
    import models.dynamics as dyn

    model, vocab = tiny_model("lstm", layers=2)
    text = TEXT * 3
    whole = intervene(model, vocab, text, layer=1, state="c", unit=2, value=1.5, start=40, topk=3)
    monkeypatch.setattr(dyn, "FUSED_CHUNK", 7)  # chunk edges everywhere, start inside one
    chunked = intervene(model, vocab, text, layer=1, state="c", unit=2, value=1.5, start=40, topk=3)
    for name in ("surprisal_before", "surprisal_after", "value_before", "value_after", "topk_probs_after"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), atol=1e-5, err_msg=name)


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


def difflib_counterparts(original: str, edited: str) -> np.ndarray:
    """What counterfactual() used to align with: difflib's 'equal' opcodes (cubic in the worst case)."""
    where = np.full(len(edited), -1)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=original, b=edited, autojunk=False).get_opcodes():
        if tag == "equal":
            where[j1:j2] = np.arange(i1, i2)
    return where


PROSE = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
         "in want of a wife. However little known the feelings or views of such a man may be on his first entering "
         "a neighbourhood, this truth is so well fixed in the minds of the surrounding families.")


def random_edits(rng: random.Random, text: list[str], fresh, n: int) -> list[str]:
    out = list(text)
    for _ in range(n):
        op = rng.choice("idr")
        if op == "i":
            out.insert(rng.randrange(len(out) + 1), next(fresh))
        elif op == "d" and len(out) > 1:
            del out[rng.randrange(len(out))]
        elif op == "r":
            out[rng.randrange(len(out))] = next(fresh)
    return out


def test_align_equals_difflib_where_the_edits_are_unambiguous():
    rng = random.Random(0)
    for trial in range(200):
        # Every character distinct and inserted ones new: exactly one alignment keeps the most.
        pool = [chr(0x4E00 + i) for i in range(600)]
        rng.shuffle(pool)
        original = pool[: rng.randint(1, 300)]
        edited = random_edits(rng, original, iter(pool[300:]), rng.randint(1, 8))
        a, b = "".join(original), "".join(edited)
        assert np.array_equal(align(a, b), difflib_counterparts(a, b)), (trial, a, b)
    for trial in range(200):  # ordinary text, one edit with a character it does not hold
        text = list(TEXT + PROSE)  # no long repeats: difflib's longest block is then the right one
        p = rng.randrange(1, len(text) - 1)
        op = rng.choice("idr")
        if op == "d" and text[p] in (text[p - 1], text[p + 1]):
            continue  # which of two equal neighbours went is a matter of taste
        edited = text[:p] + (["~"] if op == "i" else []) + ([] if op == "d" else ["~"] if op == "r" else [text[p]]) \
            + text[p + 1 :]
        a, b = "".join(text), "".join(edited)
        assert np.array_equal(align(a, b), difflib_counterparts(a, b)), (op, p)


def test_align_keeps_a_longest_common_subsequence_on_any_text():
    rng = random.Random(1)
    for _ in range(300):
        a = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 25)))
        b = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 25)))
        where = align(a, b)
        pairs = [(int(i), j) for j, i in enumerate(where) if i >= 0]
        assert all(a[i] == b[j] for i, j in pairs)
        assert all(p[0] < q[0] for p, q in zip(pairs, pairs[1:]))  # in order, each used once
        best = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                best[i + 1][j + 1] = best[i][j] + 1 if a[i] == b[j] else max(best[i][j + 1], best[i + 1][j])
        assert len(pairs) == best[-1][-1]


def test_align_past_max_edits_counts_the_whole_middle_as_replaced():
    original = "same start " + "abcdefghij" + " same end"
    edited = "same start " + "ABCDEFGHIJ" + " same end"  # 10 deleted + 10 inserted = 20 edits
    exact = align(original, edited, max_edits=20)
    capped = align(original, edited, max_edits=19)
    assert np.array_equal(exact, capped)  # nothing in the middle matches either way
    two = "same start " + "abcdeXfghiYj" + " same end"  # two insertions: a middle "fghi" -> "XfghiY"
    assert (align(original, two, max_edits=2) >= 0).sum() == len(two) - 2
    capped = align(original, two, max_edits=1)
    assert (capped >= 0).sum() == len(two) - 6  # the middle gave up: "XfghiY" has no counterpart
    assert np.array_equal(capped[:16], np.arange(16)) and np.array_equal(capped[-10:], np.arange(20, 30))
    one = "same start " + "abcdeXfghij" + " same end"  # one edit never reaches the middle search
    assert (align(original, one, max_edits=0) >= 0).sum() == len(one) - 1


def test_align_is_bounded_on_adversarial_texts():
    # difflib took ~25 minutes on this; the cap bounds align's work whatever the texts
    # (timed in bench/dynamics_speed.py, not here).
    for original, edited in (("a" * 5000, "ab" * 2500), ("ab" * 2500, "ba" * 2500),
                             ("a" * 2500 + "b" * 2500, "b" * 2500 + "a" * 2500)):
        where = align(original, edited)
        assert where.shape == (len(edited),)
        pairs = where[where >= 0]
        assert np.all(np.diff(pairs) > 0)
    assert (align("a" * 5000, "ab" * 2500) >= 0).sum() == 1  # 5,000 edits > MAX_ALIGN_EDITS: the middle gave up
    assert (align("a" * 1100, "ab" * 550) >= 0).sum() == 550  # within the cap: the longest alignment
    assert MAX_ALIGN_EDITS >= 1000


def test_align_stops_at_its_deadline():
    with deadline.until(time.monotonic() - 1), pytest.raises(deadline.Overdue):
        align("a" * 3000, "ab" * 1500)


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
