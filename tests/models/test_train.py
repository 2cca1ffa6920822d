import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.errors import RnnscopeError
from models.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
RNNSCOPE = shutil.which("rnnscope", path=str(Path(sys.executable).parent)) or "rnnscope"
PROSE = ('"Well," said she, "I do not know." He smiled. "Then we shall see."\n\n' * 40)


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "prose.txt"
    p.write_text(PROSE, encoding="utf-8")
    return p


def _cfg(tmp_path, data, **kw):
    base = dict(data=str(data), out=str(tmp_path / "out"), run_dir=str(tmp_path / "run"), cell="lstm", layers=1,
                hidden=24, emb=8, seq_len=20, batch=4, steps=12, eval_every=4, lr=3e-3, lr_min=3e-4, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(folder):
    return {k: v.clone() for k, v in load_checkpoint(folder).model.state_dict().items()}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, data_file, cell):
    # The uninterrupted run, with eval at every 4 steps so the best checkpoint is the last one.
    full = train(_cfg(tmp_path / "a", data_file, cell=cell, dropout=0.0))
    # The same run stopped at step 8 (steps=8 would change the schedule, so stop via the
    # schedule-neutral route: train 8 of 12 steps by cutting the loop with a tiny budget).
    part_cfg = _cfg(tmp_path / "b", data_file, cell=cell)
    part_cfg.steps = 12
    import models.train as mt

    real_agree = mt._agree
    calls = {"n": 0}

    def stop_after_8(flag, world):
        calls["n"] += 1
        return calls["n"] > 8

    mt._agree = stop_after_8
    try:
        part_cfg.time_budget_min = 1000.0
        first = train(part_cfg)
    finally:
        mt._agree = real_agree
    assert first.steps == 8 and first.stopped_by == "time budget"
    resumed = train(_cfg(tmp_path / "b", data_file, cell=cell, resume=True))
    assert resumed.steps == 12 and resumed.chars_seen == full.chars_seen
    a = torch.load(tmp_path / "a" / "run" / "resume.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "run" / "resume.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_tiny_model_overfits_a_short_text(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("hello world, hello rnn. " * 20)
    result = train(_cfg(tmp_path, p, hidden=64, steps=300, eval_every=300, seq_len=24, batch=2, lr=1e-2, lr_min=1e-3))
    # validation is the file's held-out tail, the same repeated phrase
    assert result.best_val_bpc < 0.1, result.best_val_bpc


def test_serving_checkpoint_has_a_model_card(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    card = cfg["card"]
    for key in ("corpus", "corpus_sha256", "train_steps", "chars_seen", "val_bpc", "created", "hardware", "training_seconds"):
        assert key in card, key
    assert card["chars_seen"] == 12 * 4 * 20 and card["train_steps"] == 12
    assert cfg["code_version"]


def test_init_from_committed_weights_with_fresh_optimizer(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    before = _weights(tmp_path / "out")
    result = train(_cfg(tmp_path, data_file, out=str(tmp_path / "out2"), run_dir=str(tmp_path / "run2"),
                        init=str(tmp_path / "out"), steps=4))
    assert result.steps == 4
    card = load_checkpoint(tmp_path / "out2").card
    assert card["train_steps"] == 16 and card["initialised_from"].endswith("out")
    first_seconds = load_checkpoint(tmp_path / "out").card["training_seconds"]
    assert card["training_seconds"] >= first_seconds  # the parent's time carries over, rounded once
    assert repr(card["training_seconds"]) == repr(round(card["training_seconds"], 1))
    after = _weights(tmp_path / "out2")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bad_inputs_fail_clearly_and_keep_saved_work(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    saved = (tmp_path / "out" / "model.safetensors").read_bytes()
    with pytest.raises(RnnscopeError, match="does not exist"):
        train(_cfg(tmp_path, tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(RnnscopeError, match="is empty"):
        train(_cfg(tmp_path, empty))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(RnnscopeError, match="not UTF-8 \\(bad byte at offset 3\\)"):
        train(_cfg(tmp_path, latin))
    with pytest.raises(RnnscopeError, match="unknown cell type 'lstmm'"):
        train(_cfg(tmp_path, data_file, cell="lstmm"))
    with pytest.raises(RnnscopeError, match="no resume state"):
        train(_cfg(tmp_path, data_file, run_dir=str(tmp_path / "elsewhere"), resume=True))
    (tmp_path / "run" / "resume.pt").write_bytes(b"truncated")
    with pytest.raises(RnnscopeError, match="unreadable"):
        train(_cfg(tmp_path, data_file, resume=True))
    with pytest.raises(RnnscopeError, match="no CUDA GPU"):
        if torch.cuda.is_available():
            raise RnnscopeError("no CUDA GPU (skipped: a GPU is present)")
        train(_cfg(tmp_path, data_file, device="cuda"))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == saved


def test_cli_reports_errors_in_one_line(tmp_path):
    r = subprocess.run([RNNSCOPE, "train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: data file") and "Traceback" not in r.stderr
    r = subprocess.run([RNNSCOPE, "corpus", "shakespeare", "--out", str(tmp_path / "c.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown corpus 'shakespeare'" in r.stderr


def test_cli_sample_streams_text(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    r = subprocess.run([RNNSCOPE, "sample", str(tmp_path / "out"), "--prime", '"Well', "--length", "40", "--seed", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('"Well') and len(r.stdout.rstrip("\n")) == 5 + 40
    again = subprocess.run([RNNSCOPE, "sample", str(tmp_path / "out"), "--prime", '"Well', "--length", "40", "--seed", "3"],
                           capture_output=True, text=True)
    assert again.stdout == r.stdout


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, data_file):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-port", "29531", "-m", "app.cli", "train",
         "--data", str(data_file), "--out", str(tmp_path / "ddp"), "--run-dir", str(tmp_path / "ddp-run"),
         "--layers", "1", "--hidden", "16", "--emb", "8", "--seq-len", "20", "--batch", "2",
         "--steps", "6", "--eval-every", "3", "--no-progress", "--threads", "1"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    card = load_checkpoint(tmp_path / "ddp").card
    assert card["chars_seen"] == 6 * 2 * 2 * 20  # both ranks' streams counted
    assert card["batch"] == 4 and card["hardware"].startswith("2 x")
    lines = r.stderr.splitlines()  # only rank 0 logs its validations and the summary
    assert [line.split(":")[0] for line in lines if line.startswith("step ")] == ["step 3", "step 6"]
    assert sum(line.startswith("stopped by steps at step 6") for line in lines) == 1


def _torchrun_train(data_file, out, run_dir, *extra):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2", "--master-port", str(port),
         "-m", "app.cli", "train", "--data", str(data_file), "--out", str(out), "--run-dir", str(run_dir),
         "--layers", "1", "--hidden", "16", "--emb", "8", "--seq-len", "20", "--batch", "2", "--dropout", "0.2",
         "--steps", "6", "--eval-every", "2", "--no-progress", "--threads", "1", *extra],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return torch.load(Path(run_dir) / "resume.pt", weights_only=True)


def test_torchrun_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, data_file):
    """Each process's carried state and RNG (dropout on) are saved and restored, not only rank 0's."""
    full = _torchrun_train(data_file, tmp_path / "a", tmp_path / "a-run")
    part = _torchrun_train(data_file, tmp_path / "b", tmp_path / "b-run", "--stop-at", "3")
    assert part["step"] == 3 and len(part["ranks"]) == 2
    assert not torch.equal(part["ranks"][0]["carry"][0][0], part["ranks"][1]["carry"][0][0])
    resumed = _torchrun_train(data_file, tmp_path / "b", tmp_path / "b-run", "--resume")
    assert resumed["step"] == full["step"] == 6
    for k in full["model"]:
        assert torch.equal(full["model"][k], resumed["model"][k]), k
    with pytest.raises(RnnscopeError, match="saved by 2 process\\(es\\); resume with the same number"):
        train(_cfg(tmp_path, data_file, out=str(tmp_path / "b"), run_dir=str(tmp_path / "b-run"), resume=True))


def test_a_fresh_run_never_overwrites_saved_work(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    saved = (tmp_path / "out" / "model.safetensors").read_bytes()
    resume = (tmp_path / "run" / "resume.pt").read_bytes()
    with pytest.raises(RnnscopeError, match="resume state is already at .*continue it with --resume"):
        train(_cfg(tmp_path, data_file))
    with pytest.raises(RnnscopeError, match="already holds a checkpoint: continue it with --init"):
        train(_cfg(tmp_path, data_file, run_dir=str(tmp_path / "other-run")))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == saved
    assert (tmp_path / "run" / "resume.pt").read_bytes() == resume


def test_continuing_in_place_keeps_the_weights_unless_beaten(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, steps=40, eval_every=40))
    before = load_checkpoint(tmp_path / "out")
    saved = (tmp_path / "out" / "model.safetensors").read_bytes()
    # lr 0: the weights cannot improve, so the folder must keep what it had
    result = train(_cfg(tmp_path, data_file, run_dir=str(tmp_path / "run2"), init=str(tmp_path / "out"),
                        steps=4, eval_every=2, lr=0.0, lr_min=0.0))
    assert result.steps == 4
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == saved
    assert load_checkpoint(tmp_path / "out").card["val_bpc"] == before.card["val_bpc"]
    # a run that learns replaces them, and its card counts both runs' steps
    result = train(_cfg(tmp_path, data_file, run_dir=str(tmp_path / "run3"), init=str(tmp_path / "out"),
                        steps=40, eval_every=40, lr=3e-3))
    after = load_checkpoint(tmp_path / "out")
    assert after.card["val_bpc"] < before.card["val_bpc"]
    assert after.card["train_steps"] == 80


def test_a_corrupt_corpus_card_is_one_clear_error(tmp_path, data_file):
    train_file = tmp_path / "c.txt"
    train_file.write_text(Path(data_file).read_text())
    (tmp_path / "c.val.txt").write_text("some validation text\n")
    (tmp_path / "c.meta.json").write_text("{not json")
    with pytest.raises(RnnscopeError, match="corpus card .*c.meta.json is not valid JSON"):
        train(_cfg(tmp_path, train_file))
    (tmp_path / "c.meta.json").write_text("[1, 2]")
    with pytest.raises(RnnscopeError, match="is not a JSON object"):
        train(_cfg(tmp_path, train_file))
    assert not (tmp_path / "out").exists()


def test_stop_at_ends_on_the_schedule_and_refuses_a_step_already_passed(tmp_path, data_file):
    first = train(_cfg(tmp_path, data_file, steps=12, eval_every=5, stop_at=7))
    assert first.steps == 7 and first.stopped_by == "--stop-at 7"
    assert [h["step"] for h in first.history] == [5, 7]
    with pytest.raises(RnnscopeError, match="--stop-at 7 is not after step 7"):
        train(_cfg(tmp_path, data_file, steps=12, eval_every=5, stop_at=7, resume=True))
    rest = train(_cfg(tmp_path, data_file, steps=12, eval_every=5, stop_at=12, resume=True))
    assert rest.steps == 12
    assert [h["step"] for h in rest.history] == [5, 7, 10, 12]  # validated once at the end, not twice


def test_init_applies_this_runs_dropout_and_keeps_the_weights(tmp_path, data_file):
    train(_cfg(tmp_path, data_file))
    init = load_checkpoint(tmp_path / "out")
    assert init.model.config.dropout == 0.0
    # One step at lr 0 leaves the weights as they were, so only the dropout setting differs.
    train(_cfg(tmp_path, data_file, out=str(tmp_path / "out2"), run_dir=str(tmp_path / "run2"),
               init=str(tmp_path / "out"), steps=1, eval_every=1, lr=0.0, lr_min=0.0, dropout=0.3))
    after = load_checkpoint(tmp_path / "out2")
    assert after.model.config.dropout == 0.3
    assert json.loads((tmp_path / "out2" / "config.json").read_text())["model"]["dropout"] == 0.3
    before = init.model.state_dict()
    for k, v in after.model.state_dict().items():
        assert torch.equal(before[k], v), k


def test_resume_keeps_the_saved_runs_schedule(tmp_path, data_file):
    """A bare --resume must not fall back to the default --steps/--lr: the saved run's own schedule goes on."""
    full = train(_cfg(tmp_path / "a", data_file, steps=12, lr=4e-3, lr_min=1e-4))
    train(_cfg(tmp_path / "b", data_file, steps=12, lr=4e-3, lr_min=1e-4, stop_at=7))
    bare = TrainConfig(data=str(data_file), out=str(tmp_path / "b" / "out"), run_dir=str(tmp_path / "b" / "run"),
                       resume=True, eval_every=4, progress=False)  # every schedule field left at its default
    rest = train(bare)
    assert rest.steps == 12 and rest.chars_seen == full.chars_seen
    a = torch.load(tmp_path / "a" / "run" / "resume.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "resume.pt", weights_only=True)
    assert b["train_config"]["steps"] == 12 and b["train_config"]["lr"] == 4e-3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_cli_resume_refuses_a_different_schedule_and_keeps_the_run(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, steps=12, stop_at=7))
    before = (tmp_path / "run" / "resume.pt").read_bytes()
    base = [RNNSCOPE, "train", "--data", str(data_file), "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run"),
            "--resume", "--no-progress"]
    r = subprocess.run(base + ["--steps", "99", "--lr", "3e-3"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--steps 12 (asked: 99)" in r.stderr and "--lr " not in r.stderr  # the same --lr is no clash
    assert (tmp_path / "run" / "resume.pt").read_bytes() == before
    r = subprocess.run(base + ["--steps", "12", "--eval-every", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming at step 7 of 12" in r.stdout + r.stderr and "stopped by steps at step 12" in r.stdout + r.stderr
