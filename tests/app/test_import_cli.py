"""`rnnscope import SRC --vocab VOCAB --out DIR [--name NAME] [--map OLD=NEW ...]`: what it writes and says,
and every refusal as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file
from typer.testing import CliRunner

from app.cli import cli
from models import importer
from models.checkpoint import load_checkpoint
from tests.models.test_import_models import (CHARS, CORPUS, V, CharLSTM, reference_states, save_pt, tutorial,
                                             write_vocab)

runner = CliRunner()


def run(*args: str):
    return runner.invoke(cli, ["import", *map(str, args)])


def test_import_writes_a_servable_folder_and_says_what_it_found(tmp_path):
    src = save_pt(tutorial("lstm"), tmp_path / "char_rnn.pt")
    vocab = write_vocab(tmp_path, "list")
    held = tmp_path / "held.txt"
    held.write_text(CORPUS, encoding="utf-8")
    r = run(src, "--vocab", vocab, "--out", tmp_path / "models", "--name", "my-lstm", "--eval", held)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == (f"char_rnn.pt: embedding embedding.weight ({V}, 12) -> 2-layer LSTM lstm.* of 20 units -> "
                        "head fc.weight + fc.bias")
    assert re.fullmatch(r"self-check against torch.nn.LSTM on 256 characters: largest error h \S+, c \S+, logits \S+ "
                        r"in float64 \(tolerance 1e-05\); the float32 trace: h \S+, c \S+ \(tolerance 0.001\)",
                        lines[1]), lines[1]
    assert lines[2].startswith("held-out: ") and f"bits/char over {len(CORPUS):,} characters of {held}" in lines[2]
    units = load_checkpoint(tmp_path / "models" / "my-lstm").card["probe_units"]
    assert [line.split()[0] for line in lines[3:-1]] == list(units) and "quotes" in units  # the page's chips
    assert lines[-1] == f"-> {tmp_path / 'models' / 'my-lstm'} (a server whose RNNSCOPE_MODELS_DIR is " \
                        f"{tmp_path / 'models'} serves it as 'my-lstm')"
    folder = tmp_path / "models" / "my-lstm"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "atlas.json", "config.json", "model.safetensors"]
    card = load_checkpoint(folder).card
    import hashlib

    assert card["imported"] is True and card["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert not list((tmp_path / "models").glob(".*"))  # no staging folder left behind


def test_out_without_name_is_the_checkpoint_folder_and_force_replaces_it(tmp_path):
    src = save_pt(tutorial("lstm"), tmp_path / "m.pt")
    vocab = write_vocab(tmp_path, "corpus")
    assert run(src, "--vocab", vocab, "--out", tmp_path / "mine").exit_code == 0
    card = load_checkpoint(tmp_path / "mine").card
    assert card["vocab_source"] == "corpus" and any("sorted set" in n for n in card["notes"])
    r = run(src, "--vocab", vocab, "--out", tmp_path / "mine")
    assert r.exit_code == 2 and "already holds a checkpoint: pass --force to replace it" in r.output
    assert run(src, "--vocab", vocab, "--out", tmp_path / "mine", "--force").exit_code == 0
    # A folder of models (or anything but a checkpoint) is never replaced, --force or not.
    (tmp_path / "zoo" / "kept").mkdir(parents=True)
    for extra in ([], ["--force"]):
        r = run(src, "--vocab", vocab, "--out", tmp_path / "zoo", *extra)
        assert r.exit_code == 2 and "is a folder that is not an rnnscope checkpoint: give a new or empty folder (to add " \
                                    "a model to a folder of models, pass --name NAME)" in r.output
    assert (tmp_path / "zoo" / "kept").is_dir()


class TwoLSTMs(nn.Module):
    """Stacked by hand as two modules: a layout the heuristics leave to --map."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, 8)
        self.lstm1 = nn.LSTM(8, 12, batch_first=True)
        self.lstm2 = nn.LSTM(12, 12, batch_first=True)
        self.fc = nn.Linear(12, V)

    def forward(self, x):
        out, _ = self.lstm2(self.lstm1(self.embedding(x))[0])
        return self.fc(out)


def test_map_joins_hand_stacked_modules_into_one_stack(tmp_path):
    torch.manual_seed(1)
    model = TwoLSTMs().eval()
    src = save_pt(model, tmp_path / "two.pt")
    vocab = write_vocab(tmp_path, "list")
    r = run(src, "--vocab", vocab, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "ambiguous recurrent module: 2 candidates: lstm1.* (1 layer), lstm2.* (1 layer)" in r.output
    maps = [f"--map=lstm2.{w}_l0=lstm1.{w}_l1" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    r = run(src, "--vocab", vocab, "--out", tmp_path / "o", *maps)
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "o")
    assert ck.config.n_layers == 2 and ck.card["source"]["maps"] == [m.removeprefix("--map=") for m in maps]
    ids = torch.tensor([[CHARS.index(c) for c in CORPUS[:50]]])
    assert torch.allclose(ck.model(ck.vocab.encode_tensor(CORPUS[:50])[None])[0][0, :, 1:], model(ids)[0], atol=1e-5)


def test_map_names_the_head_when_two_tensors_could_be_it(tmp_path):
    model = tutorial("wlm")  # tied encoder/decoder of the same shape
    sd = {k.replace("encoder.", "a.").replace("decoder.", "b."): v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "anon.pt")
    vocab = write_vocab(tmp_path, "list")
    r = run(tmp_path / "anon.pt", "--vocab", vocab, "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert r.output.strip() == (f"error: ambiguous head: 2 tensors have its shape ({V}, 16): a.weight, b.weight; say "
                                "which with --map a.weight=head.weight")
    r = run(tmp_path / "anon.pt", "--vocab", vocab, "--out", tmp_path / "o", "--map", "b.weight=head.weight",
            "--map", "b.bias=head.bias")
    assert r.exit_code == 0, r.output
    _, _, ref_logits = reference_states(model, CORPUS[:40])
    ck = load_checkpoint(tmp_path / "o")
    assert torch.allclose(ck.model(ck.vocab.encode_tensor(CORPUS[:40])[None])[0][0, :, 1:], ref_logits, atol=1e-5)


# ---- refusals: one line, exit 2, and what to do
def _sd(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _refusal_cases(tmp_path):
    """(name, SRC, extra args, vocab kind, the message's words)."""
    base = tutorial("lstm")
    cases = []

    def pt(name: str, obj) -> str:
        torch.save(obj, tmp_path / name)
        return str(tmp_path / name)

    cases.append(("whole pickled model", pt("whole.pt", base), [], "list",
                  "whole.pt holds a pickled Python object (tests.models.test_import_models.CharLSTM), not a state_dict; "
                  "loading it would run its code, which rnnscope never does: in the code that trained it, run "
                  "torch.save(model.state_dict(), 'model.pt') and import that file"))
    bi = CharLSTM(V)
    bi.lstm = nn.LSTM(12, 20, num_layers=2, batch_first=True, bidirectional=True)
    cases.append(("bidirectional", pt("bi.pt", _sd(bi)), [], "list",
                  "lstm.weight_ih_l0_reverse: a bidirectional recurrent module (bidirectional=True) also reads each text "
                  "backwards, so it is not a left-to-right character model rnnscope can trace; import a unidirectional one"))
    proj = CharLSTM(V)
    proj.lstm = nn.LSTM(12, 20, num_layers=2, batch_first=True, proj_size=8)
    cases.append(("projection", pt("proj.pt", _sd(proj)), [], "list",
                  "lstm.weight_hr_l0 (8, 20): an LSTM with a projection (proj_size=8) is not supported: its h is the "
                  "projected vector, not the cell's units; import a model without proj_size"))
    cases.append(("vocab too small", pt("m.pt", _sd(base)), [], "short",
                  f"the vocabulary has {V - 1} characters but the weights have {V} (output layer fc.weight is ({V}, 20)): "
                  "give the vocabulary the model was trained with"))
    extra = _sd(base) | {"fc1.weight": torch.randn(20, 20), "fc1.bias": torch.randn(20)}
    cases.append(("an extra layer", pt("extra.pt", extra), [], "list",
                  "tensors outside embedding -> LSTM -> linear head: fc1.weight (20, 20), fc1.bias (20,); rnnscope imports "
                  "exactly that architecture"))
    cases.append(("no recurrent module", pt("lin.pt", nn.Linear(4, V).state_dict()), [], "list",
                  f"no recurrent module: expected nn.RNN/nn.LSTM/nn.GRU keys such as rnn.weight_ih_l0 and "
                  f"rnn.weight_hh_l0 (keys: weight ({V}, 4), bias ({V},))"))
    cases.append(("relu for an LSTM", pt("m.pt", _sd(base)), ["--nonlinearity", "relu"], "list",
                  "--nonlinearity relu is for a vanilla RNN, but lstm.weight_hh_l0 (80, 20) has 4x20 rows: an LSTM"))
    cases.append(("bad nonlinearity", pt("m.pt", _sd(base)), ["--nonlinearity", "sigmoid"], "list",
                  "--nonlinearity 'sigmoid': choose tanh or relu"))
    cases.append(("map without =", pt("m.pt", _sd(base)), ["--map", "fc.weight"], "list",
                  "--map takes OLD=NEW (a key and its new name, or two prefixes ending in '.'), got 'fc.weight'"))
    cases.append(("map of a missing key", pt("m.pt", _sd(base)), ["--map", "dec.weight=head.weight"], "list",
                  "--map dec.weight=head.weight: no key is 'dec.weight' (keys: embedding.weight"))
    cases.append(("map onto a key", pt("m.pt", _sd(base)), ["--map", "fc.bias=fc.weight"], "list",
                  "--map fc.bias=fc.weight: 'fc.weight' is already a key; map that one away first"))
    no_head = {k: v for k, v in _sd(base).items() if not k.startswith("fc.")}
    cases.append(("no head", pt("nohead.pt", no_head), [], "list",
                  f"no output layer: expected a ({V}, 20) Linear weight (vocabulary x hidden) after lstm.*"))
    no_emb = {k: v for k, v in _sd(base).items() if not k.startswith("embedding.")}
    cases.append(("no embedding", pt("noemb.pt", no_emb), [], "list",
                  f"no embedding: lstm.weight_ih_l0 reads 12 inputs, so the input is neither one-hot ({V} characters) "
                  f"nor a ({V}, 12) embedding"))
    nan = _sd(base)
    nan["lstm.weight_hh_l1"][3, 4] = float("nan")
    cases.append(("NaN weights", pt("nan.pt", nan), [], "list",
                  "lstm.weight_hh_l1 holds NaN or infinite values: the model diverged in training or the file is damaged"))
    cases.append(("a training checkpoint without weights", pt("meta.pt", {"epoch": 3, "loss": 1.5}), [], "list",
                  "holds a dict that is not a state_dict (its keys: 'epoch', 'loss') and no single state_dict"))
    cases.append(("a bare tensor", pt("t.pt", torch.zeros(3)), [], "list", "t.pt holds a Tensor, not a state_dict"))
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    cases.append(("not a torch file", str(tmp_path / "junk.pt"), [], "list",
                  "junk.pt is not a PyTorch state_dict file torch.load can read"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    cases.append(("broken safetensors", str(tmp_path / "bad.safetensors"), [], "list",
                  "bad.safetensors is not a readable safetensors file"))
    cases.append(("missing source", str(tmp_path / "nope.pt"), [], "list", "nope.pt does not exist"))
    partial_bias = _sd(base)
    del partial_bias["lstm.bias_ih_l1"], partial_bias["lstm.bias_hh_l1"]
    cases.append(("biases in some layers only", pt("pb.pt", partial_bias), [], "list",
                  "lstm.bias_ih_l1 is missing but lstm.bias_ih_l0 is there: a PyTorch module has biases in every layer "
                  "or none"))
    return cases


def _vocab(tmp_path, kind: str):
    if kind == "short":
        return write_vocab(tmp_path, "list", CHARS[:-1])
    return write_vocab(tmp_path, kind)


def test_every_refusal_is_one_line_saying_why(tmp_path):
    for name, src, extra, vocab_kind, message in _refusal_cases(tmp_path):
        out = tmp_path / "models" / "x"
        r = run(src, "--vocab", _vocab(tmp_path, vocab_kind), "--out", out, *extra)
        assert r.exit_code == 2, (name, r.output)
        assert message in r.output, (name, r.output)
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, (name, r.output)  # one line, no traceback
        assert not out.exists(), name


def test_a_failed_self_check_is_a_refusal(tmp_path, monkeypatch):
    real = importer.build_charlm

    def swapped_gates(tensors, layout, rows):  # a plausible bug: GRU gate blocks in the wrong order
        m = real(tensors, layout, rows)
        with torch.no_grad():
            w = m.layers[0].weight_hh_l0
            H = layout.hidden
            w[:H], w[H : 2 * H] = w[H : 2 * H].clone(), w[:H].clone()
        return m

    monkeypatch.setattr(importer, "build_charlm", swapped_gates)
    src = save_pt(tutorial("onehot-gru"), tmp_path / "gru.pt")
    r = run(src, "--vocab", write_vocab(tmp_path, "dict"), "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: self-check failed: layer 0 h differs from PyTorch's nn.GRU by ")
    assert "(tolerance 1e-05); the weights do not import faithfully, so nothing was written" in r.output
    assert r.output.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("content,message", [
    ('["a", "b"', "vocab.json is not valid JSON (Expecting ',' delimiter at line 1 column 10)"),
    ('["a", "bc"]', "vocab.json: entry 1 is 'bc', not one character"),
    ('["a", "b", "a"]', "vocab.json: 'a' appears twice (indices 0 and 2)"),
    ('{"a": 0, "b": 2}', "vocab.json: indices must run 0..1 without gaps; index 1 is missing"),
    ('{"a": 0, "b": 0}', "vocab.json: 'a' and 'b' both have index 0"),
    ('{"a": "x"}', "vocab.json: an object must map each character to its index (int)"),
    ('"abc"', "vocab.json holds str: expected a list of characters or an object character -> index"),
    ("[]", "vocab.json is an empty list"),
])
def test_vocabulary_refusals(tmp_path, content, message):
    src = save_pt(tutorial("lstm"), tmp_path / "m.pt")
    (tmp_path / "vocab.json").write_text(content, encoding="utf-8")
    r = run(src, "--vocab", tmp_path / "vocab.json", "--out", tmp_path / "o")
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output


def test_vocabulary_file_problems(tmp_path):
    src = save_pt(tutorial("lstm"), tmp_path / "m.pt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    for vocab, message in [(tmp_path / "missing.json", "missing.json does not exist"),
                           (tmp_path / "latin1.txt", "latin1.txt is not UTF-8 text"),
                           (tmp_path / "empty.txt", "empty.txt is empty: give the training corpus")]:
        r = run(src, "--vocab", vocab, "--out", tmp_path / "o")
        assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output


def test_name_and_eval_refusals(tmp_path):
    src = save_pt(tutorial("lstm"), tmp_path / "m.pt")
    vocab = write_vocab(tmp_path, "list")
    (tmp_path / "short.txt").write_text("too short", encoding="utf-8")
    (tmp_path / "foreign.txt").write_text("ЖЖЖ" * 100, encoding="utf-8")
    for args, message in [
        (["--name", "no/slash"], "model name 'no/slash' cannot be served"),
        (["--name", ".hidden"], "model name '.hidden' cannot be served"),
        (["--eval", tmp_path / "short.txt"], "short.txt has 9 characters: held-out text needs at least 100"),
        (["--eval", tmp_path / "none.txt"], "--eval " + str(tmp_path / "none.txt") + " does not exist"),
        (["--eval", tmp_path / "foreign.txt"], "--eval foreign.txt: only 0 of its characters are in the vocabulary"),
    ]:
        r = run(src, "--vocab", vocab, "--out", tmp_path / "models", *args)
        assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, (args, r.output)
    assert not (tmp_path / "models").exists()


def test_safetensors_of_a_tied_model_and_a_dataparallel_prefix(tmp_path):
    model = tutorial("lstm")
    sd = {f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}  # nn.DataParallel's names
    save_file(sd, str(tmp_path / "dp.safetensors"))
    r = run(tmp_path / "dp.safetensors", "--vocab", write_vocab(tmp_path, "itos"), "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "embedding module.embedding.weight" in r.stdout and "module.lstm.*" in r.stdout
    assert load_checkpoint(tmp_path / "o").card["source"]["format"] == "safetensors"
    assert json.loads((tmp_path / "o" / "config.json").read_text())["card"]["vocab_source"] == "dict"


def test_serve_takes_models_as_a_shorthand():
    r = runner.invoke(cli, ["serve", "--help"])
    assert r.exit_code == 0 and "--models" in r.output
