"""A real `rnnscope serve` process whose handle the test keeps, so it can be killed with SIGKILL mid-load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.share.server import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start(models_dir: Path, data_dir: Path, log_path: Path, **env_extra: str) -> Server:
    """Start `rnnscope serve` on a free loopback port and wait for /healthz (90 s at most)."""
    port = free_port()
    exe = shutil.which("rnnscope", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "app.cli"]
    env = {**os.environ, "RNNSCOPE_MODELS_DIR": str(models_dir), "RNNSCOPE_DATA_DIR": str(data_dir),
           "RNNSCOPE_DEFAULT_MODEL": "tiny-lstm", "RNNSCOPE_RESCAN_SECONDS": "0", **env_extra}
    env.pop("RNNSCOPE_DATABASE_URL", None)
    with log_path.open("a") as log:
        proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(server.base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(server)
            raise RuntimeError("rnnscope serve did not come up:\n" + server.log())
        time.sleep(0.2)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
    server.proc.wait(timeout=10)


@contextmanager
def serving(models_dir: Path, data_dir: Path, log_path: Path, **env_extra: str) -> Iterator[Server]:
    server = start(models_dir, data_dir, log_path, **env_extra)
    try:
        yield server
    finally:
        stop(server)
