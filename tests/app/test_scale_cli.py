"""The colour scale shared by page and terminal, and the `rnnscope trace` / `serve` commands."""

from __future__ import annotations

import re

import numpy as np
from typer.testing import CliRunner

from app.cli import cli
from app.ui.scale import MIDDLE, NEGATIVE, POSITIVE, neuron_scale, rgb, surprisal_scale

runner = CliRunner()
BG = re.compile(r"\x1b\[48;2;(\d+);(\d+);(\d+);38;2;\d+;\d+;\d+m(.)", re.S)


def test_scale_anchors_and_ranges():
    assert rgb(-1) == NEGATIVE and rgb(0) == MIDDLE and rgb(1) == POSITIVE and rgb(7) == POSITIVE
    assert rgb(0.5) == tuple(round((a + b) / 2) for a, b in zip(POSITIVE, MIDDLE))
    assert neuron_scale("h", np.array([5.0])).hi == 1.0
    gate = neuron_scale("f", np.array([0.2]))
    assert (gate.lo, gate.hi) == (0.0, 1.0)
    cell = neuron_scale("c", np.array([0.3, -2.2, np.nan]))
    assert (cell.lo, cell.hi) == (-2.5, 2.5)
    # one early outlier (the state warming up from zeros) does not wash out the rest
    warm = neuron_scale("kept", np.concatenate([[-40.0], np.linspace(-1.9, 1.9, 99)]))
    assert (warm.lo, warm.hi) == (-2.0, 2.0)
    assert list(cell.positions(np.array([-2.5, 0.0, 5.0, np.nan]))) == [-1.0, 0.0, 1.0, 0.0]
    assert surprisal_scale().positions(np.array([16.0]))[0] == 1.0


def test_trace_prints_each_character_on_its_colour(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("RNNSCOPE_MODELS_DIR", str(tiny_models_dir))
    text = 'He said "no".\nOk'
    r = runner.invoke(cli, ["trace", "--model", "tiny-gru", "--layer", "1", "--state", "z", "--unit", "4", text])
    assert r.exit_code == 0, r.output
    painted = BG.findall(r.stdout)
    assert "".join(ch for *_, ch in painted) == text.replace("\n", "")
    assert len({(r_, g, b) for r_, g, b, _ in painted}) > 3  # different values, different colours
    assert "\x1b[0m\n" in r.stdout  # colour is reset before the newline
    assert "tiny-gru · layer 1 · z · unit 4" in r.stderr


def test_trace_reads_stdin_takes_a_folder_and_defaults_to_the_quote_unit(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("RNNSCOPE_MODELS_DIR", str(tiny_models_dir / "nowhere"))
    r = runner.invoke(cli, ["trace", "--model", str(tiny_models_dir / "tiny-lstm")], input="quote \"me\"")
    assert r.exit_code == 0, r.output
    assert "tiny-lstm · layer 1 · c · unit 3" in r.stderr
    assert "".join(ch for *_, ch in BG.findall(r.stdout)) == 'quote "me"'


def test_trace_errors_are_one_line_and_exit_2(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("RNNSCOPE_MODELS_DIR", str(tiny_models_dir))
    cases = [
        (["trace", "--model", "nope", "x"], "unknown model 'nope'"),
        (["trace", "--model", "tiny-gru", "--state", "c", "x"], "state 'c' does not exist in a gru model"),
        (["trace", "--model", "tiny-rnn", "--unit", "8", "x"], "unit 8 is out of range"),
        (["trace", "--model", "tiny-rnn", ""], "the text is empty"),
    ]
    for args, message in cases:
        r = runner.invoke(cli, args)
        assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, (args, r.output)


def test_serve_has_host_and_port_defaults():
    r = runner.invoke(cli, ["serve", "--help"])
    assert r.exit_code == 0 and "127.0.0.1" in r.output and "8000" in r.output
