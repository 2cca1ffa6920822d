"""The container image (#24 part 1): the Dockerfile built with podman and run.

scripts/check-image.sh does the work (stand-in base images from Debian's packages, torch from this machine's
wheel, then /healthz, a trace, a share link that outlives its container in the data volume, a server that is
not root, the image's HEALTHCHECK) and reports its figures; docs/deploy.md ("The container image") has them.
Where podman, runc or debootstrap is missing, or the tests do not run as root, the build test skips with the
reason; .ci/run installs them so that CI runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-image.sh"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD_LIMIT_S = 1500   # the image build alone (scripts/check-image.sh's RNNSCOPE_IMAGE_BUILD_TIMEOUT)
TOTAL_LIMIT_S = 2700   # everything: base images made from scratch (~3 min), build (~4-6 min), the run (~1 min)


def _arg_default(name: str) -> str:
    m = re.search(rf"^ARG {name}=(.*)$", DOCKERFILE, re.M)
    assert m, f"no ARG {name}=... in the Dockerfile"
    return m.group(1).strip()


def test_dockerfile_torch_is_pyprojects_pin_from_pytorchs_cpu_index_by_default():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1] for d in deps if d.startswith("torch==")]
    assert pins, "pyproject.toml pins no torch==X"
    assert _arg_default("TORCH_VERSION") == pins[0]
    # a normal host: PyTorch's CPU wheels, no local folder, and the wheels stage empty unless replaced
    assert _arg_default("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    assert _arg_default("TORCH_FIND_LINKS") == ""
    assert re.search(r"^FROM scratch AS torch-wheels$", DOCKERFILE, re.M)
    assert "--mount=type=bind,from=torch-wheels,target=/wheels" in DOCKERFILE
    assert "torch.version.cuda is None" in DOCKERFILE


def test_dockerfile_runs_as_non_root_on_port_with_a_health_check():
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^ENV [^#]*\bPORT=7860\b", DOCKERFILE, re.M | re.S)
    assert re.search(r"^HEALTHCHECK .*healthz", DOCKERFILE, re.M | re.S)
    cmd = re.findall(r"^CMD (.*)$", DOCKERFILE, re.M)[-1]
    assert "${PORT:-7860}" in cmd and "exec rnnscope serve" in cmd


def test_dockerignore_keeps_heavy_and_private_folders_out():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for name in (".git", ".venv", "node_modules", "runs", "data", "data-dir", "artifacts", "static/vendor"):
        assert name in ignored, f"{name} is not in .dockerignore"


def _missing() -> str | None:
    tools = [t for t in ("podman", "debootstrap", "curl") if shutil.which(t) is None
             and not Path("/usr/sbin", t).exists()]
    if shutil.which("runc") is None and not Path("/usr/sbin/runc").exists():
        tools.append("runc")
    if tools:
        return f"{', '.join(tools)} missing: apt-get install podman runc debootstrap curl (.ci/run does)"
    if os.geteuid() != 0:
        return "the image check needs root (debootstrap; podman's storage and runc as set up here)"
    return None


@pytest.mark.slow
def test_image_builds_and_serves(tmp_path):
    why = _missing()
    if why:
        pytest.skip(why)
    report = tmp_path / "report.json"
    env = {**os.environ, "RNNSCOPE_IMAGE_BUILD_TIMEOUT": str(BUILD_LIMIT_S)}
    log = (tmp_path / "check-image.log").open("w+")
    proc = subprocess.Popen(["bash", str(SCRIPT), "--report", str(report)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=TOTAL_LIMIT_S)
    except subprocess.TimeoutExpired:
        # the whole group (podman too); the script's trap still removes its containers, volume and image
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        rc = None
    log.seek(0)
    out = log.read()
    log.close()
    sys.stderr.write(out[-3000:])
    assert rc is not None, f"scripts/check-image.sh ran past {TOTAL_LIMIT_S} s:\n{out[-6000:]}"
    assert rc == 0, f"scripts/check-image.sh failed ({rc}):\n{out[-6000:]}"

    figures = json.loads(report.read_text())
    assert figures["image_user"] not in ("root", "0", "")
    assert "0" not in figures["server_uids"].split()
    assert figures["torch"].startswith(_arg_default("TORCH_VERSION"))
    if figures["torch_wheel"]:
        assert figures["torch"].endswith("+cpu"), figures  # this machine's wheel, not one from an index
    assert figures["stop_exit_code"] in (0, 143), figures  # SIGTERM: a clean stop, not podman's SIGKILL (137)
    assert figures["image_bytes"] < 2_000_000_000, figures  # ~1.35 GB: torch (CPU) ~0.65, llvmlite ~0.17
    assert figures["start_to_healthz_s"] < 120, figures
