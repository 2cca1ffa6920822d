"""Stateful truncated-BPTT training for CharLM.

Each batch row reads its own contiguous stream of the corpus; the hidden state is carried from
one chunk to the next and detached (truncated BPTT, as in the seed); inputs are the true
characters (teacher forcing). Adam, gradient clipping and a cosine learning-rate decay to
`lr_min`. Validation bits-per-char at intervals; the best model is saved as a serving
checkpoint (float16 snapshots on a schedule go beside it: models/snapshots.py), and a resume
file (optimizer, step, stream positions, carried state, RNG) lets `--resume` continue exactly
where a run stopped. Under `torchrun` it trains data-parallel with DistributedDataParallel (gloo
on CPU, nccl on CUDA); only rank 0 logs and saves.
"""

from __future__ import annotations

import math
import os
import platform
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .charlm import CharLM, ModelConfig, detach_state
from .checkpoint import CONFIG, load_checkpoint
from .corpora import load_corpus_files
from .snapshots import Snapshotter, half_copy, save_keeping_snapshots, schedule_for
from .errors import RnnscopeError
from .vocab import CharVocab

LN2 = math.log(2)
RESUME_FILE = "resume.pt"


@dataclass
class TrainConfig:
    data: str
    out: str
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    emb: int = 64
    dropout: float = 0.0
    seq_len: int = 200
    batch: int = 32
    lr: float = 2e-3
    lr_min: float = 2e-4
    steps: int = 20000  # the schedule's horizon; training stops here or at the time budget
    clip: float = 5.0
    eval_every: int = 500
    val_chars: int = 0  # 0 = the whole validation text
    time_budget_min: float | None = None
    stop_at: int | None = None  # stop after this step (resume state saved), keeping the schedule of `steps`
    seed: int = 1337
    device: str = "cpu"
    resume: bool = False
    init: str | None = None  # start from a serving checkpoint's weights with a fresh optimizer
    run_dir: str | None = None  # where resume state lives (default runs/<out name>)
    half: bool = False  # store serving weights as float16
    threads: int | None = None
    snapshots: int | None = None  # N float16 snapshots at log-spaced steps from 0 to `steps`, into <out>/snapshots
    snapshot_every: int | None = None  # or one every this many steps (and at the last)
    progress: bool = True
    anneal_seconds: float | None = None  # the cosine decay spans this many seconds of the run instead of `steps`
    stop_on_interrupt: bool = False  # Ctrl-C stops at the next step, validates and saves (one process only)
    given: frozenset = frozenset()  # options the user set explicitly; with --resume they must match the saved run


# What makes a run the run it is: --resume continues with the saved run's own values for these.
RUN_KEYS = ("cell", "layers", "hidden", "emb", "dropout", "seq_len", "batch", "lr", "lr_min", "steps", "clip", "seed",
            "snapshots", "snapshot_every")


@dataclass
class TrainResult:
    steps: int
    chars_seen: int
    best_val_bpc: float | None
    last_val_bpc: float | None
    seconds: float
    stopped_by: str
    history: list = field(default_factory=list)
    eval_seconds: float = 0.0  # of `seconds`, spent validating and saving in this run (not training steps)


def _log(line: str) -> None:
    """A progress line above the bar, on stderr with it: stdout stays for what a command reports."""
    tqdm.write(line, file=sys.stderr)


def lr_at(cfg: TrainConfig, step: int, seconds: float = 0.0) -> float:
    """Cosine decay over the steps, or over the seconds when the run is sized by time (a short run still anneals)."""
    done = seconds / cfg.anneal_seconds if cfg.anneal_seconds else step / max(cfg.steps, 1)
    progress = min(done, 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))


class StreamBatcher:
    """Cuts the corpus into `n_streams` contiguous streams and walks them in step."""

    def __init__(self, data: torch.Tensor, n_streams: int, seq_len: int, first: int, count: int):
        self.seq_len = seq_len
        self.stream_len = (len(data) - 1) // n_streams
        if self.stream_len < seq_len:
            need = n_streams * seq_len + 1
            raise RnnscopeError(
                f"the training text has {len(data)} characters, too few for {n_streams} streams of "
                f"{seq_len}; need at least {need} (lower --batch or --seq-len)"
            )
        rows = torch.arange(first, first + count) * self.stream_len
        self.offsets = rows[:, None] + torch.arange(seq_len + 1)[None, :]  # (B, T+1)
        self.data = data
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(x, y, wrapped): wrapped means a new pass began and the carried state must reset."""
        wrapped = False
        if self.pos + self.seq_len > self.stream_len:
            self.pos, wrapped = 0, True
        chunk = self.data[self.offsets + self.pos].long()  # (B, T+1)
        self.pos += self.seq_len
        return chunk[:, :-1], chunk[:, 1:], wrapped


@torch.no_grad()
def evaluate_bpc(model: CharLM, ids: torch.Tensor, device: str, n_streams: int = 16, chunk: int = 1000) -> float:
    """Bits per character over `ids`, read as parallel streams with the state carried across chunks."""
    model.eval()
    n = len(ids) - 1
    if n < 1:
        return float("nan")
    n_streams = max(1, min(n_streams, n // 100 or 1))
    per = n // n_streams
    total, count = 0.0, 0
    state = None
    x_all = ids[: per * n_streams].view(n_streams, per)
    y_all = ids[1 : per * n_streams + 1].view(n_streams, per)
    for s in range(0, per, chunk):
        x = x_all[:, s : s + chunk].to(device).long()
        y = y_all[:, s : s + chunk].to(device).long()
        logits, _, state = model(x, state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        total += loss.item()
        count += y.numel()
    model.train()
    return total / count / LN2


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: str = "cpu") -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _gather_ranks(mine: dict, world: int, device: str) -> list[dict]:
    """Every process's {carry, rng}, on every process: tensor collectives only (nothing pickled).

    All ranks walk their streams in lock step, so the shapes agree (and carry is None on all or none).
    """
    flat = [t for layer in (mine["carry"] or []) for t in layer] + [mine["rng"][k] for k in sorted(mine["rng"])]
    gathered = []
    for t in flat:
        t = t.to(device)
        bufs = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(bufs, t)
        gathered.append([b.cpu() for b in bufs])
    out = []
    for r in range(world):
        it = iter(g[r] for g in gathered)
        carry = None if mine["carry"] is None else [[next(it) for _ in layer] for layer in mine["carry"]]
        out.append({"carry": carry, "rng": {k: next(it) for k in sorted(mine["rng"])}})
    return out


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], s["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(int(v) for v in s["python"].tolist()), None))


def _state_to_cpu(state) -> list | None:
    if state is None:
        return None
    return [list(t.cpu() for t in s) if isinstance(s, tuple) else [s.cpu()] for s in state]


def _state_from(saved, device: str):
    if saved is None:
        return None
    return [tuple(t.to(device) for t in s) if len(s) == 2 else s[0].to(device) for s in saved]


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RnnscopeError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise RnnscopeError(f"unknown device {device!r}: use cpu or cuda")


def _resumed_config(cfg: TrainConfig, saved: dict, out: Path) -> TrainConfig:
    """The saved run's schedule wins on --resume; a different value the user asked for is refused, not ignored."""
    kept = {k: saved[k] for k in RUN_KEYS if k in saved}
    clashes = [f"--{k.replace('_', '-')} {kept[k]} (asked: {getattr(cfg, k)})"
               for k in RUN_KEYS if k in kept and k in cfg.given and getattr(cfg, k) != kept[k]]
    if clashes:
        raise RnnscopeError("--resume continues the saved run as it was set up: " + ", ".join(clashes)
                            + f"; leave those options out, or start a new schedule from its weights with --init {out}")
    return replace(cfg, **kept)


def train(cfg: TrainConfig) -> TrainResult:
    _check_device(cfg.device)
    ModelConfig(cell=cfg.cell, n_layers=cfg.layers, hidden=cfg.hidden, emb=cfg.emb, vocab_size=1, dropout=cfg.dropout).validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cfg.device.startswith("cuda") else "gloo")
        if cfg.device.startswith("cuda"):
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(cfg.device)  # collectives (and their buffers) go to this process's own GPU
    is_main = rank == 0

    train_text, val_text, corpus_meta = load_corpus_files(cfg.data)
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / out.name
    resume_path = run_dir / RESUME_FILE
    continuing_in_place = bool(cfg.init) and Path(cfg.init).resolve() == out.resolve()
    if not cfg.resume:
        schedule_for(cfg.snapshots, cfg.snapshot_every, cfg.steps)  # a bad option fails before anything is read
        _refuse_to_overwrite(out, resume_path, continuing_in_place)

    resume_state = None
    if cfg.resume:
        if not resume_path.is_file():
            raise RnnscopeError(f"--resume: no resume state at {resume_path}; run without --resume, or use --init {out}")
        try:
            resume_state = torch.load(resume_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say so, touch nothing
            raise RnnscopeError(f"resume state {resume_path} is unreadable ({type(e).__name__}); "
                                f"delete it and restart, or use --init {out}") from None
        cfg = _resumed_config(cfg, resume_state.get("train_config", {}), out)
    schedule = schedule_for(cfg.snapshots, cfg.snapshot_every, cfg.steps)

    # Model and vocabulary: from resume state, an initial checkpoint, or fresh from the text.
    card_base: dict = {}
    if resume_state is not None:
        vocab = CharVocab.from_json(resume_state["vocab"])
        mcfg = ModelConfig(**resume_state["model_config"])
        model = CharLM(mcfg)
        model.load_state_dict(resume_state["model"])
        card_base = resume_state.get("card_base", {})
    elif cfg.init:
        ck = load_checkpoint(cfg.init)
        # Dropout is a training setting, not part of the learned weights: this run's value applies.
        vocab, mcfg = ck.vocab, replace(ck.model.config, dropout=cfg.dropout)
        model = CharLM(mcfg)
        model.load_state_dict(ck.model.state_dict())
        card_base = {k: ck.card[k] for k in ("train_steps", "chars_seen", "training_seconds") if k in ck.card}
        card_base["initialised_from"] = str(cfg.init)
    else:
        vocab = CharVocab.from_text(train_text)
        mcfg = ModelConfig(cell=cfg.cell, n_layers=cfg.layers, hidden=cfg.hidden, emb=cfg.emb,
                           vocab_size=len(vocab), dropout=cfg.dropout)
        _seed_all(cfg.seed)
        model = CharLM(mcfg)
    model.to(cfg.device).train()
    snaps = Snapshotter(out, schedule, mcfg, vocab) if schedule and is_main else None
    if snaps is not None and resume_state is None:
        snaps.refuse_fresh_start()

    train_ids = torch.tensor(vocab.encode(train_text), dtype=torch.int32)
    val_ids = torch.tensor(vocab.encode(val_text), dtype=torch.int32)
    if cfg.val_chars:
        val_ids = val_ids[: cfg.val_chars + 1]

    batcher = StreamBatcher(train_ids, cfg.batch * world, cfg.seq_len, rank * cfg.batch, cfg.batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, chars_seen, elapsed_before, best_bpc, state = 0, 0, 0.0, None, None
    history: list = []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        step = int(resume_state["step"])
        chars_seen = int(resume_state["chars_seen"])
        elapsed_before = float(resume_state["seconds"])
        best_bpc = resume_state.get("best_bpc")
        best_bpc = None if best_bpc is None or math.isnan(best_bpc) else float(best_bpc)
        saved_world = len(resume_state["pos"])
        if saved_world != world:
            raise RnnscopeError(f"the resume state at {resume_path} was saved by {saved_world} process(es); resume "
                                f"with the same number (torchrun --nproc-per-node {saved_world}), or use --init {out}")
        batcher.pos = int(resume_state["pos"][rank])
        per_rank = resume_state.get("ranks")  # each process's carried state and RNG (absent in 1-process files)
        mine = per_rank[rank] if per_rank else {"carry": resume_state.get("carry"), "rng": resume_state["rng"]}
        state = _state_from(mine["carry"], cfg.device)
        _set_rng_state(mine["rng"])
        if cfg.stop_at is not None and cfg.stop_at <= step:
            raise RnnscopeError(f"--stop-at {cfg.stop_at} is not after step {step}, where the resumed run stands")
        history = list(resume_state.get("history", []))
        if snaps is not None:
            snaps.resume_at(step)
        if is_main:
            _log(f"resuming at step {step} of {cfg.steps}, learning rate {lr_at(cfg, step):.2e} "
                 f"(the saved run's schedule: --lr {cfg.lr:g} --lr-min {cfg.lr_min:g})")
    else:
        _seed_all(cfg.seed + rank)
        if continuing_in_place and is_main and len(val_ids) > 1:  # the folder keeps its weights unless beaten
            best_bpc = evaluate_bpc(model, val_ids, cfg.device)
            _log(f"step 0: validation {best_bpc:.4f} bits/char (weights in {out}, kept unless beaten)")

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)

    def card(val_bpc: float | None) -> dict:
        c = dict(card_base)
        parent = card_base if "initialised_from" in card_base else {}  # an --init run adds to its parent's totals
        c.update(
            corpus=corpus_meta.get("name"),
            corpus_sha256=corpus_meta.get("train_sha256"),
            corpus_split=corpus_meta.get("split"),
            train_steps=parent.get("train_steps", 0) + step,
            chars_seen=parent.get("chars_seen", 0) + chars_seen,
            val_bpc=None if val_bpc is None else round(val_bpc, 4),
            params=model.num_params(),
            training_seconds=round(parent.get("training_seconds", 0) + elapsed_before + (time.time() - t0), 1),
            hardware=_hardware(cfg.device, world),
            seq_len=cfg.seq_len,
            batch=cfg.batch * world,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        return c

    def checkpoint_now() -> None:
        """Validate (saving the best serving checkpoint), save resume state, and count the time it took."""
        nonlocal last_bpc, best_bpc, validated_at, eval_seconds
        t_eval = time.time()
        last_bpc, best_bpc = _validate(cfg, model, val_ids, vocab, card, best_bpc, history, step, is_main, out)
        save_resume()
        validated_at = step
        eval_seconds += time.time() - t_eval

    def snapshot_now() -> None:
        """The scheduled snapshot: validated as stored (float16), with the fixed-seed sample."""
        nonlocal eval_seconds
        t_snap = time.time()
        stored = half_copy(model)
        bpc = evaluate_bpc(stored, val_ids, cfg.device) if len(val_ids) > 1 else float("nan")
        snaps.take(step, stored, vocab, chars_seen, bpc, len(val_ids) - 1, elapsed_before + (time.time() - t0))
        _log(f"step {step}: snapshot, validation {bpc:.4f} bits/char (float16) -> {snaps.dir}")
        eval_seconds += time.time() - t_snap

    def save_resume() -> None:
        """Every process calls this: each one's carried state and RNG go to rank 0, which writes."""
        mine = {"carry": _state_to_cpu(state), "rng": _rng_state(cfg.device)}
        ranks = _gather_ranks(mine, world, cfg.device) if world > 1 else [mine]
        if not is_main:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        positions = [batcher.pos] * world  # every rank walks its streams in lock step
        payload = {
            "model": model.state_dict(),
            "model_config": mcfg.to_dict(),
            "vocab": vocab.to_json(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "chars_seen": chars_seen,
            "seconds": elapsed_before + (time.time() - t0),
            "best_bpc": float("nan") if best_bpc is None else best_bpc,
            "pos": positions,
            "carry": ranks[0]["carry"],
            "rng": ranks[0]["rng"],
            "ranks": ranks if world > 1 else None,
            "history": history,
            "card_base": card_base,
            "train_config": {k: v for k, v in asdict(cfg).items() if v is not None and k != "given"},
        }
        tmp = resume_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, resume_path)

    t0 = time.time()
    deadline = None if cfg.time_budget_min is None else t0 + cfg.time_budget_min * 60
    stopped_by = "steps"
    validated_at = None
    eval_seconds = 0.0
    last_bpc = None
    if snaps is not None and snaps.due(step) and all(e["step"] != step for e in snaps.timeline["snapshots"]):
        snapshot_now()  # step 0 (the untrained weights), or a resumed step whose snapshot was not yet taken
    bar = _progress_bar(cfg, step, is_main)
    interrupted = _catch_interrupt(cfg, world, is_main)
    try:
        while step < cfg.steps:
            if deadline is not None and _agree(time.time() >= deadline, world):
                stopped_by = "time budget"
                break
            if interrupted.is_set():
                stopped_by = "Ctrl-C"
                break
            x, y, wrapped = batcher.next()
            if wrapped:
                state = None
            x, y = x.to(cfg.device), y.to(cfg.device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, step, elapsed_before + time.time() - t0)
            _, loss, state = net(x, state, y)
            state = detach_state(state)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            step += 1
            chars_seen += x.numel() * world
            bar.update(1 if cfg.anneal_seconds is None else max(0, int(time.time() - t0) - bar.n))
            if step % 10 == 0:
                bar.set_postfix(**({"step": step} if cfg.anneal_seconds else {}), loss=f"{loss.item():.3f}",
                                bpc=f"{loss.item() / LN2:.3f}", val=f"{last_bpc:.3f}" if last_bpc else "-")
            if snaps is not None and snaps.due(step):
                snapshot_now()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                checkpoint_now()
                if world > 1:
                    dist.barrier()
            if cfg.stop_at is not None and step >= cfg.stop_at:
                stopped_by = f"--stop-at {cfg.stop_at}"
                break
    finally:
        bar.close()
        interrupted.restore()
    if stopped_by != "steps" and validated_at != step:
        checkpoint_now()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(step, chars_seen, best_bpc, last_bpc, elapsed_before + time.time() - t0, stopped_by, history,
                       eval_seconds)


def _progress_bar(cfg: TrainConfig, step: int, is_main: bool) -> tqdm:
    """Steps out of --steps; for a run sized by time, seconds out of its budget."""
    off = not (is_main and cfg.progress)
    if cfg.anneal_seconds is None:
        return tqdm(total=cfg.steps, initial=step, disable=off, unit="step", dynamic_ncols=True)
    return tqdm(total=int(cfg.anneal_seconds), disable=off, unit="s", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {elapsed} of " + tqdm.format_interval(cfg.anneal_seconds) + "{postfix}")


class _Interrupt:
    """Set by the first Ctrl-C, which then gives SIGINT back: a second one quits at once."""

    def __init__(self, catch: bool):
        self._flag = threading.Event()
        self._previous = signal.signal(signal.SIGINT, self._on_sigint) if catch else None

    def _on_sigint(self, signum, frame) -> None:
        self._flag.set()
        self.restore()
        _log("Ctrl-C: stopping after this step to validate and save (Ctrl-C again quits without saving)")

    def is_set(self) -> bool:
        return self._flag.is_set()

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _catch_interrupt(cfg: TrainConfig, world: int, is_main: bool) -> _Interrupt:
    # Signal handlers can only be set from the main thread; under torchrun the ranks would need to agree.
    return _Interrupt(cfg.stop_on_interrupt and world == 1 and is_main
                      and threading.current_thread() is threading.main_thread())


def _validate(cfg, model, val_ids, vocab, card, best_bpc, history, step, is_main, out):
    if not is_main:
        return None, best_bpc
    bpc = evaluate_bpc(model, val_ids, cfg.device) if len(val_ids) > 1 else float("nan")
    history.append({"step": step, "val_bpc": round(bpc, 4)})
    _log(f"step {step}: validation {bpc:.4f} bits/char")
    if best_bpc is None or bpc < best_bpc or math.isnan(bpc):
        best_bpc = bpc if not math.isnan(bpc) else best_bpc
        save_keeping_snapshots(out, model, vocab, card(bpc), half=cfg.half)
    return bpc, best_bpc


def _refuse_to_overwrite(out: Path, resume_path: Path, continuing_in_place: bool) -> None:
    """A fresh run must never replace saved work: it would save over it at the first validation."""
    if resume_path.exists():
        raise RnnscopeError(f"a run's resume state is already at {resume_path}: continue it with --resume, "
                            f"or delete {resume_path.parent} to start over")
    if (out / CONFIG).exists() and not continuing_in_place:
        raise RnnscopeError(f"{out} already holds a checkpoint: continue it with --init {out} (fresh optimizer), "
                            "or choose another --out")


def _agree(flag: bool, world: int) -> bool:
    """All ranks stop together: any rank past its deadline stops everyone."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _hardware(device: str, world: int) -> str:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return f"{world} x {name}" if world > 1 else name
