import numpy as np
import pytest

from models import probes
from models.errors import RnnscopeError


def reference_auc(x, y):
    pos, neg = x[y], x[~y]
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return (gt + 0.5 * eq) / (len(pos) * len(neg))


def test_auc_all_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    T = 300
    y = rng.random(T) < 0.3
    x = rng.normal(size=(T, 6)).astype(np.float32)
    x[:, 1] += 2 * y  # a strong unit
    x[:, 2] = np.round(x[:, 2])  # many ties
    x[:, 3] = 1.0  # constant: AUC 0.5
    x[:, 4] = -x[:, 1]  # reversed
    x[:, 5] = np.where(y, 1.0, np.float32(0.9))  # perfect with saturation-style ties
    got = probes.auc_all(x, y)
    want = np.array([reference_auc(x[:, j], y) for j in range(6)])
    assert np.abs(got - want).max() < 1e-6
    assert got[5] == 1.0 and got[3] == 0.5


def test_pearson_all_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = x[:, 0] * 3 + rng.normal(size=200)
    x[:, 4] = 7
    got = probes.pearson_all(x, y)
    for j in range(4):
        assert abs(got[j] - np.corrcoef(x[:, j], y)[0, 1]) < 1e-5
    assert got[4] == 0


def test_pearson_all_on_float16_blocks_matches_float64_numpy():
    """The compiled float16 route: strided, saturated, constant and near-constant columns."""
    rng = np.random.default_rng(2)
    T = 2500
    y = np.cumsum(rng.random(T) < 0.1).astype(np.float32) % 9  # a staircase, like line position
    wide = np.tanh(rng.normal(size=(T, 90)) + 0.2 * y[:, None] * rng.normal(size=90)).astype(np.float16)
    wide[:, 3] = np.float16(0.99)  # constant: r = 0
    wide[:, 6] = np.where(rng.random(T) < 0.5, np.float16(0.999), np.float16(1.0))  # 1-ulp wiggle near 1
    wide[:, 9] = (y / 9).astype(np.float16)  # nearly y itself
    block = wide[:, ::3]  # 30 columns, not contiguous
    got = probes.pearson_all(block, y)
    want = [np.corrcoef(block[:, j].astype(np.float64), y)[0, 1] if j != 1 else 0.0 for j in range(block.shape[1])]
    assert np.abs(got - want).max() < 1e-9
    assert got[1] == 0 and got[3] > 0.999
    assert abs(got[2]) > 0.01  # the 1-ulp wiggle is variance, not a constant
    assert np.abs(np.delete(got - probes.pearson_all(block.astype(np.float32), y), 2)).max() < 1e-4  # numpy route


def test_rank_units_finds_the_planted_unit_with_its_sign():
    text = 'a "quoted bit" and "another one" here\n\nno "open\n\nreset'
    y = probes.labels("quotes", text)
    rng = np.random.default_rng(2)
    blocks = {(0, "h"): rng.normal(size=(len(text), 8)).astype(np.float32),
              (1, "c"): rng.normal(size=(len(text), 8)).astype(np.float32)}
    blocks[(1, "c")][:, 5] = np.where(y, -3.0, 1.0) + 0.01 * rng.normal(size=len(text))
    best = probes.rank_units(blocks, y, probes.BINARY, top=3)
    assert (best[0].layer, best[0].state, best[0].unit, best[0].sign) == (1, "c", 5, -1)
    assert best[0].score == 1.0 and best[0].metric == "auc"


def test_quote_labels_toggle_and_reset_on_blank_line():
    text = 'x "ab" y "c\n\nd'
    y = probes.labels("quotes", text)
    assert "".join("1" if v else "0" for v in y) == "00111000011100"


def test_text_probes():
    text = "def f(a, (b)):\n    # hi\n    return 'x'  # c\n"
    depth = probes.labels("bracket_depth", text)
    assert depth[text.index("(")] == 1 and depth[text.index("(b") + 1] == 2 and depth[text.index(":")] == 0
    assert probes.labels("line_position", "ab\ncd").tolist() == [1, 2, 0, 1, 2]
    ind = probes.labels("indent", text)
    assert ind[text.index("return")] == 4 and ind[0] == 0
    spans = probes.python_spans(text)
    assert spans.comment[text.index("# hi")] and not spans.comment[text.index("return")]
    assert spans.string[text.index("'x'")] and not spans.string[text.index("def")]
    assert probes.labels("word_start", "to be").tolist() == [1, 0, 0, 1, 0]
    assert probes.labels("vowel", "bat").tolist() == [0, 1, 0]


def test_short_and_long_string_probes_split_the_string_literals():
    text = 'def f():\n    """Doc\n    text."""\n    return r\'\'\'raw\'\'\' + "a" + b\'x\'  # "no"\n'
    short, long_, every = (probes.labels(p, text) for p in ("short_string", "long_string", "string"))
    assert not (short & long_).any() and ((short | long_) == every).all()
    assert long_[text.index("Doc")] and long_[text.index("text.")] and long_[text.index("raw")]
    assert short[text.index('"a"') + 1] and short[text.index("b'x'") + 2]
    assert not short[text.index('"no"') + 1] and not long_[text.index("return")]
    assert "".join("1" if v else "0" for v in short[text.index('"a"'):][:4]) == "1110"


def test_broken_code_falls_back_to_the_scanner():
    text = 'x = "unterminated\ny = 1  # note\nz = """doc\n'
    spans = probes.python_spans(text)
    assert spans.string[text.index('"unterminated') + 3]
    assert spans.comment[text.index("# note") + 2]
    assert not spans.string[text.index("y = 1")]
    assert spans.long_string[text.index('"""doc') + 4] and not spans.long_string[text.index('"unterminated') + 3]


def test_regex_probe_errors_and_timeout():
    assert probes.labels("regex", "cat hat", "h.t").tolist() == [0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(RnnscopeError, match="invalid regular expression"):
        probes.labels("regex", "abc", "(")
    with pytest.raises(RnnscopeError, match="needs a pattern"):
        probes.labels("regex", "abc", "")
    with pytest.raises(RnnscopeError, match="catastrophic"):
        probes.labels("regex", "a" * 40 + "!", "(a|aa)+$")
    with pytest.raises(RnnscopeError, match="unknown probe"):
        probes.labels("sentiment", "abc")


def test_span_scores_and_degenerate_spans():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    inside = np.array([False, True, True, False])
    on, off = probes.span_scores(x, inside, 0.5)
    assert on.tolist() == [1.0, -1.0] and off.tolist() == [-1.0, 1.0]
    with pytest.raises(RnnscopeError, match="empty"):
        probes.span_scores(x, np.zeros(4, bool), 0.5)
    with pytest.raises(RnnscopeError, match="whole text"):
        probes.span_scores(x, np.ones(4, bool), 0.5)
    with pytest.raises(RnnscopeError, match="every character the same way"):
        probes.auc_all(x, np.zeros(4, bool))


def test_auc_all_exact_on_float16_style_ties_of_both_signs():
    rng = np.random.default_rng(3)
    T = 500
    y = rng.random(T) < 0.45
    x = rng.normal(size=(T, 40)).astype(np.float16).astype(np.float32)  # float16: heavy ties
    x[:, :10] = np.round(x[:, :10] * 2) / 2  # a handful of values, negative ones included
    x[:, 10] = -1.0  # constant negative
    x[:, 11] = np.where(y, -0.5, -0.75)  # perfect separation among negatives with saturation ties
    got = probes.auc_all(x, y, block=16, tile=64)
    want = np.array([reference_auc(x[:, j], y) for j in range(x.shape[1])])
    assert np.abs(got - want).max() < 1e-9
    assert got[10] == 0.5 and got[11] == 1.0


def test_auc_all_exact_on_float16_input_with_signed_zeros_and_saturation():
    rng = np.random.default_rng(7)
    T = 700
    y = rng.random(T) < 0.35
    x = np.tanh(3 * rng.normal(size=(T, 24))).astype(np.float16)  # saturates: long runs of +-1.0
    x[:, 0] = np.where(rng.random(T) < 0.5, np.float16(-0.0), np.float16(0.0))  # -0 and +0 are one value
    x[:, 1] = np.where(y, np.float16(1.0), np.float16(0.9995))  # adjacent float16 values: no tie
    x[:, 2] = np.float16(-2.5)
    got = probes.auc_all(x, y, block=8, tile=100)
    want = np.array([reference_auc(x[:, j].astype(np.float64), y) for j in range(x.shape[1])])
    assert np.abs(got - want).max() < 1e-12
    assert got[0] == 0.5 and got[1] == 1.0 and got[2] == 0.5


def test_rank_units_on_worker_threads_matches_one_thread():
    rng = np.random.default_rng(8)
    T = 400
    y = rng.random(T) < 0.4
    blocks = {(k, s): rng.normal(size=(T, 50)).astype(np.float16) for k in range(2) for s in "hcf"}
    blocks[(1, "c")][:, 17] += 3 * y  # one clear winner, in the middle of the blocks
    one = probes.rank_units(blocks, y, probes.BINARY, top=10)
    two = probes.rank_units(blocks, y, probes.BINARY, top=10, workers=2)
    assert one == two
    assert (one[0].layer, one[0].state, one[0].unit) == (1, "c", 17)


def test_float16_kernel_equals_the_float32_route_on_strided_blocks_across_tile_edges():
    """The compiled float16 kernel and the numpy float32 route are independent; they must agree exactly."""
    rng = np.random.default_rng(11)
    T = 3000
    y = rng.random(T) < 0.3
    wide = np.tanh(2 * rng.normal(size=(T, 140))).astype(np.float16)
    wide[:, 4] = np.float16(np.inf)
    wide[y, 4] = np.float16(65504.0)  # the largest finite float16 below +inf
    wide[:, 7] = np.where(y, np.float16(6e-8), np.float16(-6e-8))  # subnormals either side of zero
    wide[:, 10] = np.where(rng.random(T) < 0.5, np.float16(-np.inf), np.float16(-65504.0))
    block = wide[:, 1::3]  # 47 columns (wide's 1, 4, 7, ...), not contiguous, crossing 32-column tiles
    assert not block.flags.c_contiguous and block.shape[1] % 32
    got = probes.auc_all(block, y)
    want = probes.auc_all(block.astype(np.float32), y)  # float16 values are exact in float32
    assert np.array_equal(got, want)
    assert got[1] == 0.0 and got[2] == 1.0  # wide's 4: every positive below; 7: every positive above
    some = [0, 3, 4, 46]
    assert np.abs(got[some] - [reference_auc(block[:, j].astype(np.float64), y) for j in some]).max() < 1e-12


def test_span_scores_on_float16_blocks_compare_the_stored_values_exactly():
    rng = np.random.default_rng(5)
    T = 900
    inside = np.zeros(T, bool)
    inside[100:260] = True
    x = np.tanh(rng.normal(size=(T, 70))).astype(np.float16)
    x[inside, 4] = np.float16(0.3)  # stored as 0.30005: above 0.3 (numpy's float16 compare says no), not 0.3001
    block = x[:, ::2]  # 35 columns, not contiguous
    for threshold in (0.3, 0.3001, -0.5, 0.0):
        on, off = probes.span_scores(block, inside, threshold)
        wide = block.astype(np.float64) > threshold
        want = wide[inside].mean(axis=0) - wide[~inside].mean(axis=0)
        assert np.abs(on - want).max() < 1e-12 and np.array_equal(off, -on)
    assert probes.span_scores(block, inside, 0.3)[0][2] > probes.span_scores(block, inside, 0.3001)[0][2]
