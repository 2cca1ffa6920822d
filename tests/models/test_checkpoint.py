import json

import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.errors import RnnscopeError

from .helpers import TEXT, tiny_model


def _logits(model, vocab):
    with torch.no_grad():
        return model(vocab.encode_tensor(TEXT)[None, :])[0]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_round_trip_gives_identical_logits(tmp_path, cell):
    model, vocab = tiny_model(cell)
    save_checkpoint(tmp_path / "m", model, vocab, {"corpus": "test", "val_bpc": 3.2})
    ck = load_checkpoint(tmp_path / "m")
    assert torch.equal(_logits(model, vocab), _logits(ck.model, ck.vocab))
    assert ck.card["corpus"] == "test"
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model"]["cell"] == cell and cfg["format_version"] == 1


def test_half_precision_weights_load_as_float32(tmp_path):
    model, vocab = tiny_model()
    save_checkpoint(tmp_path / "m", model, vocab, {}, half=True)
    ck = load_checkpoint(tmp_path / "m")
    assert ck.model.head.weight.dtype == torch.float32
    assert (_logits(model, vocab) - _logits(ck.model, ck.vocab)).abs().max().item() < 1e-2


def test_missing_corrupt_and_newer_checkpoints_fail_clearly(tmp_path):
    model, vocab = tiny_model()
    folder = save_checkpoint(tmp_path / "m", model, vocab, {})
    with pytest.raises(RnnscopeError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RnnscopeError, match="corrupt"):
        load_checkpoint(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(RnnscopeError, match="missing"):
        load_checkpoint(folder)
    save_checkpoint(folder, model, vocab, {})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RnnscopeError, match="newer than this rnnscope"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(RnnscopeError, match="corrupt"):
        load_checkpoint(folder)


def test_resave_replaces_atomically(tmp_path):
    model, vocab = tiny_model()
    save_checkpoint(tmp_path / "m", model, vocab, {"val_bpc": 2.0})
    save_checkpoint(tmp_path / "m", model, vocab, {"val_bpc": 1.5})
    assert load_checkpoint(tmp_path / "m").card["val_bpc"] == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_saved_folder_is_readable_by_other_users(tmp_path):
    model, vocab = tiny_model()
    folder = save_checkpoint(tmp_path / "m", model, vocab, {})
    assert folder.stat().st_mode & 0o777 == 0o755
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in folder.iterdir())
