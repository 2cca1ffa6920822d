"""Training snapshots: the schedule, the files and timeline, resume continuity, loading them back."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.corpora import load_corpus_files
from models.errors import RnnscopeError
from models.evaluate import validation_bpc
from models.snapshots import (SAMPLE, every_schedule, fixed_sample, list_snapshots, load_snapshot, log_schedule,
                              probe_timeline, read_timeline, record_probe_units, schedule_for)
from models.train import TrainConfig, train

RNNSCOPE = shutil.which("rnnscope", path=str(Path(sys.executable).parent)) or "rnnscope"
PROSE = ('"Well," said she, "I do not know." He smiled. "Then we shall see."\n\n' * 40)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread, or each one-character step waits on the other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "prose.txt"
    p.write_text(PROSE, encoding="utf-8")
    return p


def _cfg(root, data, **kw):
    base = dict(data=str(data), out=str(root / "out"), run_dir=str(root / "run"), cell="lstm", layers=1, hidden=24,
                emb=8, seq_len=20, batch=4, steps=12, eval_every=4, lr=3e-3, lr_min=3e-4, progress=False, snapshots=6)
    base.update(kw)
    return TrainConfig(**base)


def _snapshot_tensors(folder):
    out = {}
    for info in list_snapshots(folder):
        with safe_open(str(info.path), "pt") as f:
            out[info.step] = {k: f.get_tensor(k) for k in f.keys()}
    return out


@pytest.mark.parametrize("n,last", [(1, 5), (2, 5), (6, 5), (8, 1500), (12, 12000), (30, 40), (41, 40), (4, 3)])
def test_log_schedule_is_unique_sorted_and_ends_at_the_last_step(n, last):
    steps = log_schedule(n, last)
    assert len(steps) == n and len(set(steps)) == n
    assert steps == sorted(steps) and steps[-1] == last and steps[0] == (0 if n > 1 else last)
    assert all(0 <= s <= last for s in steps)


def test_log_schedule_is_log_spaced():
    steps = log_schedule(12, 12000)
    assert steps[:3] == [0, 1, 3]
    ratios = np.array(steps[2:]) / np.array(steps[1:-1])  # past the rounding of the first steps
    ideal = 12000 ** (1 / 10)
    assert np.all(np.abs(ratios / ideal - 1) < 0.25), ratios
    # dense early, sparse late: half the snapshots come in the first 1% of the run
    assert sum(s <= 120 for s in steps) >= 6


def test_every_schedule_includes_zero_and_the_last_step():
    assert every_schedule(5, 12) == [0, 5, 10, 12]
    assert every_schedule(4, 12) == [0, 4, 8, 12]
    assert every_schedule(50, 12) == [0, 12]


@pytest.mark.parametrize("snapshots,every,message", [
    (0, None, "--snapshots must be at least 1, got 0"),
    (-3, None, "--snapshots must be at least 1"),
    (14, None, "more snapshots than there are steps \\(0 to 12\\); use at most 13"),
    (None, 0, "--snapshot-every must be at least 1 step"),
    (4, 3, "give one of them"),
])
def test_bad_snapshot_options_fail_clearly_and_write_nothing(tmp_path, data_file, snapshots, every, message):
    with pytest.raises(RnnscopeError, match=message):
        schedule_for(snapshots, every, 12)
    with pytest.raises(RnnscopeError, match=message):
        train(_cfg(tmp_path, data_file, snapshots=snapshots, snapshot_every=every))
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_snapshots_files_and_timeline(tmp_path, data_file):
    result = train(_cfg(tmp_path, data_file))
    assert result.steps == 12
    folder = tmp_path / "out"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()  # the best checkpoint too
    schedule = log_schedule(6, 12)
    names = sorted(p.name for p in (folder / "snapshots").iterdir())
    assert names == sorted([f"step-{s:06d}.safetensors" for s in schedule] + ["timeline.json"])
    tl = read_timeline(folder)
    assert tl["schedule"] == schedule and tl["sample"] == SAMPLE
    assert tl["model"]["hidden"] == 24 and tl["vocab"]
    entries = tl["snapshots"]
    assert [e["step"] for e in entries] == schedule
    for e in entries:
        assert e["chars_seen"] == e["step"] * 4 * 20
        assert isinstance(e["val_bpc"], float) and 0 < e["val_bpc"] < 10
        assert len(e["sample"]) == SAMPLE["length"]
        assert (folder / "snapshots" / e["file"]).stat().st_mode & 0o777 == 0o644
        with safe_open(str(folder / "snapshots" / e["file"]), "pt") as f:
            assert f.metadata()["step"] == str(e["step"])
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert entries[-1]["val_bpc"] < entries[0]["val_bpc"]  # it learned
    assert [s.step for s in list_snapshots(folder)] == schedule == [s.step for s in list_snapshots(folder / "snapshots")]


def test_loaded_snapshot_is_the_trained_weights_in_float16_and_its_recorded_bpc_and_sample(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    final = torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["model"]  # float32 weights at step 12
    ck = load_snapshot(tmp_path / "out", 12)
    for k, v in ck.model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, final[k].half().float()), k
        assert torch.allclose(v, final[k], rtol=1e-3, atol=1e-6), k
    _, val_text, _ = load_corpus_files(tmp_path / "prose.txt")
    for info in list_snapshots(tmp_path / "out"):
        snap = load_snapshot(tmp_path / "out", info.step)
        assert snap.card["val_bpc"] == pytest.approx(validation_bpc(snap, val_text), abs=1e-4)
        assert snap.card["sample"] == fixed_sample(snap.model, snap.vocab)  # same prime and seed: reproducible
    with pytest.raises(RnnscopeError, match="no snapshot of step 7 \\(steps: 0, 1, 2, 3, 6, 12\\)"):
        load_snapshot(tmp_path / "out", 7)


def test_snapshot_every_in_a_run(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, snapshots=None, snapshot_every=5))
    assert [s.step for s in list_snapshots(tmp_path / "out")] == [0, 5, 10, 12]


def test_resume_continues_the_timeline_without_gaps_or_duplicates(tmp_path, data_file):
    train(_cfg(tmp_path / "a", data_file))
    first = train(_cfg(tmp_path / "b", data_file, stop_at=4))
    assert first.stopped_by == "--stop-at 4"
    assert [s.step for s in list_snapshots(tmp_path / "b" / "out")] == [0, 1, 2, 3]  # never one at the stop itself
    train(_cfg(tmp_path / "b", data_file, resume=True, stop_at=7))
    rest = train(_cfg(tmp_path / "b", data_file, resume=True))
    assert rest.steps == 12
    a, b = _snapshot_tensors(tmp_path / "a" / "out"), _snapshot_tensors(tmp_path / "b" / "out")
    assert list(a) == list(b) == log_schedule(6, 12)
    for step in a:
        for k in a[step]:
            assert torch.equal(a[step][k], b[step][k]), (step, k)
    ta, tb = read_timeline(tmp_path / "a" / "out"), read_timeline(tmp_path / "b" / "out")
    drop = ("training_seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in ta["snapshots"]] == \
           [{k: v for k, v in e.items() if k not in drop} for e in tb["snapshots"]]


def test_a_run_killed_after_a_snapshot_retakes_it_once(tmp_path, data_file):
    """Resume state older than the newest snapshot: the later snapshots are retaken, not duplicated."""
    train(_cfg(tmp_path / "a", data_file))
    train(_cfg(tmp_path / "b", data_file, eval_every=100, stop_at=3))
    saved = (tmp_path / "b" / "run" / "resume.pt").read_bytes()  # the run as it stood at step 3
    train(_cfg(tmp_path / "b", data_file, eval_every=100, resume=True, stop_at=8))  # takes the step-6 snapshot
    (tmp_path / "b" / "run" / "resume.pt").write_bytes(saved)  # as if killed before saving again after step 6
    train(_cfg(tmp_path / "b", data_file, eval_every=100, resume=True))
    tl = read_timeline(tmp_path / "b" / "out")
    assert [e["step"] for e in tl["snapshots"]] == log_schedule(6, 12)
    a, b = _snapshot_tensors(tmp_path / "a" / "out"), _snapshot_tensors(tmp_path / "b" / "out")
    for step in a:
        for k in a[step]:
            assert torch.equal(a[step][k], b[step][k]), (step, k)


def test_resume_refuses_other_snapshot_options_and_a_timeline_with_a_gap(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, stop_at=7))
    with pytest.raises(RnnscopeError, match="--snapshots 6 \\(asked: 8\\)"):
        train(_cfg(tmp_path, data_file, resume=True, snapshots=8, given=frozenset({"snapshots"})))
    (tmp_path / "out" / "snapshots" / "step-000002.safetensors").unlink()
    tl = read_timeline(tmp_path / "out")
    tl["snapshots"] = [e for e in tl["snapshots"] if e["step"] != 2]
    (tmp_path / "out" / "snapshots" / "timeline.json").write_text(json.dumps(tl))
    with pytest.raises(RnnscopeError, match="snapshots of steps \\[2\\] are not in"):
        train(_cfg(tmp_path, data_file, resume=True))
    # A run started without snapshots cannot grow a timeline half way through.
    train(_cfg(tmp_path / "plain", data_file, snapshots=None, stop_at=7))
    with pytest.raises(RnnscopeError, match="snapshots of steps \\[0, 1, 2, 3, 6\\] are not in"):
        train(_cfg(tmp_path / "plain", data_file, resume=True, snapshots=6, given=frozenset({"snapshots"})))


def test_a_fresh_run_never_overwrites_snapshots(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, steps=12, stop_at=2))
    shutil.rmtree(tmp_path / "run")  # the resume state is gone, the snapshots are not
    (tmp_path / "out" / "config.json").unlink()
    before = (tmp_path / "out" / "snapshots" / "timeline.json").read_bytes()
    with pytest.raises(RnnscopeError, match="already holds snapshots of another run"):
        train(_cfg(tmp_path, data_file))
    assert (tmp_path / "out" / "snapshots" / "timeline.json").read_bytes() == before


def test_best_checkpoint_saves_keep_an_in_place_runs_snapshots(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, steps=40, eval_every=40, snapshots=3))
    steps = [s.step for s in list_snapshots(tmp_path / "out")]
    # Continue the folder in place without snapshots: its new best weights must not drop the old timeline.
    train(_cfg(tmp_path, data_file, run_dir=str(tmp_path / "run2"), init=str(tmp_path / "out"), steps=40,
               eval_every=20, snapshots=None))
    assert [s.step for s in list_snapshots(tmp_path / "out")] == steps
    assert load_snapshot(tmp_path / "out", steps[-1]).model is not None
    assert not list(tmp_path.glob(".out.*"))  # no staging folders left behind


def test_probe_timeline_scores_every_snapshot(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, snapshots=3))
    rows = probe_timeline(tmp_path / "out", PROSE[:400], ("quotes",), max_chars=400)
    assert [r["step"] for r in rows] == [0, 1, 12]
    for r in rows:
        q = r["units"]["quotes"]
        assert q["metric"] == "auc" and 0.5 <= q["score"] <= 1.0 and q["state"] in ("h", "c", "i", "f", "g", "o",
                                                                                     "kept", "written")


def test_recorded_probe_units_go_into_the_timeline(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, snapshots=2))
    rows = record_probe_units(tmp_path / "out", PROSE[:300], ("quotes", "word_start"), max_chars=200)
    entries = read_timeline(tmp_path / "out")["snapshots"]
    assert [e["step"] for e in entries] == [r["step"] for r in rows] == [0, 12]
    for e, r in zip(entries, rows):
        assert e["probe_units"] == r["units"] and set(e["probe_units"]) == {"quotes", "word_start"}
        assert e["probe_chars"] == 200 and len(e["sample"]) == SAMPLE["length"]  # the rest of the entry stays
    assert load_snapshot(tmp_path / "out", 12).card["probe_units"]["quotes"]["metric"] == "auc"


def test_cli_snapshot_options(tmp_path, data_file):
    base = [RNNSCOPE, "train", "--data", str(data_file), "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run"),
            "--layers", "1", "--hidden", "16", "--emb", "8", "--seq-len", "20", "--batch", "4", "--steps", "6",
            "--eval-every", "3", "--threads", "1", "--no-progress"]
    for extra, message in ((["--snapshots", "0"], "--snapshots must be at least 1, got 0"),
                           (["--snapshots", "3", "--snapshot-every", "2"], "give one of them")):
        r = subprocess.run(base + extra, capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(base + ["--snapshot-every", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [s.step for s in list_snapshots(tmp_path / "out")] == [0, 2, 4, 6]
