"""The whole quickstart path as a user runs it: `rnnscope quickstart TEXT --minutes N` trains, measures, then
serves on a real port, beside the shipped models; the page opens on the new model with its held-out text and
its measured units as chips, the printed link opens on the clearest unit, and Ctrl-C ends both the training
(keeping the model) and the server.

No browser: this module only asks for its own processes.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from tests.models.test_quickstart import write_text
from tests.share.server import CLI, free_port, get_text, stop

TINY = ("--layers", "1", "--hidden", "8", "--no-progress")


def start(tmp: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp / "stdout.txt", tmp / "stderr.txt"
    proc = subprocess.Popen([*CLI, "quickstart", *args], cwd=tmp, stdout=out.open("w"), stderr=err.open("w"),
                            env={**os.environ, "OMP_NUM_THREADS": "1", "RNNSCOPE_RESCAN_SECONDS": "0"})
    return proc, out, err


def wait_for(predicate, proc: subprocess.Popen, err: Path, seconds: float = 240):
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError("quickstart did not get there:\n" + err.read_text())
        time.sleep(0.2)


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    return write_text(tmp_path_factory.mktemp("quickstart-text"))


def test_quickstart_serves_the_new_model_opened_on_its_clearest_unit(tmp_path, text_file):
    port = free_port()
    proc, out, err = start(tmp_path, str(text_file), "--minutes", "0.1", "--port", str(port), *TINY)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(base), proc, err)
        card = load_checkpoint(tmp_path / "my-models" / "story").card  # the default --models, in the working folder
        printed = out.read_text()
        link = re.search(rf"^open http://localhost:{port}(/\?model=story&layer=0&state=\w+&unit=\d+)  ", printed, re.M)
        assert link, printed
        assert "later: rnnscope serve --models my-models --with-shipped" in printed
        with urllib.request.urlopen(base + "/api/v1/models", timeout=30) as r:  # the shipped models too, after it
            names = [m["name"] for m in json.loads(r.read())]
        assert names[0] == "story" and "austen-lstm" in names

        status, page = get_text(base + "/")  # the default model is the new one, on its own held-out text
        assert status == 200
        assert re.search(r'<option value="story"[^>]* selected', page)
        shown = re.search(r'<textarea id="text"[^>]*>\n(.*?)</textarea>', page, re.S)
        assert shown and html.unescape(shown.group(1)) == card["example_text"]
        assert "Measured on held-out text:" in page
        assert page.count('class="known-unit') == len(card["probe_units"]) > 0

        status, page = get_text(base + link.group(1))
        state, unit = re.search(r"state=(\w+)&unit=(\d+)", link.group(1)).groups()
        current = re.search(r'<button type="button" class="known-unit current[^"]*" data-layer="0" '
                            rf'data-state="{state}" data-unit="{unit}" aria-current="true"', page)
        assert status == 200 and current, "the printed link opens on one of the chips"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops the server as it stops `rnnscope serve`
        try:
            assert proc.wait(timeout=20) == 0
        finally:
            stop(proc)


def test_ctrl_c_during_training_keeps_and_measures_the_model(tmp_path, text_file):
    proc, out, err = start(tmp_path, str(text_file), "--minutes", "10", "--no-serve", "--models", "m", *TINY)
    try:
        wait_for(lambda: "training a 1×8 GRU" in err.read_text(), proc, err)
        time.sleep(2)  # a few steps
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, err.read_text()
    finally:
        stop(proc)
    assert time.monotonic() - t0 < 120
    assert "Ctrl-C: stopping after this step to validate and save" in err.read_text()
    assert re.match(r"story: [\d,]+ steps, .* \(stopped by Ctrl-C\); held-out ", out.read_text()), out.read_text()
    card = load_checkpoint(tmp_path / "m" / "story").card
    assert card["probe_units"] and (tmp_path / "m" / "story" / "atlas.json").is_file()
