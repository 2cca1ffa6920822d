"""What does POST /api/v1/match cost beyond the traces? About one probe ranking per model matched.

The shipped models (models/zoo) in process, through the real app (TestClient), on 2,000 held-out
characters of Austen (the atlas's text): austen-lstm's quote cell (layer 1 c[336]) matched in
austen-gru, austen-rnn and python-lstm. Prints, side by side in one run (medians):
- the traces: all four models traced cold (the anchor's and the three matched), as the page's cache fills;
- the match: POST /api/v1/match with those traces cached and the match's own ranking cache emptied;
- one probe ranking per model: POST /api/v1/probe (a numeric probe, Pearson, as the match) for each of
  the three, traces cached;
and the ratios match / probe rankings and match / traces.

    python bench/match_speed.py [--repeats 7] [--chars 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from models.cache import ByteLRU

from app.core.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import median_ms  # noqa: E402  (needs the root on the path)

ZOO = ROOT / "models" / "zoo"
ANCHOR = {"model": "austen-lstm", "layer": 1, "state": "c", "unit": 336}
TARGETS = ["austen-gru", "austen-rnn", "python-lstm"]


def held_out_text(chars: int) -> str:
    """The atlas's held-out Austen, from the first opening quote: dialogue, so the quote cell has work."""
    text = json.loads((ZOO / "austen-lstm" / "atlas.json").read_text())["text"]
    start = text.index('"')
    return text[start:start + chars]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    text = held_out_text(args.chars)
    settings = Settings(models_dir=ZOO, default_model="austen-lstm", torch_threads=args.threads, rescan_seconds=3600)
    with TestClient(create_app(settings)) as client:
        traces = client.app.state.service
        compare = client.app.state.compare
        entries = [traces.model(n) for n in [ANCHOR["model"], *TARGETS]]

        def empty_trace_cache() -> None:
            traces.cache = ByteLRU(settings.cache_bytes, lambda t: t.nbytes)

        def trace_all() -> None:
            for e in entries:
                traces.view_trace(e, text, 0, "h")

        def match() -> dict:
            r = client.post("/api/v1/match", json={"text": text, "anchor": ANCHOR, "models": TARGETS, "top": 5})
            assert r.status_code == 200, r.text
            return r.json()

        def probe(name: str) -> None:
            r = client.post("/api/v1/probe", json={"model": name, "text": text, "probe": "line_position", "top": 5})
            assert r.status_code == 200, r.text

        trace_all()
        match()  # warm: numba's kernels loaded, every trace cached
        for name in TARGETS:
            probe(name)
        trace_ms = median_ms(trace_all, args.repeats, before=empty_trace_cache)
        trace_all()
        # Interleaved, one match then one probe ranking of each model per round: a busy core slows both alike.
        rounds: list[tuple[float, dict[str, float]]] = []
        for _ in range(args.repeats):
            compare._rankings.clear()
            one = median_ms(match, 1)
            rounds.append((one, {name: median_ms(lambda name=name: probe(name), 1) for name in TARGETS}))
        compare._rankings.clear()
        body = match()

    match_ms = statistics.median(m for m, _ in rounds)
    probe_ms = {name: statistics.median(p[name] for _, p in rounds) for name in TARGETS}
    probes_ms = statistics.median(sum(p.values()) for _, p in rounds)
    units = sum(m["scored"] for m in body["matches"])
    print(f"{len(text):,} characters; anchor {ANCHOR['model']} layer {ANCHOR['layer']} {ANCHOR['state']}"
          f"[{ANCHOR['unit']}] matched in {', '.join(TARGETS)} ({units:,} units); {args.threads} torch threads, "
          f"median of {args.repeats}")
    print(f"traces (4 models, cold) {trace_ms:.0f} ms | match (3 models, traces cached) {match_ms:.0f} ms | "
          f"one probe ranking per model {probes_ms:.0f} ms "
          f"({' + '.join(f'{probe_ms[n]:.0f}' for n in TARGETS)}) | match / probe rankings "
          f"{match_ms / probes_ms:.2f} | match / traces {match_ms / trace_ms:.2f}")
    for m in body["matches"]:
        best = m["units"][0]
        print(f"  {m['model']}: best {best['state']}[{best['layer']}][{best['unit']}] r {best['r']:+.3f}; "
              f"{m['scored']:,} units: their states worked out from the cached trace in "
              f"{m['trace_seconds'] * 1000:.0f} ms, scored in {m['rank_seconds'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
