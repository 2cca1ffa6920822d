"""models.quickstart: a text file to a measured model folder, and the pieces it is made of."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading

import numpy as np
import pytest

from models import quickstart as qs
from models.checkpoint import load_checkpoint
from models.errors import RnnscopeError
from models.evaluate import BestUnit, exercised_probes
from models.train import TrainConfig, lr_at, train

# Prose with quotes, brackets, line breaks and words: every prose probe has both classes in its tail.
PARAGRAPH = ('"Well," said she (quietly), "I do not know where he is."\nHe smiled at that. "Then we shall '
             'see [soon] enough," he answered, and went out.\n\n')
TEXT = PARAGRAPH * 40  # 5,000+ characters: the last 5% is held out


def tiny_plan(**kw) -> qs.Plan:
    base = dict(cell="lstm", layers=1, hidden=8, emb=8, minutes=0.05)
    base.update(kw)
    return qs.Plan(**base)


def unit(probe: str, score: float, metric: str = "auc") -> BestUnit:
    return BestUnit(probe, 0, "h", 1, score, 1, metric, 100)


@pytest.mark.parametrize("file, name", [("My Notes (2).txt", "my-notes-2"), ("emma.txt", "emma"),
                                        ("__init__.py", "init"), ("...txt", "my-model"), ("Ünïcode.txt", "n-code")])
def test_default_name_is_servable(tmp_path, file, name):
    assert qs.default_name(tmp_path / file) == name


def test_stream_shape_keeps_each_stream_at_least_two_chunks_long():
    assert qs.stream_shape(10_000_000) == (32, 200)
    assert qs.stream_shape(2_000) == (9, 100)
    for n in (2_000, 5_000, 40_000, 130_000, 10_000_000):
        batch, seq = qs.stream_shape(n)
        assert 1 <= batch <= 32 and (n - 1) // batch >= 2 * seq


def test_probes_are_scored_only_where_the_text_exercises_them():
    prose = exercised_probes(TEXT)
    assert prose == ["quotes", "brackets", "bracket_depth", "line_position", "word_start", "vowel"]  # no indents
    assert "brackets" not in exercised_probes(TEXT.replace("(", "").replace(")", "").replace("[", "").replace("]", ""))
    code = "def f(x):\n    # add one\n    return x + 1  # done\n\n\ns = 'a string'\n" * 30
    assert {"comment", "string", "short_string"} <= set(exercised_probes(code, code=True))
    assert "comment" not in exercised_probes(code)  # Python's probes only when asked for


def test_opening_unit_prefers_a_real_quote_cell_then_the_clearest_unit():
    assert qs.opening_unit([unit("vowel", 0.999), unit("quotes", 0.95)]).probe == "quotes"
    # A weak quote unit is not the quote cell: the unit furthest above its own bar wins.
    assert qs.opening_unit([unit("quotes", 0.7), unit("line_position", 0.95, "pearson"),
                            unit("vowel", 0.97)]).probe == "line_position"
    assert qs.opening_unit([]) is None


def test_example_text_starts_at_a_paragraph_and_never_at_a_quote_mark():
    held = ('cut off in the middle."\n\n"Yes," she said.\n\nA line with no quote.\n\nHe said, "Go."\n'
            + "more text here\n" * 100)
    ex = qs.example_text(held, "quotes", limit=200)
    assert ex.startswith("A line with no quote.\n") and ex.endswith("\n") and len(ex) <= 200
    # Other probes: the first paragraph that starts with a letter.
    assert qs.example_text(held, "vowel", limit=200).startswith("A line with no quote.")
    # No paragraph break at all: from the second line (the first may be cut mid-word).
    assert qs.example_text("ut off\nsecond line\n" * 20, "vowel", limit=100).startswith("second line\n")


def test_time_sized_runs_anneal_over_their_seconds():
    cfg = TrainConfig(data="x", out="y", lr=1e-2, lr_min=1e-3, steps=10**9, anneal_seconds=60)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-2)
    assert lr_at(cfg, 5, 30.0) == pytest.approx(5.5e-3)
    assert lr_at(cfg, 9, 60.0) == pytest.approx(1e-3) == lr_at(cfg, 10, 600.0)
    assert lr_at(TrainConfig(data="x", out="y", lr=1e-2, lr_min=1e-3, steps=10), 5) == pytest.approx(5.5e-3)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("dir", "is a folder: give one UTF-8 text file"),
    (b"\xff\xfe bad bytes" * 300, "is not UTF-8 text (invalid start byte at byte 0)"),
    ("short text", "has 10 characters; quickstart needs at least 2,000 (5% is held out to measure the model)"),
])
def test_bad_text_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "mine.txt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RnnscopeError, match="^TEXT ") as e:
        qs.read_text(path)
    assert message in str(e.value)


def write_text(folder, name: str = "story.txt"):
    path = folder / name
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def text_file(tmp_path):
    return write_text(tmp_path)


def test_a_huge_text_is_refused_before_it_is_read(text_file, monkeypatch):
    monkeypatch.setattr(qs, "MAX_BYTES", 4_000)
    with pytest.raises(RnnscopeError, match=r"quickstart reads at most 0 MB .*head -c 100M"):
        qs.read_text(text_file)


def test_quickstart_writes_a_measured_servable_folder(tmp_path, text_file, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    said = []
    done = qs.quickstart(text_file, tmp_path / "models" / "story", tiny_plan(), progress=False, say=said.append)
    folder = tmp_path / "models" / "story"
    assert done.path == folder
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "atlas.json", "config.json", "model.safetensors"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["story"]  # no staging folder left
    assert list((tmp_path / "tmp").glob("rnnscope-quickstart-*")) == []  # nor the resume state
    card = load_checkpoint(folder).card
    assert done.card == card and done.result.stopped_by == "time budget" and done.result.steps > 0
    assert card["quickstart"]["text"] == "story.txt" and card["quickstart"]["minutes"] == 0.05
    assert card["quickstart"]["probes"] == exercised_probes(TEXT[-len(TEXT) // 20:])
    assert list(card["probe_units"]) == card["quickstart"]["probes"]
    assert card["val_chars"] == len(TEXT) - int(len(TEXT) * 0.95) and np.isfinite(card["val_bpc"])
    assert done.opening is not None and card["example_text"] in TEXT
    atlas = json.loads((folder / "atlas.json").read_text(encoding="utf-8"))
    assert atlas["model"]["name"] == "story"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# story\n") and "quickstart story.txt --minutes 0.05" in readme
    assert said[0].startswith(f"training a 1×8 LSTM on {int(len(TEXT) * 0.95):,} characters of story.txt") and any(s.startswith("held-out: ") for s in said)


def test_an_existing_model_is_replaced_only_with_force(tmp_path, text_file):
    target = tmp_path / "models" / "story"
    qs.quickstart(text_file, target, tiny_plan(), progress=False, say=lambda s: None)
    first = (target / "model.safetensors").read_bytes()
    with pytest.raises(RnnscopeError, match="already holds a model: pass --force to replace it"):
        qs.quickstart(text_file, target, tiny_plan(), progress=False, say=lambda s: None)
    assert (target / "model.safetensors").read_bytes() == first
    qs.quickstart(text_file, target, tiny_plan(seed=7), force=True, progress=False, say=lambda s: None)
    assert (target / "model.safetensors").read_bytes() != first
    other = tmp_path / "models" / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RnnscopeError, match="is a folder that is not an rnnscope model"):
        qs.quickstart(text_file, other, tiny_plan(), force=True, progress=False, say=lambda s: None)
    assert (other / "keep.txt").read_text() == "mine"


def test_a_failed_measurement_leaves_nothing_under_the_name(tmp_path, text_file, monkeypatch):
    def broken(*a, **kw):
        raise RnnscopeError("atlas broke")

    monkeypatch.setattr(qs, "write_atlas", broken)
    with pytest.raises(RnnscopeError, match="atlas broke"):
        qs.quickstart(text_file, tmp_path / "models" / "story", tiny_plan(), progress=False, say=lambda s: None)
    assert list((tmp_path / "models").iterdir()) == []


def test_ctrl_c_stops_training_at_a_step_and_keeps_the_model(tmp_path, text_file):
    cfg = TrainConfig(data=str(text_file), out=str(tmp_path / "out"), run_dir=str(tmp_path / "run"), layers=1,
                      hidden=8, emb=8, seq_len=20, batch=4, steps=10**9, eval_every=10**6, progress=False,
                      time_budget_min=2.0, stop_on_interrupt=True)
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = train(cfg)
    finally:
        timer.cancel()
    assert result.stopped_by == "Ctrl-C" and result.steps > 0 and result.seconds < 60
    assert load_checkpoint(tmp_path / "out").card["train_steps"] == result.steps  # validated and saved at the stop
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back
