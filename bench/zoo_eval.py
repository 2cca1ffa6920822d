"""Measure the shipped models on their corpora's held-out splits and print the zoo table.

For each checkpoint folder under models/ (or those named): validation bits-per-char on the
whole validation text, and the best unit for each of its corpus's probes (quotes for Austen;
string, comment and indentation for Python), scored over every unit of every state of every
layer on the first --probe-chars characters of the validation text. With --write-card the
results go into each model's config.json card (the app opens on `quote_unit`).

    rnnscope corpus austen --out data/austen.txt; rnnscope corpus python-stdlib --out data/python.txt
    python bench/zoo_eval.py [--models austen-lstm austen-gru] [--write-card]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models.checkpoint import CONFIG, load_checkpoint
from models.corpora import load_corpus_files
from models.evaluate import CORPUS_PROBES, best_units, card_entries, summarise, validation_bpc

MODELS_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"
CORPUS_FILES = {"austen": "data/austen.txt", "python-stdlib": "data/python.txt"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="checkpoint folder names under models/ (default: all)")
    ap.add_argument("--probe-chars", type=int, default=100_000)
    ap.add_argument("--write-card", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models or sorted(p.parent.name for p in MODELS_DIR.glob(f"*/{CONFIG}"))
    print(f"{'model':16} {'cell':5} {'params':>9} {'val bpc':>8}  best units (held-out text)")
    for name in names:
        ck = load_checkpoint(MODELS_DIR / name)
        corpus = ck.card.get("corpus")
        if corpus not in CORPUS_FILES:
            print(f"{name:16} skipped: trained on {corpus!r}, which has no held-out corpus here")
            continue
        _, val, _ = load_corpus_files(CORPUS_FILES[corpus])
        bpc = validation_bpc(ck, val)
        units = best_units(ck, val, CORPUS_PROBES[corpus], args.probe_chars)
        print(f"{name:16} {ck.config.cell:5} {ck.model.num_params():9,d} {bpc:8.4f}  {summarise(units)}", flush=True)
        if args.write_card:
            path = MODELS_DIR / name / CONFIG
            cfg = json.loads(path.read_text(encoding="utf-8"))
            cfg["card"].pop("quote_unit", None)  # re-measured: named again only if it still qualifies
            cfg["card"].update(card_entries(units))
            cfg["card"]["val_bpc_full"] = round(bpc, 4)
            path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
