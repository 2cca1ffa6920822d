import pytest
import torch

from models.charlm import CharLM, ModelConfig, detach_state
from models.errors import RnnscopeError
from models.vocab import UNK, CharVocab

from .helpers import TEXT, tiny_model


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stack_equals_pytorch_multilayer_module(cell):
    model, vocab = tiny_model(cell, layers=3)
    ref_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    ref = ref_cls(8, 16, num_layers=3, batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(layer, f"{name}_l0"))
    idx = vocab.encode_tensor(TEXT)[None, :]
    with torch.no_grad():
        ours = model.top_hidden(idx)
        theirs, _ = ref(model.embed(idx))
    assert (ours - theirs).abs().max().item() < 1e-6


def test_forward_shapes_and_loss():
    model, vocab = tiny_model("gru")
    idx = vocab.encode_tensor(TEXT)[None, :-1]
    tgt = vocab.encode_tensor(TEXT)[None, 1:]
    logits, loss, state = model(idx, targets=tgt)
    assert logits.shape == (1, len(TEXT) - 1, len(vocab))
    assert loss.ndim == 0 and loss.item() > 0
    assert len(state) == 2 and state[0].shape == (1, 1, 16)


def test_state_carry_over_equals_one_long_pass():
    """Truncated BPTT's carried (detached) state gives exactly the long forward's logits."""
    model, vocab = tiny_model("lstm")
    idx = vocab.encode_tensor(TEXT * 3)[None, :]
    with torch.no_grad():
        full, _, _ = model(idx)
        parts, state = [], None
        for s in range(0, idx.size(1), 17):
            logits, _, state = model(idx[:, s : s + 17], state)
            state = detach_state(state)
            parts.append(logits)
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-5


def test_bad_config_is_rejected_with_a_clear_message():
    with pytest.raises(RnnscopeError, match="unknown cell type 'transformer'"):
        CharLM(ModelConfig(cell="transformer", vocab_size=5))
    with pytest.raises(RnnscopeError, match="hidden must be at least 1"):
        CharLM(ModelConfig(hidden=0, vocab_size=5))


def test_vocab_json_round_trip_and_unknowns():
    vocab = CharVocab.from_text("hello")
    again = CharVocab.from_json(vocab.to_json())
    assert again.chars == vocab.chars and again.chars[0] == UNK
    assert vocab.encode("hex") == [vocab.chars.index("h"), vocab.chars.index("e"), 0]
    assert vocab.unknown_positions("hex!") == [2, 3]
    with pytest.raises(ValueError):
        CharVocab.from_json(["a", "b"])
