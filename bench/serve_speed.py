"""How much the web layer adds to a trace, and how cheap a neuron change is, measured side by side.

Runs the real app in-process (FastAPI TestClient: routing, validation, cache, templates, gzip)
against the default model, or --model NAME|FOLDER, on a 2,000-character text:
  first trace   GET / as htmx sends it, with a text never seen before (cache miss)
  neuron change the same text, another unit (cache hit: no model pass), of layer 0's h, which the
                cached (lazy) trace holds, and of the top layer's second state (an LSTM's c, a GRU's
                r, worked out for the one unit on screen; a vanilla RNN has only h)
  bare trace    models.trace.run_trace with the same arguments the service uses (lazy)
and prints medians, response sizes and the ratio first-trace / bare trace from this one run.
Server time is the app's own Server-Timing header (routing, handler, rendering, gzip: the
response's first byte); client time adds the test client's side (URL encoding, decompression).

    .venv/bin/python bench/serve_speed.py [--model austen-lstm] [--chars 2000] [--reps 7]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from app.core.config import Settings  # noqa: E402
from app.main import GZIP_LEVEL, create_app  # noqa: E402
from app.trace.service import VIEW_TOPK  # noqa: E402
from models.trace import run_trace  # noqa: E402

HX = {"HX-Request": "true"}
FALLBACK = ('"I cannot think what you mean," said she, "by talking of it." He laughed. '
            "Nobody answered; the room was quiet for a while, and then the door opened.\n")


def sample_text(chars: int, offset: int) -> str:
    """A real paragraph stretch when the validation corpus is here; else a repeated passage."""
    val = ROOT / "data" / "austen.val.txt"
    source = val.read_text(encoding="utf-8") if val.is_file() else FALLBACK * (chars // len(FALLBACK) + 40)
    start = (offset * 7919) % max(1, len(source) - chars)
    return source[start : start + chars]


def server_seconds(response) -> float:
    """The app's own time for this response, from its Server-Timing header (app;dur=MS)."""
    timing = response.headers["server-timing"]
    return float(timing.split("dur=")[1].split(",")[0]) / 1000


def timed_view(client, params: dict, expect: str, client_s: list, server_s: list):
    """GET / as htmx sends it: client and server time appended, the page checked to say `expect`."""
    t0 = time.perf_counter()
    r = client.get("/", params=params, headers=HX)
    client_s.append(time.perf_counter() - t0)
    assert r.status_code == 200 and expect in r.text, r.text[:300]
    server_s.append(server_seconds(r))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name in RNNSCOPE_MODELS_DIR, or a checkpoint folder")
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()

    settings = Settings()
    if args.model and Path(args.model).is_dir():
        folder = Path(args.model).resolve()
        settings = Settings(models_dir=folder.parent, default_model=folder.name)
    elif args.model:
        settings = Settings(default_model=args.model)
    if args.threads:
        settings = settings.model_copy(update={"torch_threads": args.threads})

    with TestClient(create_app(settings)) as client:
        registry = client.app.state.registry
        name = registry.default_name(settings.default_model)
        if name is None or (args.model and not Path(args.model).is_dir() and name != args.model):
            sys.exit(f"model {args.model or settings.default_model!r} not found in {settings.models_dir}")
        entry = registry.get(name)
        model, vocab = entry.checkpoint.model, entry.checkpoint.vocab
        print(f"model {name}: {entry.cell} {entry.layers}x{entry.hidden}, text {args.chars} chars, {args.reps} reps")

        first, change, change_server, first_server, bare, sizes, gz_sizes = [], [], [], [], [], [], []
        worked_out, worked_out_server = [], []  # neuron changes to a state the cache does not hold
        top, second = entry.layers - 1, entry.states[min(1, len(entry.states) - 1)]
        run_trace(model, vocab, sample_text(args.chars, 999))  # warm-up: allocator, kernels
        for rep in range(args.reps):
            text = sample_text(args.chars, rep)
            params = {"model": name, "layer": "0", "state": "h", "unit": "0", "text": text}

            t0 = time.perf_counter()
            run_trace(model, vocab, text, topk=VIEW_TOPK, half=True, lazy=True)
            bare.append(time.perf_counter() - t0)

            timed_view(client, params, "traced in", first, first_server)
            r = timed_view(client, {**params, "unit": str(1 + rep % (entry.hidden - 1))}, "re-coloured from cache",
                           change, change_server)
            sizes.append(len(r.content))
            gz_sizes.append(len(gzip.compress(r.content, GZIP_LEVEL)))  # what the server sends
            timed_view(client, {**params, "layer": str(top), "state": second, "unit": str((2 + rep) % entry.hidden)},
                       "re-coloured from cache", worked_out, worked_out_server)

    med = statistics.median
    print(f"{'bare run_trace (lazy, as the service runs it)':44s} {med(bare) * 1000:8.1f} ms")
    print(f"{'first trace, server (cache miss)':44s} {med(first_server) * 1000:8.1f} ms   "
          f"(client {med(first) * 1000:.1f} ms)")
    print(f"{'neuron change, server (cache hit)':44s} {med(change_server) * 1000:8.1f} ms   "
          f"(client {med(change) * 1000:.1f} ms)")
    print(f"{f'neuron change to layer {top} {second}, server':44s} {med(worked_out_server) * 1000:8.1f} ms   "
          f"(client {med(worked_out) * 1000:.1f} ms)")
    print(f"{'response size (htmx partial)':44s} {med(sizes) / 1024:8.1f} KiB  ({med(gz_sizes) / 1024:.1f} KiB gzip)")
    print(f"ratio first trace (server) / bare run_trace: {med(first_server) / med(bare):.2f}x")
    print(f"ratio neuron change / first trace (server):  {med(change_server) / med(first_server):.3f}x")


if __name__ == "__main__":
    main()
