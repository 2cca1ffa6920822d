"""A real `rnnscope serve` process on a free port, for restart, concurrency and browser tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_EXE = shutil.which("rnnscope", path=str(Path(sys.executable).parent))
CLI = [_EXE] if _EXE else [sys.executable, "-m", "app.cli"]  # the venv's script, else the module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(models_dir: Path, data_dir: Path, log_path: Path, *, serve_args: tuple[str, ...] = (),
                   **env_extra: str):
    """Start `rnnscope serve [serve_args]`, wait for /healthz, yield the base URL; stop it (SIGTERM, then kill) after.

    serve_args are extra command-line flags (e.g. `--models DIR`), for tests of the flags themselves.
    """
    port = free_port()
    env = {**os.environ, "RNNSCOPE_MODELS_DIR": str(models_dir), "RNNSCOPE_DATA_DIR": str(data_dir),
           "RNNSCOPE_DEFAULT_MODEL": "tiny-lstm", "RNNSCOPE_TORCH_THREADS": "1", "RNNSCOPE_RESCAN_SECONDS": "0",
           **env_extra}
    if "RNNSCOPE_DATABASE_URL" not in env_extra:
        env.pop("RNNSCOPE_DATABASE_URL", None)  # this server's store is the SQLite file in data_dir
    log = log_path.open("a+")
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), *serve_args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("rnnscope serve did not come up:\n" + log.read())
            time.sleep(0.2)
        yield base
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then kill after 15 s: a test's server never outlives it."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def post_json(url: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get_text(url: str, timeout: float = 60) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")
