"""A ReLU RNN's h is unbounded above (an imported `nn.RNN(nonlinearity="relu")`): it is coloured on the text's
own spread, as c is, not on the tanh range where every value past 1 would look the same."""

from __future__ import annotations

import numpy as np
import torch

from app.probe.service import screen_ends
from app.ui.scale import neuron_scale, state_kind
from models.charlm import CharLM, ModelConfig
from models.checkpoint import save_checkpoint
from models.trace import run_trace
from models.vocab import CharVocab
from tests.app.conftest import make_client

TEXT = 'She said "no" (twice), and went out.\n'


def test_state_kind_and_scale_follow_the_nonlinearity():
    assert state_kind("h") == "tanh" and state_kind("h", "relu") == "free" and state_kind("c", "relu") == "free"
    assert state_kind("z", "relu") == "sigmoid"  # only h changes
    values = np.array([0.0, 0.5, 2.0, 3.0, 2.9], dtype=np.float32)
    assert neuron_scale("h", values).hi == 1.0  # a tanh h past 1 cannot happen: the fixed range holds
    relu = neuron_scale("h", values, "relu")
    assert (relu.lo, relu.hi) == (-3.0, 3.0) and "percentile" in relu.label
    x = np.stack([values, values / 10], axis=1)  # (T, 2): two units
    assert screen_ends("h", x) == 1.0
    np.testing.assert_allclose(screen_ends("h", x, "relu"), [3.0, 0.3])


def test_the_page_colours_a_relu_rnn_on_its_own_spread(tmp_path):
    torch.manual_seed(0)
    vocab = CharVocab.from_text(TEXT)
    model = CharLM(ModelConfig(cell="rnn", n_layers=1, hidden=8, emb=8, vocab_size=len(vocab), nonlinearity="relu"))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # values well past 1
    save_checkpoint(tmp_path / "relu-rnn", model.eval(), vocab, {"corpus": "tiny"})
    with make_client(tmp_path, default_model="relu-rnn") as client:
        h = run_trace(model, vocab, TEXT, layers=[0], states=["h"], topk=0).states[0]["h"]  # (T, 8)
        unit = int(np.argmax(h.max(axis=0)))
        assert h[:, unit].max() > 1.5
        page = client.get("/", params={"model": "relu-rnn", "layer": 0, "state": "h", "unit": unit, "text": TEXT})
        assert page.status_code == 200
        assert "ends at the 95th percentile of |value| in this text" in page.text and "tanh range" not in page.text
        export = client.get("/export.json", params={"model": "relu-rnn", "layer": 0, "state": "h", "unit": unit,
                                                     "text": TEXT})
        assert export.status_code == 200, export.text
        assert export.json()["scale"]["hi"] == neuron_scale("h", h[:, unit], "relu").hi > 1.0
