"""A broken checkpoint at start-up costs only itself: the server logs why it skipped it and serves the rest.

Real `rnnscope serve` processes; the reasons are read from the process's own log output.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request

import pytest

from tests.conftest import write_tiny_model

from .conftest import serving

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def broken_models(root):
    """One good model and five broken ones, each broken differently."""
    good = write_tiny_model(root / "tiny-lstm", "lstm", seed=3)
    write_tiny_model(root / "tiny-gru", "gru", seed=4)
    # garbage where the weights should be
    shutil.copytree(good, root / "garbage-weights")
    (root / "garbage-weights" / "model.safetensors").write_bytes(b"\x00\xffnot a safetensors file" * 100)
    # weights cut off half-way (a copy interrupted)
    shutil.copytree(good, root / "truncated-weights")
    weights = root / "truncated-weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    # config.json alone
    (root / "missing-weights").mkdir()
    shutil.copy(good / "config.json", root / "missing-weights" / "config.json")
    # config.json that is not JSON
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text("{not json", encoding="utf-8")
    shutil.copy(good / "model.safetensors", root / "bad-config" / "model.safetensors")
    # weights of another shape than config.json says
    write_tiny_model(root / "wrong-shape", "lstm", hidden=8)
    config = json.loads((good / "config.json").read_text(encoding="utf-8"))
    (root / "wrong-shape" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return ["garbage-weights", "truncated-weights", "missing-weights", "bad-config", "wrong-shape"]


def test_broken_checkpoints_are_skipped_with_logged_reasons_and_the_rest_serve(tmp_path):
    models = tmp_path / "models"
    broken = broken_models(models)
    with serving(models, tmp_path / "data", tmp_path / "serve.log") as server:
        status, body = get(server.base + "/api/v1/models")
        assert status == 200
        assert sorted(m["name"] for m in json.loads(body)) == ["tiny-gru", "tiny-lstm"]
        status, page = get(server.base + "/?text=" + urllib.request.quote('"Hi," she said.'))
        assert status == 200 and 'class="ch' in page
        for name in broken:  # a skipped model is simply not installed
            status, body = get(f"{server.base}/?model={name}&text=ab")
            assert status == 422 and "unknown model" in body
        log = server.log()
    reasons = dict(re.findall(r"skipping model ([\w-]+): (.+)", log))
    assert sorted(reasons) == sorted(broken), log[-3000:]
    assert "is corrupt" in reasons["garbage-weights"] and "restore it or retrain" in reasons["garbage-weights"]
    assert "is corrupt" in reasons["truncated-weights"]
    assert "model.safetensors is missing" in reasons["missing-weights"]
    assert "config.json" in reasons["bad-config"]
    assert "does not match config.json" in reasons["wrong-shape"]
    assert "Traceback" not in log
    assert "serving 2 model(s)" in log


def test_with_every_checkpoint_broken_the_server_still_starts_and_says_why(tmp_path):
    models = tmp_path / "models"
    broken = broken_models(models)
    shutil.rmtree(models / "tiny-lstm")
    shutil.rmtree(models / "tiny-gru")
    with serving(models, tmp_path / "data", tmp_path / "serve.log") as server:
        assert get(server.base + "/healthz") == (200, '{"status":"ok","models":0}')
        status, page = get(server.base + "/")
        assert status == 200 and "No models are installed" in page
        for name in broken:
            assert f"<code>{name}</code>" in page  # the skipped folders are listed with their reasons
        status, body = get(server.base + "/api/v1/models")
        assert status == 200 and json.loads(body) == []
        log = server.log()
    assert "Traceback" not in log and "no models found" in log
