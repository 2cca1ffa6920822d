import numpy as np
import pytest

from models.atlas import PEAK_GAP, _distinct_peaks, build_atlas, load_atlas, neuron_view, save_atlas
from models.checkpoint import Checkpoint
from models.errors import RnnscopeError
from models.trace import run_trace

from .helpers import TEXT, tiny_model


def test_atlas_round_trip_and_neuron_view(tmp_path):
    model, vocab = tiny_model("lstm")
    ck = Checkpoint(model=model, vocab=vocab, card={"corpus": "test"})
    text = TEXT * 5
    atlas = build_atlas(ck, text, top=4, bins=10)
    save_atlas(tmp_path, atlas)
    again = load_atlas(tmp_path)
    view = neuron_view(again, 1, "c", 3)
    values = run_trace(model, vocab, text, layers=[1], states=["c"]).states[1]["c"][:, 3]
    assert view["max"] == pytest.approx(values.max(), abs=1e-4)
    tops = [c["position"] for c in view["top"]]
    assert values[tops[0]] == values.max() and list(values[tops]) == sorted(values[tops], reverse=True)
    bottom = view["bottom"][0]
    assert values[bottom["position"]] == values.min() and bottom["char"] == text[bottom["position"]]
    assert sum(view["hist"]) == len(text)
    assert {p["probe"] for p in view["probes"]} >= {"quotes", "vowel"}
    top_h = neuron_view(again, 1, "h", 0)
    assert len(top_h["pushes_up"]) == 8 and "pushes_up" not in view
    w = model.head.weight.detach().numpy()[:, 0]
    assert top_h["pushes_up"][0][0] == vocab.chars[int(np.argmax(w))]
    with pytest.raises(RnnscopeError, match="unit 16 is out of range"):
        neuron_view(again, 1, "c", 16)
    with pytest.raises(RnnscopeError, match="no layer 5"):
        neuron_view(again, 5, "h", 0)


def test_missing_and_corrupt_atlas(tmp_path):
    assert load_atlas(tmp_path) is None
    (tmp_path / "atlas.json").write_text("{broken")
    with pytest.raises(RnnscopeError, match="rebuild it"):
        load_atlas(tmp_path)


def test_top_contexts_are_distinct_places_not_one_run_of_neighbours():
    model, vocab = tiny_model("lstm")
    ck = Checkpoint(model=model, vocab=vocab, card={"corpus": "test"})
    text = TEXT * 20
    atlas = build_atlas(ck, text, top=5, bins=10)
    values = run_trace(model, vocab, text, layers=[0], states=["h"]).states[0]["h"]
    for u in range(values.shape[1]):
        view = neuron_view(atlas, 0, "h", u)
        for key in ("top", "bottom"):
            pos = [c["position"] for c in view[key]]
            assert len(pos) == 5
            assert all(abs(a - b) >= PEAK_GAP for i, a in enumerate(pos) for b in pos[i + 1:]), (u, key, pos)
        tops = [c["position"] for c in view["top"]]
        assert values[tops[0], u] == values[:, u].max()  # the very best place still comes first
        assert list(values[tops, u]) == sorted(values[tops, u], reverse=True)


def test_distinct_peaks_fill_in_rank_order_when_the_text_is_too_short():
    ranked = np.array([[5], [4], [6], [0], [3]])  # one unit; positions best first, all within a few chars
    assert _distinct_peaks(ranked, 3, gap=24) == [[5, 4, 6]]
    assert _distinct_peaks(ranked, 2, gap=5) == [[5, 0]]
