"""Training snapshots in the JSON API and the registry (issue #23 part 2): /api/v1/models lists each model's
steps, /api/v1/trace takes `snapshot` and answers exactly what the snapshot's weights compute, traces of
different weights never share a cache entry, loaded snapshots are bounded, and every bad step is refused
with the steps there are.

The models are trained here for a few steps with snapshots, as tests/models/test_snapshots.py makes them
(`snapshot_models` is imported by the page, probe and browser tests too).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.registry import SNAPSHOTS_KEPT, Registry
from models.checkpoint import load_checkpoint
from models.snapshots import list_snapshots, load_snapshot, log_schedule, read_timeline, record_probe_units
from models.trace import run_trace
from models.train import TrainConfig, train

from tests.app.conftest import make_client
from tests.conftest import write_tiny_model

PROSE = ('"Well," said she, "I do not know." He smiled. "Then we shall see."\n\n' * 40)
SNAP = "snap-lstm"  # trained with 6 snapshots over 12 steps, probe units recorded
PLAIN = "plain-gru"  # no snapshots
STEPS = log_schedule(6, 12)  # [0, 1, 2, 3, 6, 12]
TEXT = 'He said, "I do not know."\nShe smiled.'


def snapshot_models(root: Path) -> Path:
    """A models folder: snap-lstm (a 1×24 LSTM trained 12 steps, 6 snapshots, quotes and vowel probe units
    recorded on held-out-like text) and plain-gru (tiny random weights, no snapshots). A few seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = root / "prose.txt"
        data.write_text(PROSE, encoding="utf-8")
        models = root / "models"
        train(TrainConfig(data=str(data), out=str(models / SNAP), run_dir=str(root / "run"), cell="lstm", layers=1,
                          hidden=24, emb=8, seq_len=20, batch=4, steps=12, eval_every=4, lr=3e-3, lr_min=3e-4,
                          progress=False, snapshots=6))
        record_probe_units(models / SNAP, PROSE[:1200], ("quotes", "vowel"))
        write_tiny_model(models / PLAIN, "gru", layers=1, hidden=8, seed=5)
    finally:
        torch.set_num_threads(before)
    return models


@pytest.fixture(scope="module")
def snap_dir(tmp_path_factory) -> Path:
    return snapshot_models(tmp_path_factory.mktemp("snapshots"))


@pytest.fixture()
def snap_client(snap_dir):
    with make_client(snap_dir, default_model=SNAP) as c:
        yield c


def trace(client, **body):
    return client.post("/api/v1/trace", json={"model": SNAP, "text": TEXT, **body})


def test_models_lists_each_models_snapshot_steps(snap_client, snap_dir):
    by_name = {m["name"]: m for m in snap_client.get("/api/v1/models").json()}
    assert set(by_name) == {SNAP, PLAIN}  # the snapshots folder inside snap-lstm is no model of its own
    assert by_name[SNAP]["snapshots"] == STEPS == [s.step for s in list_snapshots(snap_dir / SNAP)]
    assert by_name[PLAIN]["snapshots"] == []


def test_the_timeline_endpoint_says_what_each_step_is(snap_client, snap_dir):
    r = snap_client.get(f"/api/v1/models/{SNAP}/snapshots")
    assert r.status_code == 200, r.text
    body = r.json()
    tl = read_timeline(snap_dir / SNAP)
    assert body["model"] == SNAP and body["prime"] == tl["sample"]["prime"]
    assert [s["step"] for s in body["snapshots"]] == STEPS
    for got, entry in zip(body["snapshots"], tl["snapshots"]):
        assert got["chars_seen"] == entry["chars_seen"] == entry["step"] * 4 * 20
        assert got["val_bpc"] == entry["val_bpc"] and got["sample"] == entry["sample"] and len(got["sample"]) == 300
        assert set(got["probe_units"]) == {"quotes", "vowel"}
        assert got["probe_units"]["quotes"] == entry["probe_units"]["quotes"]
    assert snap_client.get(f"/api/v1/models/{PLAIN}/snapshots").json() == {"model": PLAIN, "prime": "", "snapshots": []}
    missing = snap_client.get("/api/v1/models/nope/snapshots")
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["detail"]


@pytest.mark.parametrize("step", [STEPS[0], STEPS[3], STEPS[-1]])
def test_a_trace_of_a_snapshot_is_what_its_weights_compute(snap_client, snap_dir, step):
    r = trace(snap_client, snapshot=step, topk=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["snapshot"] == step
    ck = load_snapshot(snap_dir / SNAP, step)  # the float16 file, loaded straight with models/
    ref = run_trace(ck.model, ck.vocab, TEXT, topk=3)
    for state in ("h", "c", "f", "written"):
        got = np.array(body["layers"][0]["states"][state])
        np.testing.assert_allclose(got, ref.states[0][state], atol=2e-3, rtol=2e-3)  # float16 + 4 decimals
    assert [[p["char"] for p in row] for row in body["topk"][:10]] == \
        [[ck.vocab.chars[i] for i in ids] for ids in ref.topk_ids[:10]]
    assert body["surprisal_bits"][:-1] == pytest.approx([float(x) for x in ref.surprisal_bits[:-1]], abs=2e-3)


def test_each_step_and_the_final_weights_differ_and_never_share_a_cache_entry(snap_client, snap_dir):
    service = snap_client.app.state.service
    h = {}
    for step in (None, STEPS[1], STEPS[-1]):
        extra = {} if step is None else {"snapshot": step}
        body = trace(snap_client, layer=0, state="h", **extra).json()
        assert body["cached"] is False, step  # a trace of other weights is never the cached one of these
        assert body["snapshot"] == step
        h[step] = np.array(body["layers"][0]["states"]["h"])
    assert not np.allclose(h[None], h[STEPS[1]], atol=1e-3) and not np.allclose(h[STEPS[1]], h[STEPS[-1]], atol=1e-3)
    final = load_checkpoint(snap_dir / SNAP)  # the best checkpoint, float32: not the last snapshot's float16 copy
    np.testing.assert_allclose(h[None], run_trace(final.model, final.vocab, TEXT).states[0]["h"], atol=2e-3)
    runs = service.traces_run
    again = trace(snap_client, layer=0, state="c", units=[2], snapshot=STEPS[1]).json()
    assert again["cached"] is True and service.traces_run == runs  # stepping the unit at a step: free


def test_loaded_snapshots_are_bounded_and_reused(snap_client):
    registry = snap_client.app.state.registry
    loads = registry.snapshot_loads
    for step in STEPS:
        assert trace(snap_client, text=f"bounded {step}", layer=0, state="h", snapshot=step).status_code == 200
    assert registry.snapshots_loaded() == SNAPSHOTS_KEPT < len(STEPS)
    assert registry.snapshot_loads - loads == len(STEPS)
    trace(snap_client, text="bounded again", layer=0, state="h", snapshot=STEPS[-1])  # kept: not read again
    assert registry.snapshot_loads - loads == len(STEPS)
    trace(snap_client, text="bounded again", layer=0, state="h", snapshot=STEPS[0])  # dropped: read again
    assert registry.snapshot_loads - loads == len(STEPS) + 1 and registry.snapshots_loaded() == SNAPSHOTS_KEPT


@pytest.mark.parametrize("body, status, message", [
    ({"snapshot": 5}, 404, f"{SNAP} has no snapshot at step 5; its snapshots are at steps {', '.join(map(str, STEPS))}"),
    ({"model": PLAIN, "snapshot": 0}, 404, f"{PLAIN} has no training snapshots: leave the snapshot out for its final weights"),
    ({"snapshot": -1}, 422, "snapshot: Input should be greater than or equal to 0"),
    ({"snapshot": "2"}, 422, "snapshot: Input should be a valid integer"),
    ({"model": "nope", "snapshot": 2}, 404, "unknown model 'nope'"),
])
def test_a_bad_step_is_refused_with_the_steps_there_are(snap_client, body, status, message):
    r = trace(snap_client, **body)
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(message)


def test_the_registry_never_serves_a_snapshots_folder_as_a_model(tmp_path, snap_dir):
    # the model's own folder as the models folder: its snapshots/ (with a config.json copied in, even) is not a model
    shutil.copytree(snap_dir / SNAP, tmp_path / "one" / SNAP)
    inner = tmp_path / "one" / SNAP
    shutil.copy(inner / "config.json", inner / "snapshots" / "config.json")
    shutil.copy(inner / "model.safetensors", inner / "snapshots" / "model.safetensors")
    registry = Registry(inner, rescan_seconds=0)
    registry.refresh(force=True)
    assert registry.names() == [] and registry.skipped == {}
    # nor is any folder holding a timeline (a snapshots folder moved or renamed beside the models)
    shutil.copytree(inner / "snapshots", tmp_path / "two" / "old-run")
    shutil.copytree(inner, tmp_path / "two" / SNAP)
    registry = Registry(tmp_path / "two", rescan_seconds=0)
    registry.refresh(force=True)
    assert registry.names() == [SNAP] and registry.get(SNAP).steps == STEPS


def test_snapshots_appear_as_training_writes_them_and_a_foreign_timeline_is_not_served(tmp_path, snap_dir):
    models = tmp_path / "models"
    shutil.copytree(snap_dir / SNAP, models / SNAP, ignore=shutil.ignore_patterns("snapshots"))
    with make_client(models, default_model=SNAP) as c:
        assert c.get("/api/v1/models").json()[0]["snapshots"] == []
        shutil.copytree(snap_dir / SNAP / "snapshots", models / SNAP / "snapshots")  # a run writes its first ones
        assert c.get("/api/v1/models").json()[0]["snapshots"] == STEPS
        assert trace(c, snapshot=STEPS[2], layer=0, state="h").status_code == 200
        # a timeline of another model (here: a wider one) beside this checkpoint is not this model's past
        path = models / SNAP / "snapshots" / "timeline.json"
        tl = json.loads(path.read_text())
        tl["model"]["hidden"] = 32
        path.write_text(json.dumps(tl))
        models_now = c.get("/api/v1/models").json()
        assert models_now[0]["snapshots"] == []  # the model itself is still served
        r = trace(c, snapshot=STEPS[2])
        assert r.status_code == 404 and "has no training snapshots" in r.json()["detail"]


def test_an_unreadable_snapshot_file_is_a_503_naming_the_step(tmp_path, snap_dir):
    models = tmp_path / "models"
    shutil.copytree(snap_dir / SNAP, models / SNAP)
    (models / SNAP / "snapshots" / f"step-{STEPS[3]:06d}.safetensors").write_bytes(b"not a safetensors file")
    with make_client(models, default_model=SNAP) as c:
        r = trace(c, snapshot=STEPS[3])
        assert r.status_code == 503
        assert r.json()["detail"].startswith(f"the snapshot of {SNAP} at step {STEPS[3]} cannot be loaded")
        assert trace(c, snapshot=STEPS[4]).status_code == 200  # the others are still served
