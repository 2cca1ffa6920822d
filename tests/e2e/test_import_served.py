"""Tutorial models imported with the real CLI into the folder a running `rnnscope serve --models DIR` watches:
picked up without a restart, and POST /api/v1/trace's h and c are PyTorch's own nn.LSTM/nn.GRU/nn.RNN values.

No browser: this module only asks for its own server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_tiny_model
from tests.models.test_import_models import (CHARS, CORPUS, reference_states, save_pt, save_safetensors, tutorial,
                                             write_vocab)
from tests.share.server import CLI, ROOT, get_text, post_json, running_server

TEXT = CORPUS[:150]


def serving(models: Path, tmp: Path):
    """`rnnscope serve --models DIR`, with RNNSCOPE_MODELS_DIR pointing elsewhere: the flag must win."""
    return running_server(tmp / "not-this-one", tmp / "data", tmp / "serve.log", serve_args=("--models", str(models)))


def model_names(base: str) -> list[str]:
    with urllib.request.urlopen(base + "/api/v1/models", timeout=30) as r:
        return [m["name"] for m in json.loads(r.read())]


def import_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "import", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


# name -> (tutorial kind, its options, vocabulary kind, how it is saved)
IMPORTS = {
    "imp-lstm": ("lstm", {"batch_first": True}, "list", save_pt),
    "imp-gru": ("onehot-gru", {"batch_first": False, "bias": False}, "dict", save_safetensors),
    "imp-rnn": ("rnn", {"bias": False, "layers": 2}, "corpus", save_pt),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import-served")
    models = tmp / "models"
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    with serving(models, tmp) as base:
        assert model_names(base) == ["tiny-lstm"]
        built = {}
        for name, (kind, kw, vocab_kind, save) in IMPORTS.items():
            work = tmp / name
            work.mkdir()
            model = tutorial(kind, seed=len(built), **kw)
            src = save(model, work / ("weights.safetensors" if save is save_safetensors else "weights.pt"))
            r = import_cli(src, "--vocab", write_vocab(work, vocab_kind), "--out", models, "--name", name)
            assert r.returncode == 0, r.stderr
            built[name] = model
        deadline = time.monotonic() + 30
        while set(IMPORTS) - set(model_names(base)):  # the server rescans its folder: no restart
            assert time.monotonic() < deadline, model_names(base)
            time.sleep(0.2)
        yield base, built


@pytest.mark.parametrize("name", list(IMPORTS))
def test_trace_of_an_imported_model_is_pytorchs_own(served, name):
    base, built = served
    model = built[name]
    ref_h, ref_c, ref_logits = reference_states(model, TEXT)
    status, body = post_json(base + "/api/v1/trace", {"model": name, "text": TEXT, "topk": 3})
    assert status == 200, body
    assert body["unknown_positions"] == []
    layers = {L["layer"]: L["states"] for L in body["layers"]}
    assert sorted(layers) == list(range(len(ref_h)))
    for k, states in layers.items():
        # The API sends float16 values rounded to 4 decimals: 1e-4 + 1e-3 relative covers both.
        h = np.asarray(states["h"])
        assert h.shape == tuple(ref_h[k].shape)
        np.testing.assert_allclose(h, ref_h[k].numpy(), atol=2e-4, rtol=2e-3)
        if ref_c is not None:
            np.testing.assert_allclose(np.asarray(states["c"]), ref_c[k].numpy(), atol=2e-4, rtol=2e-3)
        else:
            assert "c" not in states
    logp = torch.log_softmax(ref_logits, dim=-1)
    nxt = torch.tensor([CHARS.index(c) for c in TEXT[1:]])
    want_bits = (-logp[torch.arange(len(nxt)), nxt] / np.log(2)).numpy()
    got_bits = np.asarray(body["surprisal_bits"][:-1], dtype=float)
    np.testing.assert_allclose(got_bits, want_bits, atol=2e-3, rtol=2e-3)
    assert body["surprisal_bits"][-1] is None
    top = logp[5].topk(3)
    assert [p["char"] for p in body["topk"][5]] == [CHARS[i] for i in top.indices.tolist()]


def test_the_page_marks_imported_models(served):
    base, _ = served
    status, page = get_text(base + "/?model=imp-gru")
    assert status == 200
    assert "imp-gru · GRU 2×18 · imported" in page and "imp-rnn · RNN 2×16 · imported" in page
    assert "tiny-lstm · LSTM 2×16 · 6.25 bpc<" in page  # a trained model is not marked
    with urllib.request.urlopen(base + "/api/v1/models", timeout=30) as r:
        info = {m["name"]: m for m in json.loads(r.read())}
    assert info["imp-lstm"]["cell"] == "lstm" and info["imp-lstm"]["vocab_size"] == len(CHARS) + 1
    assert info["imp-lstm"]["imported"] is True and info["tiny-lstm"]["imported"] is False
