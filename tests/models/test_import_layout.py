"""models.import_layout: placing tensors by shape, breaking ties by module name, --map, and what cannot be placed."""

from __future__ import annotations

import pytest
import torch

from models.errors import RnnscopeError
from models.import_layout import apply_maps, recognise
from models.import_vocab import SourceVocab
from models.vocab import UNK


def lstm_sd(prefix="rnn.", V=7, E=5, H=4, L=2, emb="emb.weight", head="out.weight", bias=True) -> dict:
    sd = {emb: torch.randn(V, E), head: torch.randn(V, H)}
    if bias:
        sd[head.removesuffix("weight") + "bias"] = torch.randn(V)
    for k in range(L):
        sd[f"{prefix}weight_ih_l{k}"] = torch.randn(4 * H, E if k == 0 else H)
        sd[f"{prefix}weight_hh_l{k}"] = torch.randn(4 * H, H)
        if bias:
            sd[f"{prefix}bias_ih_l{k}"] = torch.randn(4 * H)
            sd[f"{prefix}bias_hh_l{k}"] = torch.randn(4 * H)
    return sd


def test_shapes_place_everything_whatever_the_names():
    lay = recognise(lstm_sd(prefix="model.core.", emb="x.weight", head="y.weight"), 7)
    assert (lay.cell, lay.n_layers, lay.hidden, lay.input_size, lay.prefix) == ("lstm", 2, 4, 5, "model.core.")
    assert (lay.embed_key, lay.head_key, lay.head_bias_key, lay.bias) == ("x.weight", "y.weight", "y.bias", True)


def test_module_names_break_a_tie_between_same_shaped_tensors():
    sd = lstm_sd(E=4, emb="encoder.weight", head="decoder.weight")  # E == H: both are (V, 4)
    lay = recognise(sd, 7)
    assert lay.embed_key == "encoder.weight" and lay.head_key == "decoder.weight"
    sd = lstm_sd(E=4, emb="tok_embeddings.weight", head="a.weight")  # only the embedding says what it is
    lay = recognise(sd, 7)
    assert lay.embed_key == "tok_embeddings.weight" and lay.head_key == "a.weight"


def test_one_hot_input_when_weight_ih_has_V_columns_and_no_embedding():
    sd = lstm_sd(E=7)
    del sd["emb.weight"]
    lay = recognise(sd, 7)
    assert lay.embed_key is None and lay.input_size == 7


def test_the_cell_comes_from_the_gate_multiple():
    for gates, cell in ((1, "rnn"), (3, "gru"), (4, "lstm")):
        sd = {"w.weight": torch.randn(6, 3), "h.weight": torch.randn(6, 5), "r.weight_ih_l0": torch.randn(gates * 5, 3),
              "r.weight_hh_l0": torch.randn(gates * 5, 5)}
        assert recognise(sd, 6).cell == cell
    sd = {"r.weight_ih_l0": torch.randn(10, 3), "r.weight_hh_l0": torch.randn(10, 5)}
    with pytest.raises(RnnscopeError, match=r"r.weight_hh_l0 is \(10, 5\): its rows are not 1, 3 or 4 times its 5 "
                                            "columns, so it is not an nn.RNN, nn.GRU or nn.LSTM weight"):
        recognise(sd, 6)


def test_a_layer_of_the_wrong_width_is_named():
    sd = lstm_sd()
    sd["rnn.weight_ih_l1"] = torch.randn(16, 5)
    with pytest.raises(RnnscopeError, match=r"rnn.weight_ih_l1 is \(16, 5\), expected \(16, 4\) for this stack"):
        recognise(sd, 7)
    sd = lstm_sd(L=3)
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        del sd[f"rnn.{k}_l1"]
    with pytest.raises(RnnscopeError, match=r"rnn.weight_ih_l1 is missing: the layers must run l0..l2"):
        recognise(sd, 7)


def test_maps_rename_keys_and_prefixes():
    sd = lstm_sd(prefix="core.", emb="e", head="h")  # names the heuristics cannot read as modules
    out = apply_maps(sd, ["core.=rnn.", "e=embed.weight"])
    assert "rnn.weight_ih_l0" in out and "embed.weight" in out and "core.weight_ih_l0" not in out
    assert out["embed.weight"] is sd["e"]
    for maps, message in [
        (["core.=rnn"], r"--map core.=rnn: a prefix \(ending in '.'\) renames to a prefix, e.g. core.=rnn."),
        (["nothing.=rnn."], r"--map nothing.=rnn.: no key starts with 'nothing.'"),
        (["e=x", "h=x"], r"--map h=x: 'x' is already a key; map that one away first"),
        (["=x"], r"--map takes OLD=NEW"),
    ]:
        with pytest.raises(RnnscopeError, match=message):
            apply_maps(sd, maps)


def test_the_rnnscope_vocabulary_puts_the_unknown_character_first():
    vocab, rows = SourceVocab(list("ba\n"), "list", "").to_rnnscope()
    assert vocab.chars == [UNK, "b", "a", "\n"] and rows == [None, 0, 1, 2]
    vocab, rows = SourceVocab(["b", UNK, "a"], "list", "").to_rnnscope()
    assert vocab.chars == [UNK, "b", "a"] and rows == [1, 0, 2]
