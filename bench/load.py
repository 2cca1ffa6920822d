"""Load test: a real `rnnscope serve` on loopback, N concurrent clients for a fixed time each, then a report.

Starts the server itself (127.0.0.1, a free port, its own temp share database; only loopback traffic)
and stops it at the end. Each client loops without think time (a stress test, not a model of one
person) over a realistic mix:
  page_new     15%  GET / as htmx sends it, a text of 200-5,000 characters never seen before (model run)
  api_new      10%  POST /api/v1/trace, a new text, one layer, state and unit (model run)
  neuron       45%  GET / for the client's last text with another layer/state/unit (cache hit)
  probe        10%  POST /api/v1/probe on the last text (skipped for good after a 404: no probe API)
  share_create 10%  POST /api/v1/share for the current view
  share_open   10%  GET /s/{id} of a link some client made
and reports requests/s, p50/p95/p99 latency (overall and per kind), responses by status, dropped
connections, client timeouts, and the server's RSS (peak, and the median of each phase's first and
second half: the trace cache is bounded in bytes, so memory should be flat once warm).

    .venv/bin/python bench/load.py                      # small random-weight LSTM, 32 and 64 clients, 60 s each
    .venv/bin/python bench/load.py --duration 10 --clients 8
    .venv/bin/python bench/load.py --model-folder models/zoo/austen-lstm   # a real checkpoint (copied first)

    .venv/bin/python bench/load.py --clients 8 --duration 20 --attack 60   # then 60 s under attack (bench/attack.py)

Exit status 1 when a phase saw a 5xx or a dropped connection (the target is none of either), or when the
attack phase saw a 500, /healthz p99 above 300 ms, or no ordinary new trace served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import attack as hostile  # noqa: E402  (needs the root on the path)

HX = {"HX-Request": "true"}
# A visitor traces a text, then steps through units, probes, shares: most requests re-colour a cached trace.
MIX = {"page_new": 15, "api_new": 10, "neuron": 45, "probe": 10, "share_create": 10, "share_open": 10}
FALLBACK = ('"I cannot think what you mean," said she, "by talking of it." He laughed. '
            "Nobody answered; the room was quiet for a while, and then the door opened.\n")
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError, httpx.CloseError)


# ---- the server ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_model(folder: Path, hidden: int, layers: int) -> Path:
    """A random-weight LSTM over the corpus's characters: the real shapes' code paths, a small model's cost."""
    import torch

    from models.charlm import CharLM, ModelConfig
    from models.checkpoint import save_checkpoint
    from models.vocab import CharVocab

    torch.manual_seed(0)
    vocab = CharVocab.from_text(corpus()[:200_000])
    model = CharLM(ModelConfig(cell="lstm", n_layers=layers, hidden=hidden, emb=32, vocab_size=len(vocab))).eval()
    return save_checkpoint(folder, model, vocab, {"corpus": "austen", "note": "random weights, for bench/load.py"})


def start_server(models_dir: Path, model: str, data_dir: Path, log_path: Path, env_extra: dict[str, str],
                 memory_cap_mb: int = 0):
    """The server on a free loopback port; memory_cap_mb > 0 caps its address space (RLIMIT_AS), so an
    attack that would grow it without bound fails inside the server instead of taking the machine down."""
    port = free_port()
    exe = shutil.which("rnnscope", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "app.cli"]
    env = {**os.environ, "RNNSCOPE_MODELS_DIR": str(models_dir), "RNNSCOPE_DATA_DIR": str(data_dir),
           "RNNSCOPE_DEFAULT_MODEL": model, "RNNSCOPE_RATE_LIMIT": "0", **env_extra}
    env.pop("RNNSCOPE_DATABASE_URL", None)
    log = log_path.open("w")
    def cap() -> None:
        if memory_cap_mb > 0:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_cap_mb << 20, memory_cap_mb << 20))

    proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=cap)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("rnnscope serve did not come up:\n" + log_path.read_text()[-3000:])
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---- the clients --------------------------------------------------------------------------
_CORPUS: str | None = None


def corpus() -> str:
    global _CORPUS
    if _CORPUS is None:
        val = ROOT / "data" / "austen.val.txt"
        _CORPUS = val.read_text(encoding="utf-8") if val.is_file() else FALLBACK * 2000
    return _CORPUS


@dataclass
class Shared:
    """What the clients of one run share: the model's shape, links made so far, whether probes exist."""

    model: str
    layers: int
    hidden: int
    states: list[str]
    links: list[str] = field(default_factory=list)
    probe_api: bool = True


@dataclass
class Phase:
    clients: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)
    by_kind_status: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    timeouts: int = 0
    bad_bodies: int = 0
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the phase, MB)
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server process used during the phase
    client_cpu: float = 0.0  # CPU seconds this load generator used


class Client:
    def __init__(self, i: int, http: httpx.AsyncClient, shared: Shared, phase: Phase, seed: int):
        self.rnd = random.Random(seed * 1000 + i)
        self.http = http
        self.shared = shared
        self.phase = phase
        self.text = self.new_text()
        self.view = self.new_view()
        self.fresh = True

    def new_text(self) -> str:
        n = self.rnd.randint(200, 5000)
        src = corpus()
        start = self.rnd.randrange(0, max(1, len(src) - n))
        return src[start : start + n]

    def new_view(self) -> dict[str, str]:
        s = self.shared
        return {"model": s.model, "layer": str(self.rnd.randrange(s.layers)), "state": self.rnd.choice(s.states),
                "unit": str(self.rnd.randrange(s.hidden)), "mode": "neuron"}

    async def one(self) -> None:
        kinds = list(MIX)
        kind = self.rnd.choices(kinds, weights=[MIX[k] for k in kinds])[0]
        if kind == "probe" and not self.shared.probe_api:
            kind = "neuron"
        if kind == "share_open" and not self.shared.links:
            kind = "share_create"
        if kind == "neuron" and self.fresh:
            kind = "page_new"  # a client's first request traces its text
        self.fresh = False
        t0 = time.perf_counter()
        try:
            status, ok = await getattr(self, kind)()
        except httpx.TimeoutException:
            self.phase.timeouts += 1
            return
        except DROPPED as e:
            self.phase.dropped[type(e).__name__] += 1
            return
        self.phase.latencies[kind].append(time.perf_counter() - t0)
        self.phase.statuses[status] += 1
        self.phase.by_kind_status[(kind, status)] += 1
        if not ok:
            self.phase.bad_bodies += 1

    async def page_new(self) -> tuple[int, bool]:
        self.text, self.view = self.new_text(), self.new_view()
        return await self._page()

    async def neuron(self) -> tuple[int, bool]:
        self.view = self.new_view()
        return await self._page()

    async def _page(self) -> tuple[int, bool]:
        r = await self.http.get("/", params={**self.view, "text": self.text}, headers=HX)
        body = await r.aread()
        return r.status_code, r.status_code != 200 or b'id="view"' in body

    async def api_new(self) -> tuple[int, bool]:
        self.text, self.view = self.new_text(), self.new_view()
        v = self.view
        r = await self.http.post("/api/v1/trace", json={"model": v["model"], "text": self.text, "layer": int(v["layer"]),
                                                        "state": v["state"], "units": [int(v["unit"])]})
        if r.status_code != 200:
            return r.status_code, True
        data = r.json()
        return 200, data["length"] == len(self.text) and len(data["layers"][0]["states"][v["state"]]) == len(self.text)

    async def probe(self) -> tuple[int, bool]:
        r = await self.http.post("/api/v1/probe", json={"model": self.shared.model, "text": self.text,
                                                        "probe": "quotes", "top": 10})
        await r.aread()
        if r.status_code in (404, 405) and "unknown model" not in r.text:
            self.shared.probe_api = False  # no probe API on this server: skip probes from now on
        return r.status_code, True

    async def share_create(self) -> tuple[int, bool]:
        v = self.view
        r = await self.http.post("/api/v1/share", json={"model": v["model"], "layer": int(v["layer"]), "state": v["state"],
                                                        "unit": int(v["unit"]), "mode": v["mode"], "text": self.text})
        if r.status_code != 200:
            await r.aread()
            return r.status_code, True
        sid = r.json()["id"]
        if len(self.shared.links) < 10_000:
            self.shared.links.append(sid)
        return 200, True

    async def share_open(self) -> tuple[int, bool]:
        sid = self.rnd.choice(self.shared.links)
        r = await self.http.get(f"/s/{sid}")
        body = await r.aread()
        return r.status_code, r.status_code != 200 or b'id="view"' in body


async def run_phase(base: str, pid: int, shared: Shared, clients: int, duration: float, timeout: float,
                    seed: int, max_requests: int, beside: list | None = None) -> Phase:
    """One phase of `clients` ordinary visitors; `beside`: coroutines (attackers) run alongside it."""
    phase = Phase(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as http:
        workers = [Client(i, http, shared, phase, seed) for i in range(clients)]
        t0 = time.monotonic()
        stop_at = t0 + duration
        done = 0

        async def loop(c: Client) -> None:
            nonlocal done
            while time.monotonic() < stop_at and done < max_requests:
                done += 1
                await c.one()

        async def sample() -> None:
            while time.monotonic() < stop_at:
                phase.rss.append((time.monotonic() - t0, rss_mb(pid)))
                await asyncio.sleep(0.25)

        cpu0, own0 = cpu_seconds(pid), time.process_time()
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(loop(c) for c in workers), *(beside or []))
        phase.seconds = time.monotonic() - t0  # includes the last requests' tails
        phase.server_cpu, phase.client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - own0
        sampler.cancel()
        phase.rss.append((phase.seconds, rss_mb(pid)))
    return phase


# ---- the report ---------------------------------------------------------------------------
def pct(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    a = np.asarray(values) * 1000
    return tuple(float(x) for x in np.percentile(a, [50, 95, 99]))


def summary(phase: Phase) -> dict:
    every = [x for v in phase.latencies.values() for x in v]
    p50, p95, p99 = pct(every)
    rss = [mb for _, mb in phase.rss]
    first = [mb for t, mb in phase.rss if t < phase.seconds / 2]
    second = [mb for t, mb in phase.rss if t >= phase.seconds / 2]
    return {
        "clients": phase.clients,
        "seconds": round(phase.seconds, 1),
        "requests": len(every),
        "rps": round(len(every) / phase.seconds, 1) if phase.seconds else 0.0,
        "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
        "statuses": {str(k): v for k, v in sorted(phase.statuses.items())},
        "errors_5xx": sum(v for k, v in phase.statuses.items() if k >= 500),
        "dropped": dict(phase.dropped),
        "timeouts": phase.timeouts,
        "bad_bodies": phase.bad_bodies,
        "rss_start_mb": round(rss[0], 1) if rss else None,
        "rss_peak_mb": round(max(rss), 1) if rss else None,
        "rss_end_mb": round(rss[-1], 1) if rss else None,
        # flat memory: the second half's median RSS is no higher than the first half's
        "rss_median_first_half_mb": round(float(np.median(first)), 1) if first else None,
        "rss_median_second_half_mb": round(float(np.median(second)), 1) if second else None,
        "server_cpu_cores": round(phase.server_cpu / phase.seconds, 2) if phase.seconds else None,
        "client_cpu_cores": round(phase.client_cpu / phase.seconds, 2) if phase.seconds else None,
        "per_kind": {k: {"n": len(v), **dict(zip(("p50_ms", "p95_ms", "p99_ms"), (round(x, 1) for x in pct(v)))),
                         "statuses": {str(s): n for (kk, s), n in sorted(phase.by_kind_status.items()) if kk == k}}
                     for k, v in sorted(phase.latencies.items())},
    }


def print_summary(s: dict) -> None:
    print(f"\n== {s['clients']} clients, {s['seconds']} s: {s['requests']:,} requests, {s['rps']} req/s; "
          f"latency p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms")
    print(f"   statuses {s['statuses']}; 5xx {s['errors_5xx']}; dropped {s['dropped'] or 0}; "
          f"client timeouts {s['timeouts']}; wrong bodies {s['bad_bodies']}")
    print(f"   server RSS: start {s['rss_start_mb']} MB, peak {s['rss_peak_mb']} MB, end {s['rss_end_mb']} MB, "
          f"median {s['rss_median_first_half_mb']} MB in the first half, {s['rss_median_second_half_mb']} MB in the "
          "second")
    print(f"   CPU used: server {s['server_cpu_cores']} cores, this load generator {s['client_cpu_cores']} cores "
          f"(of {os.cpu_count()}; the rest went to other processes)")
    for kind, k in s["per_kind"].items():
        print(f"   {kind:13s} n={k['n']:6,d}  p50 {k['p50_ms']:8.1f}  p95 {k['p95_ms']:8.1f}  p99 {k['p99_ms']:8.1f} ms  "
              f"{k['statuses']}")


async def main_async(args, base: str, pid: int, shared: Shared) -> list[dict]:
    # Warm-up: a few requests of every kind from a handful of clients, so the first phase is not the cold start.
    if args.warmup > 0:
        await run_phase(base, pid, shared, min(4, max(args.clients)), args.warmup, args.timeout, args.seed + 99,
                        args.max_requests)
    out = []
    for n in args.clients:
        phase = await run_phase(base, pid, shared, n, args.duration, args.timeout, args.seed + n, args.max_requests)
        s = summary(phase)
        print_summary(s)
        out.append(s)
    if args.attack > 0:
        out.append(await attack_phase(args, base, pid, shared))
    return out


async def attack_phase(args, base: str, pid: int, shared: Shared) -> dict:
    """Ordinary clients while every known attack runs beside them (bench/attack.py)."""
    src = corpus()
    big_text = (src * (1 + 7000 // max(1, len(src))))[:7000]
    warm = await hostile.warm_big_trace(base, shared.model, big_text)
    attack = hostile.Attack()
    stop_at = time.monotonic() + args.attack
    beside = hostile.tasks(base, shared.model, big_text, stop_at, attack, idle=args.idle_sockets,
                           slow=args.slow_sockets, big=args.big_clients, stream_clients=args.stream_clients)
    clients = args.attack_clients
    print(f"\n== attack phase, {args.attack:g} s: {clients} ordinary clients beside {args.idle_sockets} idle and "
          f"{args.slow_sockets} slowloris sockets, {args.big_clients} big-response clients, {args.stream_clients} "
          f"generation streams and one bomb sender (big text warmed: {warm})")
    phase = await run_phase(base, pid, shared, clients, args.attack, args.timeout, args.seed + 7, args.max_requests,
                            beside=beside)
    s = summary(phase)
    print_summary(s)
    a = hostile.summary(attack)
    hostile.print_summary(a)
    new_ok = sum(n for (kind, status), n in phase.by_kind_status.items() if kind in ("page_new", "api_new")
                 and status == 200)
    five_hundreds = s["statuses"].get("500", 0) + sum(o.get("500", 0) for o in a["attacks"].values())
    a["ordinary_new_traces_ok"] = new_ok
    a["errors_500"] = five_hundreds
    a["target_met"] = a["health_target_met"] and new_ok > 0 and five_hundreds == 0
    print(f"   ordinary new traces served: {new_ok}; 500s anywhere: {five_hundreds}; attack target "
          f"({'met' if a['target_met'] else 'MISSED'})")
    return {**s, "attack": a}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[32, 64], help="concurrent clients, one phase each")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of light load before the first phase")
    ap.add_argument("--model-folder", type=Path, default=None,
                    help="a checkpoint folder to serve (copied, so a training run rewriting it changes nothing); "
                         "default: a small random-weight LSTM made for the run")
    ap.add_argument("--hidden", type=int, default=128, help="the default model's units per layer")
    ap.add_argument("--layers", type=int, default=2, help="the default model's layers")
    ap.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, seconds")
    ap.add_argument("--max-requests", type=int, default=500_000, help="stop a phase after this many requests")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra server setting, e.g. RNNSCOPE_MAX_CONCURRENT_TRACES=2 (repeatable)")
    ap.add_argument("--mix", action="append", default=[], metavar="KIND=WEIGHT",
                    help=f"change one kind's weight, e.g. probe=0 (kinds: {', '.join(MIX)})")
    ap.add_argument("--attack", type=float, default=0.0, help="seconds of an attack phase after the others (0 = none)")
    ap.add_argument("--attack-clients", type=int, default=8, help="ordinary clients during the attack phase")
    ap.add_argument("--idle-sockets", type=int, default=200, help="silent sockets held during the attack")
    ap.add_argument("--slow-sockets", type=int, default=50, help="slowloris sockets during the attack")
    ap.add_argument("--big-clients", type=int, default=8, help="clients asking for the largest cached response")
    ap.add_argument("--stream-clients", type=int, default=20, help="generation streams held open during the attack")
    ap.add_argument("--memory-cap-mb", type=int, default=8192,
                    help="the server's address-space cap in MiB (0 = none); the attack phase must never run uncapped")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    for kv in args.mix:
        kind, _, weight = kv.partition("=")
        if kind not in MIX or not weight.isdigit():
            ap.error(f"--mix {kv!r}: expected KIND=WEIGHT with KIND one of {', '.join(MIX)}")
        MIX[kind] = int(weight)
    if args.duration <= 0 or args.duration > 600 or any(not 1 <= n <= 512 for n in args.clients):
        ap.error("--duration must be in (0, 600] s and --clients in 1..512")
    env_extra = dict(kv.split("=", 1) for kv in args.env)

    with tempfile.TemporaryDirectory(prefix="rnnscope-load-") as tmp:
        tmp_path = Path(tmp)
        models_dir = tmp_path / "models"
        if args.model_folder is not None:
            name = args.model_folder.resolve().name
            shutil.copytree(args.model_folder, models_dir / name)
            what = f"{args.model_folder} (a copy)"
        else:
            name = "load-lstm"
            small_model(models_dir / name, args.hidden, args.layers)
            what = f"random-weight LSTM {args.layers}x{args.hidden}"
        log_path = tmp_path / "serve.log"
        proc, base = start_server(models_dir, name, tmp_path / "data", log_path, env_extra, args.memory_cap_mb)
        try:
            info = next(m for m in httpx.get(base + "/api/v1/models").json() if m["name"] == name)
            shared = Shared(name, info["layers"], info["hidden"], info["states"])
            print(f"server {base} (pid {proc.pid}), model {name}: {what}, {info['cell']} "
                  f"{info['layers']}x{info['hidden']}; {os.cpu_count()} CPUs; phases {args.clients} x "
                  f"{args.duration:g} s; mix {MIX}")
            results = asyncio.run(main_async(args, base, proc.pid, shared))
            peak = rss_mb(proc.pid, "VmHWM")
            print(f"\nserver peak RSS over the whole run (VmHWM): {peak:.1f} MB; probe API: "
                  f"{'yes' if shared.probe_api else 'absent (skipped)'}; share links made: {len(shared.links):,}")
        finally:
            stop_server(proc)
        log_text = log_path.read_text(errors="replace")
        print(f"server log: {len(log_text.encode()):,} bytes, {log_text.count(chr(10)):,} lines")
        errors = [line for line in log_text.splitlines() if "Traceback" in line or "ERROR" in line]
        if errors:
            print(f"server log: {len(errors)} error line(s), first: {errors[0][:200]}")
    if args.json:
        args.json.write_text(json.dumps({"model": what, "peak_rss_mb": peak, "phases": results}, indent=2))
    failed = any(r["errors_5xx"] or r["dropped"] for r in results if "attack" not in r)
    failed = failed or any(not r["attack"]["target_met"] for r in results if "attack" in r)
    print("target (no 5xx, no dropped connections):", "MISSED" if failed else "met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
