"""`rnnscope quickstart TEXT --minutes N`: what it writes and prints, and every refusal as one line on stderr
with exit code 2, before any training starts."""

from __future__ import annotations

import re
import socket

import pytest
from typer.testing import CliRunner

from app.cli import cli
from models.checkpoint import load_checkpoint
from tests.models.test_quickstart import write_text

runner = CliRunner()
TINY = ("--minutes", "0.1", "--layers", "1", "--hidden", "8", "--no-progress")


def run(*args):
    return runner.invoke(cli, ["quickstart", *map(str, args)])


@pytest.fixture
def text_file(tmp_path):
    return write_text(tmp_path, "My Story.txt")  # a name with a space and capitals: served as my-story


def test_quickstart_trains_measures_and_says_where_to_look(tmp_path, text_file):
    models = tmp_path / "models"
    r = run(text_file, "--models", models, "--no-serve", *TINY)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert re.fullmatch(rf"my-story: [\d,]+ steps, [\d,]+ characters in \d+ s \(stopped by time budget\); held-out "
                        rf"\d\.\d{{4}} bits/char -> {re.escape(str(models / 'my-story'))}", lines[0]), lines[0]
    card = load_checkpoint(models / "my-story").card
    probe_lines = lines[1 : 1 + len(card["probe_units"])]
    assert [line.split()[0] for line in probe_lines] == list(card["probe_units"])
    assert all(re.fullmatch(r"  \S+ +layer 0 \w+\[\d+\], (AUC|\|r\|) \d\.\d{3}( \(weak\))?", line) for line in probe_lines)
    opening = lines[1 + len(card["probe_units"])]
    m = re.fullmatch(r"open http://localhost:8000/\?model=my-story&layer=0&state=(\w+)&unit=(\d+)  \(the (\w+) unit: "
                     r"layer 0 \w+\[\d+\], .*\)", opening)
    assert m, opening
    best = card["probe_units"][m.group(3)]
    assert (best["state"], best["unit"]) == (m.group(1), int(m.group(2)))
    assert lines[-1] == f"later: rnnscope serve --models {models} --with-shipped"
    assert "training a 1×8 GRU on " in r.stderr and "held-out: " in r.stderr


def test_python_probes_follow_the_file_kind_unless_told(tmp_path):
    code = "def f(x):\n    # add one\n    return x + 1  # done\n\n\ns = 'a string'\n" * 60
    src = tmp_path / "snippets.py"
    src.write_text(code, encoding="utf-8")
    assert run(src, "--models", tmp_path / "m", "--no-serve", *TINY).exit_code == 0
    assert {"comment", "short_string"} <= set(load_checkpoint(tmp_path / "m" / "snippets").card["probe_units"])
    assert run(src, "--models", tmp_path / "m", "--name", "as-prose", "--prose", "--no-serve", *TINY).exit_code == 0
    assert "comment" not in load_checkpoint(tmp_path / "m" / "as-prose").card["probe_units"]


@pytest.mark.parametrize("args, message", [
    (("--name", "../up"), "model name '../up' cannot be served: use letters, digits, '.', '_' and '-'"),
    (("--cell", "transformer"), "unknown cell type 'transformer': choose one of"),
    (("--minutes", "0"), "Invalid value for '--minutes'"),
])
def test_bad_options_are_refused_before_training(tmp_path, text_file, args, message):
    r = run(text_file, "--models", tmp_path / "models", "--no-serve", *args)
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "models").exists()


def test_a_busy_port_is_refused_before_the_minutes_of_training(tmp_path, text_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(text_file, "--models", tmp_path / "models", "--port", port, *TINY)
    assert r.exit_code == 2
    assert f"error: cannot listen on 127.0.0.1:{port} (Address already in use): pass --port with a free port, " \
           "or --no-serve" in r.stderr
    assert not (tmp_path / "models").exists()


def test_text_and_target_refusals(tmp_path, text_file):
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    r = run(short, "--models", tmp_path / "models", "--no-serve", *TINY)
    assert r.exit_code == 2 and r.stderr.strip() == (f"error: TEXT {short} has 9 characters; quickstart needs at "
                                                     "least 2,000 (5% is held out to measure the model)")
    r = run(tmp_path / "missing.txt", "--no-serve", *TINY)
    assert r.exit_code == 2 and "does not exist" in r.stderr
    assert run(text_file, "--models", tmp_path / "models", "--no-serve", *TINY).exit_code == 0
    r = run(text_file, "--models", tmp_path / "models", "--no-serve", *TINY)
    assert r.exit_code == 2 and "already holds a model: pass --force to replace it, --name NAME for another one, " \
                                "or look at it with `rnnscope serve --models" in r.stderr
