"""models.importer on tutorial-style models written in plain PyTorch, saved the way their authors would.

The builders here (tutorial_*, save_*, reference_states) are shared with tests/app/test_import_cli.py
and tests/e2e/test_import_served.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from models import importer
from models.checkpoint import load_checkpoint
from models.errors import RnnscopeError
from models.importer import UNK_LOGIT, import_model
from models.vocab import UNK

CORPUS = ('"Well," said she, "I do not know." He laughed (a little) and left; the door shut.\n'
          "It was a truth: nobody came, and nobody went. 'Odd,' she thought -- 1, 2, 3!\n") * 4
CHARS = sorted(set(CORPUS))  # the tutorial convention: chars = sorted(list(set(text)))
V = len(CHARS)


# ---- the tutorials' models, as a reader of a char-RNN tutorial writes them
class CharLSTM(nn.Module):
    """Embedding + 2-layer LSTM + Linear: the classic char-rnn."""

    def __init__(self, vocab_size: int, emb: int = 12, hidden: int = 20, layers: int = 2, batch_first: bool = True,
                 bias: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.embedding = nn.Embedding(vocab_size, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers, batch_first=batch_first, bias=bias)
        self.fc = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):  # x (B, T) if batch_first else (T, B)
        out, state = self.lstm(self.embedding(x), state)
        return self.fc(out), state


class OneHotGRU(nn.Module):
    """No embedding: one-hot characters straight into the GRU; a head without bias."""

    def __init__(self, vocab_size: int, hidden: int = 18, layers: int = 2, batch_first: bool = False, bias: bool = True):
        super().__init__()
        self.vocab_size, self.batch_first = vocab_size, batch_first
        self.gru = nn.GRU(vocab_size, hidden, num_layers=layers, batch_first=batch_first, bias=bias)
        self.decoder = nn.Linear(hidden, vocab_size, bias=False)

    def forward(self, x, state=None):
        out, state = self.gru(nn.functional.one_hot(x, self.vocab_size).float(), state)
        return self.decoder(out), state


class TanhRNN(nn.Module):
    """Embedding + vanilla RNN (tanh, or relu) + Linear, under a nested prefix."""

    def __init__(self, vocab_size: int, emb: int = 10, hidden: int = 16, layers: int = 1, bias: bool = True,
                 nonlinearity: str = "tanh", batch_first: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(vocab_size, emb)
        self.encoder = nn.Module()
        self.encoder.rnn = nn.RNN(emb, hidden, num_layers=layers, nonlinearity=nonlinearity, bias=bias,
                                  batch_first=batch_first)
        self.out = nn.Linear(hidden, vocab_size, bias=bias)

    @property
    def rnn(self):
        return self.encoder.rnn

    def forward(self, x, state=None):
        out, state = self.encoder.rnn(self.emb(x), state)
        return self.out(out), state


class WordLanguageModel(nn.Module):
    """PyTorch's examples/word_language_model shape: encoder/decoder, tied weights (emb == hidden)."""

    def __init__(self, vocab_size: int, hidden: int = 16):
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.LSTM(hidden, hidden, 2)
        self.decoder = nn.Linear(hidden, vocab_size)
        self.decoder.weight = self.encoder.weight

    def forward(self, x, state=None):
        out, state = self.rnn(self.encoder(x), state)
        return self.decoder(out), state


def recurrent(model: nn.Module) -> nn.RNNBase:
    return next(m for m in model.modules() if isinstance(m, nn.RNNBase))


def tutorial(kind: str, seed: int = 0, scale: float = 2.5, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = {"lstm": CharLSTM, "onehot-gru": OneHotGRU, "rnn": TanhRNN, "wlm": WordLanguageModel}[kind](V, **kw)
    with torch.no_grad():  # a trained model's weights are larger than init's: make the check mean something
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


# ---- saving, as a user would
def save_pt(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def save_safetensors(model: nn.Module, path: Path) -> Path:
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if isinstance(model, WordLanguageModel):  # safetensors refuses shared tensors: save_model's convention
        sd["decoder.weight"] = sd["decoder.weight"].clone()
    save_file(sd, str(path))
    return path


def write_vocab(folder: Path, how: str, chars: list[str] = CHARS) -> Path:
    if how == "list":
        path = folder / "vocab.json"
        path.write_text(json.dumps(chars), encoding="utf-8")
    elif how == "dict":
        path = folder / "stoi.json"
        path.write_text(json.dumps({ch: i for i, ch in enumerate(chars)}), encoding="utf-8")
    elif how == "itos":
        path = folder / "itos.json"
        path.write_text(json.dumps({str(i): ch for i, ch in enumerate(chars)}), encoding="utf-8")
    else:
        path = folder / "input.txt"
        path.write_text(CORPUS, encoding="utf-8")
    return path


@torch.no_grad()
def reference_states(model: nn.Module, text: str, chars: list[str] = CHARS):
    """PyTorch's own module, one character at a time: per layer h (T, H), c (T, H) or None, logits (T, V)."""
    rnn = recurrent(model)
    ids = torch.tensor([chars.index(ch) for ch in text])
    hs, cs, logits, state = [], [], [], None
    for t in range(len(ids)):
        x = ids[t : t + 1].view(1, 1)  # (1, 1): B = T = 1 reads the same with or without batch_first
        out, state = model(x, state)
        h = state[0] if isinstance(state, tuple) else state  # (L, 1, H)
        hs.append(h[:, 0].clone())
        if isinstance(state, tuple):
            cs.append(state[1][:, 0].clone())
        logits.append(out.reshape(-1))
    # And the whole text at once, as the tutorial runs it: the top layer's h must be the same.
    seq = ids.view(1, -1) if getattr(rnn, "batch_first", False) else ids.view(-1, 1)
    full, _ = rnn(model.embedding(seq) if hasattr(model, "embedding") else
                  model.encoder(seq) if isinstance(model, WordLanguageModel) else
                  model.emb(seq) if hasattr(model, "emb") else nn.functional.one_hot(seq, V).float())
    H = torch.stack(hs, 1)  # (L, T, H)
    assert torch.allclose(full.reshape(len(ids), -1), H[-1], atol=1e-5)
    C = torch.stack(cs, 1) if cs else None
    return list(H), None if C is None else list(C), torch.stack(logits)


# ---- the tests
CASES = [
    ("lstm", {}, "list", save_pt),
    ("lstm", {"batch_first": False, "bias": False}, "dict", save_safetensors),
    ("onehot-gru", {}, "dict", save_pt),
    ("onehot-gru", {"batch_first": True, "bias": False, "layers": 1}, "itos", save_pt),
    ("rnn", {}, "corpus", save_pt),
    ("rnn", {"bias": False, "layers": 2, "batch_first": False}, "list", save_safetensors),
    ("wlm", {}, "list", save_pt),
]


@pytest.mark.parametrize("kind,kw,vocab_how,save", CASES,
                         ids=[f"{k}-{'-'.join(f'{a}={b}' for a, b in kw.items()) or 'default'}-{v}-{s.__name__}"
                              for k, kw, v, s in CASES])
def test_tutorial_models_import_and_compute_what_pytorch_computes(tmp_path, kind, kw, vocab_how, save):
    model = tutorial(kind, **kw)
    src = save(model, tmp_path / ("model.safetensors" if save is save_safetensors else "model.pt"))
    result = import_model(src, write_vocab(tmp_path, vocab_how), tmp_path / "out")
    ck = load_checkpoint(tmp_path / "out")
    cell = {"lstm": "lstm", "onehot-gru": "gru", "rnn": "rnn", "wlm": "lstm"}[kind]
    assert ck.config.cell == cell and ck.vocab.chars == [UNK] + CHARS
    assert ck.card["imported"] is True and ck.card["source"]["file"] == src.name
    check = ck.card["self_check"]
    assert result.check["chars"] == importer.CHECK_CHARS and check["dtype"] == "float64"
    assert max(check["max_error"].values()) < 1e-12  # float64: only a misplaced weight could show here
    assert set(check["max_error"]) == {"h", "logits"} | ({"c"} if cell == "lstm" else set())
    assert 0 < max(check["trace_max_error"].values()) <= 1e-4  # float32 rounding, and it was compared
    if kind == "onehot-gru":
        assert ck.config.emb == V  # the identity fold
    text = CORPUS[:120]
    ref_h, ref_c, ref_logits = reference_states(model, text)
    idx = ck.vocab.encode_tensor(text)[None]
    logits, _, state = ck.model(idx)
    assert torch.allclose(logits[0, :, 1:], ref_logits, atol=1e-5, rtol=1e-5)
    assert (logits[0, :, 0] == UNK_LOGIT).all()  # the added unknown character: zero weights, a bias far below
    from models.trace import run_trace

    tr = run_trace(ck.model, ck.vocab, text, topk=0)
    for k in range(ck.config.n_layers):
        assert torch.allclose(torch.from_numpy(tr.states[k]["h"]), ref_h[k], atol=1e-5)
        if ref_c is not None:
            assert torch.allclose(torch.from_numpy(tr.states[k]["c"]), ref_c[k], atol=1e-5)


def test_relu_rnn_needs_the_flag_and_then_matches(tmp_path):
    model = tutorial("rnn", nonlinearity="relu", layers=2, scale=1.0)  # larger weights: h grows without bound
    src = save_pt(model, tmp_path / "relu.pt")
    vocab = write_vocab(tmp_path, "list")
    import_model(src, vocab, tmp_path / "relu", nonlinearity="relu")
    ck = load_checkpoint(tmp_path / "relu")
    assert ck.config.nonlinearity == "relu" and ck.model.layers[0].nonlinearity == "relu"
    assert json.loads((tmp_path / "relu" / "config.json").read_text())["model"]["nonlinearity"] == "relu"
    _, _, ref_logits = reference_states(model, CORPUS[:60])
    assert torch.allclose(ck.model(ck.vocab.encode_tensor(CORPUS[:60])[None])[0][0, :, 1:], ref_logits, atol=1e-5)
    # Imported as tanh, it is a different model: nothing in the weights tells, so its logits differ.
    import_model(src, vocab, tmp_path / "as-tanh")
    tanh = load_checkpoint(tmp_path / "as-tanh")
    assert not torch.allclose(tanh.model(tanh.vocab.encode_tensor(CORPUS[:60])[None])[0][0, :, 1:], ref_logits, atol=1e-3)


def test_a_tanh_config_is_written_as_before_the_nonlinearity_field(tmp_path):
    import_model(save_pt(tutorial("lstm"), tmp_path / "m.pt"), write_vocab(tmp_path, "list"), tmp_path / "o")
    assert "nonlinearity" not in json.loads((tmp_path / "o" / "config.json").read_text())["model"]


def test_a_checkpoint_dict_with_the_state_dict_inside_imports(tmp_path):
    model = tutorial("lstm")
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 3, dtype=torch.long))[0].sum().backward()
    opt.step()
    torch.save({"epoch": 7, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()},
               tmp_path / "ckpt.pth")
    result = import_model(tmp_path / "ckpt.pth", write_vocab(tmp_path, "list"), tmp_path / "o")
    assert "state_dict read from the file's 'model_state_dict' entry" in result.card["notes"]


def test_a_vocabulary_holding_the_replacement_character_keeps_its_row(tmp_path):
    chars = CHARS[:-1] + [UNK]  # the source model's last character is U+FFFD itself
    model = tutorial("lstm")
    import_model(save_pt(model, tmp_path / "m.pt"), write_vocab(tmp_path, "list", chars), tmp_path / "o")
    ck = load_checkpoint(tmp_path / "o")
    assert len(ck.vocab) == V and ck.vocab.chars[1:] == CHARS[:-1]
    text = "ab" + UNK + "c"
    ref = model(torch.tensor([[chars.index(c) for c in text]]))[0][0]  # (T, V)
    mine = ck.model(ck.vocab.encode_tensor(text)[None])[0][0]
    assert torch.allclose(mine[:, 1:], ref[:, :-1], atol=1e-5) and torch.allclose(mine[:, 0], ref[:, -1], atol=1e-5)


def test_held_out_text_gives_bits_per_char_the_quote_unit_and_an_atlas(tmp_path):
    model = tutorial("lstm")
    held = tmp_path / "held.txt"
    held.write_text(CORPUS + "~~", encoding="utf-8")  # "~" is not in the vocabulary
    result = import_model(save_pt(model, tmp_path / "m.pt"), write_vocab(tmp_path, "list"), tmp_path / "o", eval_path=held)
    card = load_checkpoint(tmp_path / "o").card
    ids = torch.tensor([CHARS.index(c) for c in CORPUS])
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        want = nn.functional.cross_entropy(logits[0], ids[1:]).item() / torch.log(torch.tensor(2.0)).item()
    assert card["val_bpc"] == pytest.approx(want, abs=1e-4) and card["val_chars"] == len(CORPUS)
    assert card["val_dropped_chars"] == 2 and result.card["val_text"] == "held.txt"
    assert card["probe_units"]["quotes"]["metric"] == "auc"
    atlas = json.loads((tmp_path / "o" / "atlas.json").read_text())
    assert atlas["text"] == CORPUS[:30_000] and atlas["model"]["name"] == "o"
    assert (tmp_path / "o" / "README.md").read_text().startswith("# o\n")


def test_a_failed_self_check_writes_nothing(tmp_path, monkeypatch):
    real = importer.build_charlm

    def off_by_a_little(*a):
        m = real(*a)
        with torch.no_grad():
            m.layers[1].weight_hh_l0[5, 3] += 1e-2  # one weight of the top layer's input gate
        return m

    monkeypatch.setattr(importer, "build_charlm", off_by_a_little)
    with pytest.raises(RnnscopeError, match=r"self-check failed: layer 1 (h|c) differs from PyTorch's nn.LSTM by "
                                            r"\S+ at position \d+, unit 5 \(tolerance 1e-05\)"):
        import_model(save_pt(tutorial("lstm"), tmp_path / "m.pt"), write_vocab(tmp_path, "list"), tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))
