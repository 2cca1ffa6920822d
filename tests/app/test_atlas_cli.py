"""`rnnscope atlas MODEL [--text FILE] [--chars N]` on a tiny model, and its one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import cli
from app.probe.service import weights_fingerprint
from models.atlas import ATLAS_FILE, load_atlas
from tests.conftest import write_tiny_model

runner = CliRunner()
HELD_OUT = ('"Is it far?" she asked. "Not very," said he, (smiling).\n' * 6)


def test_atlas_from_a_text_file_by_model_name(tmp_path, monkeypatch):
    write_tiny_model(tmp_path / "models" / "tiny", "lstm", card={"corpus": "tiny"})
    monkeypatch.setenv("RNNSCOPE_MODELS_DIR", str(tmp_path / "models"))
    text = tmp_path / "held.txt"
    text.write_text(HELD_OUT, encoding="utf-8")
    r = runner.invoke(cli, ["atlas", "tiny", "--text", str(text), "--chars", "200"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "models" / "tiny"
    assert f"tiny: atlas of 200 characters from {text}" in r.stdout and str(folder / ATLAS_FILE) in r.stdout
    atlas = load_atlas(folder)
    assert atlas["text"] == HELD_OUT[:200]
    assert set(atlas["layers"]) == {"0", "1"} and set(atlas["layers"]["1"]) == {"h", "c", "i", "f", "g", "o", "kept", "written"}
    assert len(atlas["layers"]["0"]["h"]["hist"]) == 16  # one histogram per unit
    assert "pushes" in atlas["layers"]["1"]["h"] and "pushes" not in atlas["layers"]["0"]["h"]
    assert atlas["model"] == {"name": "tiny", "weights_sha256": weights_fingerprint(folder)}


def test_atlas_finds_the_corpus_held_out_text_and_takes_a_folder(tmp_path, monkeypatch):
    folder = write_tiny_model(tmp_path / "austen-tiny", "gru", card={"corpus": "austen"})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "austen.val.txt").write_text(HELD_OUT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNSCOPE_MODELS_DIR", str(tmp_path / "nowhere"))
    r = runner.invoke(cli, ["atlas", str(folder)])
    assert r.exit_code == 0, r.output
    assert f"atlas of {len(HELD_OUT)} characters from {tmp_path / 'data' / 'austen.val.txt'}" in r.stdout
    assert json.loads((folder / ATLAS_FILE).read_text())["card"]["source"] == "austen"


def test_atlas_errors_are_one_line_and_exit_2(tmp_path, monkeypatch):
    models = tmp_path / "models"
    write_tiny_model(models / "tiny", "rnn", layers=1, hidden=8, card={"corpus": "tiny"})
    write_tiny_model(models / "py", "rnn", layers=1, hidden=8, card={"corpus": "python-stdlib"})
    monkeypatch.setenv("RNNSCOPE_MODELS_DIR", str(models))
    monkeypatch.chdir(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    cases = [
        (["atlas", "nope"], "unknown model 'nope'"),
        (["atlas", "tiny"], "the model card names corpus 'tiny', which has no default held-out text: pass --text FILE"),
        (["atlas", "py"], "build it with `rnnscope corpus python-stdlib --out data/python.txt`"),
        (["atlas", "tiny", "--text", str(tmp_path / "missing.txt")], "cannot read"),
        (["atlas", "tiny", "--text", str(short)], "the atlas needs at least 100 characters of held-out text"),
        (["atlas", "tiny", "--text", str(short), "--chars", "5"], "--chars"),
    ]
    for args, message in cases:
        r = runner.invoke(cli, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
    assert not (models / "tiny" / ATLAS_FILE).exists()


def test_atlas_refuses_to_label_weights_that_changed_while_it_was_built(tmp_path, monkeypatch):
    """Training swaps checkpoints in whole; an atlas of the old weights must not claim the new ones."""
    import models.atlas

    folder = write_tiny_model(tmp_path / "training", "lstm", card={"corpus": "tiny"})
    text = tmp_path / "held.txt"
    text.write_text(HELD_OUT, encoding="utf-8")
    real_build = models.atlas.build_atlas

    def build_then_retrain(ck, held_out, **kw):
        atlas = real_build(ck, held_out, **kw)
        write_tiny_model(folder, "lstm", seed=9, card={"corpus": "tiny"})  # a training save lands meanwhile
        return atlas

    monkeypatch.setattr(models.atlas, "build_atlas", build_then_retrain)
    r = runner.invoke(cli, ["atlas", str(folder), "--text", str(text)])
    assert r.exit_code == 2 and "was rewritten while the atlas was being built" in r.output
    assert not (folder / ATLAS_FILE).exists()
