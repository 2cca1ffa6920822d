"""Rankings by unit (models.ranking.ranked): roughness, the tie rule, grouping every state of a unit; and
span scores (models.probes) that leave the span's edges out and take one threshold per column."""

from __future__ import annotations

import numpy as np
import pytest

from models import probes, ranking
from models.errors import RnnscopeError


def steps(T: int, rng, switches: int) -> np.ndarray:
    """A clean trace: a few level changes, nothing between them."""
    x = np.zeros(T)
    for t in sorted(rng.choice(np.arange(1, T), switches, replace=False)):
        x[t:] = rng.normal() * 3
    return x


def test_roughness_is_low_for_a_few_clear_steps_and_high_for_flicker():
    rng = np.random.default_rng(0)
    T = 400
    clean = steps(T, rng, 4)
    speckled = clean + rng.normal(size=T) * 0.5 * clean.std()
    x = np.stack([clean, speckled, np.full(T, 2.0), clean * 100], axis=1)
    r = ranking.roughness(x)
    assert r[0] < 0.1 < r[1]
    assert r[2] == np.inf  # no spread: nothing to read
    assert r[3] == pytest.approx(r[0])  # scale-free: an unbounded c and a tanh h compare fairly
    # the definition: mean |step| over the 5th-95th percentile spread
    want = np.abs(np.diff(speckled)).mean() / (np.percentile(speckled, 95) - np.percentile(speckled, 5))
    assert r[1] == pytest.approx(want)
    assert ranking.roughness(np.zeros((1, 3))).tolist() == [np.inf] * 3


def planted_blocks(T: int = 300, seed: int = 1):
    """Two layers of h, c and kept (8 units each). Unit 5 of layer 1 is the probe in all three states:
    c exactly (clean), kept a hair worse and still clean, h exactly but speckled."""
    rng = np.random.default_rng(seed)
    y = np.zeros(T, dtype=bool)
    for a in range(20, T, 60):
        y[a:a + 25] = True
    blocks = {(k, s): rng.normal(size=(T, 8)).astype(np.float32) for k in range(2) for s in ("h", "c", "kept")}
    blocks[(1, "c")][:, 5] = np.where(y, 4.0, -3.0)
    kept = np.where(y, 4.0, -3.0)
    kept[np.flatnonzero(y)[0]] = -3.0  # one step late at the first opening: AUC just under 1
    blocks[(1, "kept")][:, 5] = kept
    speckle = rng.uniform(0.05, 1.0, size=T)
    blocks[(1, "h")][:, 5] = np.where(y, speckle, -speckle)  # perfectly separated, but flickers
    return blocks, y


def test_an_exact_tie_puts_the_smoother_state_first_and_a_unit_is_one_group():
    blocks, y = planted_blocks()
    got = ranking.ranked(blocks, *probes.unit_scores(blocks, y, probes.BINARY), top=5)
    # flat: h and c both score 1.0; c is smoother, so it comes first although h's block comes first
    assert [(u.layer, u.state, u.unit) for u in got.units[:3]] == [(1, "c", 5), (1, "h", 5), (1, "kept", 5)]
    assert got.units[0].score == got.units[1].score == 1.0 and got.units[0].roughness < got.units[1].roughness
    assert [u.score for u in got.units] == sorted((u.score for u in got.units), reverse=True)
    # grouped: unit 5 of layer 1 is one entry with its three states, c shown, the others behind it
    first = got.groups[0]
    assert (first.layer, first.unit) == (1, 5) and [u.state for u in first.states] == ["c", "kept", "h"]
    assert (first.lead.state, first.lead.score) == ("c", 1.0)
    assert len(got.groups) == 5 and len({(g.layer, g.unit) for g in got.groups}) == 5
    for g in got.groups:
        assert sorted(u.state for u in g.states) == ["c", "h", "kept"] and {u.unit for u in g.states} == {g.unit}


def test_a_near_tie_shows_the_cleaner_state_but_a_clear_gap_does_not():
    rng = np.random.default_rng(2)
    T = 500
    y = rng.random(T) < 0.4
    clean = np.where(y, 1.0, -1.0)
    blocks = {(0, "h"): np.stack([clean + rng.normal(size=T) * 0.9], axis=1), (0, "c"): np.stack([steps(T, rng, 3)], axis=1)}
    scores = np.array([0.90, 0.897])  # within TIE: the smoother c is shown
    got = ranking.ranked(blocks, scores, np.array([1, 1]), "auc", top=1)
    assert [u.state for u in got.groups[0].states] == ["c", "h"]
    assert got.groups[0].lead.state == "h"  # the unit still stands where its best score puts it
    assert [u.state for u in got.units] == ["h"]  # the flat list stays best score first
    apart = ranking.ranked(blocks, np.array([0.90, 0.89]), np.array([1, 1]), "auc", top=1)
    assert [u.state for u in apart.groups[0].states] == ["h", "c"]  # 0.01 apart: the better score is shown


def test_groups_fill_top_units_even_when_states_crowd_the_top():
    blocks, y = planted_blocks()
    scores, sign, metric = probes.unit_scores(blocks, y, probes.BINARY)
    got = ranking.ranked(blocks, scores, sign, metric, top=4)
    assert len(got.units) == 4 and len(got.groups) == 4
    # the groups' leads are in flat order: each unit stands where its first column stands
    everything = ranking.ranked(blocks, scores, sign, metric, top=48).units
    firsts = []
    for u in everything:
        if (u.layer, u.unit) not in [(a, b) for a, b, _ in firsts]:
            firsts.append((u.layer, u.unit, u.state))
    assert [(g.layer, g.unit, g.lead.state) for g in got.groups] == firsts[:4]


def test_merging_per_layer_rankings_gives_the_one_pass_ranking():
    blocks, y = planted_blocks(seed=4)
    whole = ranking.ranked(blocks, *probes.unit_scores(blocks, y, probes.BINARY), top=7)
    parts = []
    for k in range(2):
        mine = {key: b for key, b in blocks.items() if key[0] == k}
        parts.append(ranking.ranked(mine, *probes.unit_scores(mine, y, probes.BINARY), top=7))
    merged = ranking.merge_ranked(parts, 7)
    assert merged.units == whole.units and merged.groups == whole.groups
    assert probes.rank_units(blocks, y, probes.BINARY, top=7) == whole.units


def test_span_edges_count_on_neither_side():
    assert probes.span_edges(10, 16) == [10, 15] and probes.span_edges(3, 7) == [3, 6]
    assert probes.span_edges(3, 6) == [] and probes.span_edges(0, 1) == []  # short spans keep every character
    # a quote cell: on from the opening quote, off after reading the closing one
    text = 'He said "Why?" and left.'
    a, b = text.index('"'), text.index('?"') + 2
    cell = np.array([[1.0 if a <= t < b - 1 else -1.0] for t in range(len(text))])
    lag = np.array([[1.0 if a < t < b else -1.0] for t in range(len(text))])  # one character behind (kept)
    inside = np.zeros(len(text), dtype=bool)
    inside[a:b] = True
    plain = probes.span_scores(np.hstack([cell, lag]), inside, 0.3)[0]
    assert plain.tolist() == pytest.approx([5 / 6, 5 / 6])  # each marked wrong at one edge, a different one
    fair = probes.span_scores(np.hstack([cell, lag]), inside, 0.3, probes.span_edges(a, b))[0]
    assert fair.tolist() == [1.0, 1.0]
    with pytest.raises(RnnscopeError, match="empty"):
        probes.span_scores(cell, np.eye(1, len(text), 3, dtype=bool)[0], 0.3, [3])


def test_span_scores_take_one_threshold_per_column_on_float16_and_float32():
    rng = np.random.default_rng(9)
    T = 600
    inside = np.zeros(T, dtype=bool)
    inside[200:260] = True
    x = (rng.normal(size=(T, 12)) * np.array([1, 5, 10] * 4)).astype(np.float16)
    limits = np.array([0.3, 1.5, 3.0] * 4)
    edges = [200, 259]
    for block in (x, x.astype(np.float32)):
        got_on, got_off = probes.span_scores(block, inside, limits, edges)
        keep = np.ones(T, dtype=bool)
        keep[edges] = False
        on = block.astype(np.float64) > limits
        want = on[inside & keep].mean(axis=0) - on[~inside & keep].mean(axis=0)
        assert np.abs(got_on - want).max() < 1e-12 and np.array_equal(got_off, -got_on)
    # one number is the same threshold for every column
    assert np.array_equal(probes.span_scores(x, inside, 0.3)[0], probes.span_scores(x, inside, np.full(12, 0.3))[0])
