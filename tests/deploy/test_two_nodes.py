"""Data-parallel training across two nodes: two `torchrun --nnodes 2` agents (one process each) meeting at a
c10d rendezvous, on loopback. Checked like tests/models/test_train.py's one-node run: a run stopped and
resumed ends exactly where an uninterrupted one does, and both end where one node with two processes does.

Both "nodes" share this machine's file system, as real nodes share the run folder (deploy/README.md):
rank 0, on whichever node the rendezvous gives it, writes the checkpoint and the resume state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from deploy.stack import free_port
from models.checkpoint import load_checkpoint
from tests.models.test_train import PROSE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"
TRAIN = ["-m", "app.cli", "train", "--layers", "1", "--hidden", "16", "--emb", "8", "--seq-len", "20", "--batch", "2",
         "--dropout", "0.2", "--steps", "6", "--eval-every", "2", "--no-progress", "--threads", "1"]
# Loopback only: the rendezvous, the address each agent gives its workers, and gloo's own sockets.
ENV = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", TORCH_CPP_LOG_LEVEL="ERROR")


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "prose.txt"
    p.write_text(PROSE, encoding="utf-8")
    return p


def _run_nodes(cmds: list[list[str]], timeout: float = 240.0) -> list[str]:
    """Start every command in its own process group, wait for all; kill all if any fails or time runs out."""
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for cmd in cmds]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {timeout:g} s")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the agent's workers too
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def two_nodes(data: Path, out: Path, run_dir: Path, *extra: str) -> tuple[dict, str]:
    """One training run on two nodes of one process each; returns the resume state and both nodes' output."""
    endpoint, run_id = f"127.0.0.1:{free_port()}", uuid.uuid4().hex[:12]
    cmds = [[str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
             "--rdzv-endpoint", endpoint, "--rdzv-id", run_id, "--rdzv-conf", f"is_host={host},join_timeout=90",
             "--local-addr", "127.0.0.1", "--max-restarts", "0",
             *TRAIN, "--data", str(data), "--out", str(out), "--run-dir", str(run_dir), *extra]
            for host in ("true", "false")]  # node 1 holds the rendezvous store; node 2 joins it
    outputs = _run_nodes(cmds)
    return torch.load(run_dir / "resume.pt", weights_only=True), "\n".join(outputs)


def one_node(data: Path, out: Path, run_dir: Path) -> dict:
    _run_nodes([[str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                 str(free_port()), *TRAIN, "--data", str(data), "--out", str(out), "--run-dir", str(run_dir)]])
    return torch.load(run_dir / "resume.pt", weights_only=True)


def test_two_nodes_resume_exactly_and_match_one_node_with_two_processes(tmp_path, data_file):
    full, logs = two_nodes(data_file, tmp_path / "a", tmp_path / "a-run")
    assert full["step"] == 6 and len(full["ranks"]) == 2
    card = load_checkpoint(tmp_path / "a").card
    assert card["chars_seen"] == 6 * 2 * 2 * 20 and card["batch"] == 4 and card["hardware"].startswith("2 x")
    assert len(re.findall(r"^step \d+: validation", logs, re.M)) == 3  # steps 2, 4, 6: rank 0 alone validates

    part, _ = two_nodes(data_file, tmp_path / "b", tmp_path / "b-run", "--stop-at", "3")
    assert part["step"] == 3 and len(part["ranks"]) == 2
    assert not torch.equal(part["ranks"][0]["carry"][0][0], part["ranks"][1]["carry"][0][0])  # each rank's own
    resumed, logs = two_nodes(data_file, tmp_path / "b", tmp_path / "b-run", "--resume")
    assert "resuming at step 3 of 6" in logs
    assert resumed["step"] == 6 and resumed["chars_seen"] == full["chars_seen"]
    for k in full["model"]:
        assert torch.equal(full["model"][k], resumed["model"][k]), k
    for r in range(2):  # each rank's carried state and RNG, not only rank 0's, continued exactly
        for a, b in zip(full["ranks"][r]["carry"][0], resumed["ranks"][r]["carry"][0]):
            assert torch.equal(a, b)
        assert torch.equal(full["ranks"][r]["rng"]["torch"], resumed["ranks"][r]["rng"]["torch"])

    same = one_node(data_file, tmp_path / "c", tmp_path / "c-run")
    for k in full["model"]:
        assert torch.equal(full["model"][k], same["model"][k]), k  # the network between ranks changes nothing
