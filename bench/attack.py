"""The attack phase of bench/load.py: hostile traffic beside ordinary visitors, and what the server kept.

While a few ordinary clients run the usual mix, attackers send, all at once and for the whole phase:
  bombs      regex compile bombs (find-units GET and share POST), an adversarial counterfactual,
             a long intervention: each must be a fast 4xx or a bounded, slot-limited cost
  slow       slowloris sockets that trickle one header byte a second
  idle       silent sockets that never send a byte (reopened when the server closes them)
  big        the API's largest response: every unit of state c with top-100 predictions, cached text
  streams    generation streams (server-sent events), read to the end
A prober asks /healthz every 100 ms on its own connection; the report gives its p50/p99/max, how
ordinary requests fared, what each attack got back, and the server's RSS. Loopback only; every loop
ends with the phase.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

REGEX_BOMBS = ["a{2000000}b", "(?:(?:a{1000}){1000}){1000}", "a{4294967294}", "(a{999}){999}", "(?:x{500}){500}y"]
HEALTH_TARGET_MS = 300.0


@dataclass
class Attack:
    """What the attackers saw, and the /healthz timings taken meanwhile."""

    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    statuses: Counter = field(default_factory=Counter)  # (attack kind, status or error name) -> count
    latencies: dict[str, list[float]] = field(default_factory=dict)
    idle_closed_by_server: int = 0
    slow_closed_by_server: int = 0

    def saw(self, kind: str, outcome: int | str, seconds: float | None = None) -> None:
        self.statuses[(kind, outcome)] += 1
        if seconds is not None:
            self.latencies.setdefault(kind, []).append(seconds)


async def _request(attack: Attack, kind: str, http: httpx.AsyncClient, method: str, url: str, **kw) -> None:
    t0 = time.perf_counter()
    try:
        r = await http.request(method, url, **kw)
        await r.aread()
        attack.saw(kind, r.status_code, time.perf_counter() - t0)
    except httpx.HTTPError as e:
        attack.saw(kind, type(e).__name__, time.perf_counter() - t0)


async def health_prober(base: str, stop_at: float, attack: Attack) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                r = await http.get("/healthz")
                if r.status_code == 200:
                    attack.health_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    attack.health_failures += 1
            except httpx.HTTPError:
                attack.health_failures += 1
            await asyncio.sleep(0.1)


async def bombs(base: str, model: str, stop_at: float, attack: Attack) -> None:
    """Each kind of request that once froze or starved the server, in turn, one at a time."""
    text = '"Hello," she said. "Is it raining?" He nodded.\n' * 4
    long_text = ('"Yes," said he. ' * 320)[:5_000]  # the longest text an intervention takes
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        i = 0
        while time.monotonic() < stop_at:
            pattern = REGEX_BOMBS[i % len(REGEX_BOMBS)]
            step = i % 4
            if step == 0:
                await _request(attack, "regex_get", http, "GET", "/ui/find-units",
                               params={"model": model, "text": text, "probe": "regex", "pattern": pattern})
            elif step == 1:
                await _request(attack, "regex_share", http, "POST", "/api/v1/share",
                               json={"model": model, "text": text, "probe": "regex", "pattern": pattern})
            elif step == 2:
                await _request(attack, "counterfactual", http, "POST", "/api/v1/counterfactual",
                               json={"model": model, "original": "a" * 2000, "edited": "ab" * 1000,
                                     "layer": 0, "state": "h", "unit": 0})
            else:
                await _request(attack, "intervene", http, "POST", "/api/v1/intervene",
                               json={"model": model, "text": long_text, "layer": 0, "state": "h", "unit": 0,
                                     "value": 1.0, "start": 4_000, "topk": 20})
            i += 1


async def _hold_socket(host: str, port: int, stop_at: float, trickle: bool) -> bool:
    """Open a socket and stay silent (or trickle a header byte a second); True when the server closed it."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        await asyncio.sleep(0.5)
        return False
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    try:
        for k in range(10_000):
            if time.monotonic() >= stop_at:
                return False
            if trickle:
                writer.write(request[k : k + 1])
                await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                    return True
            except asyncio.TimeoutError:
                continue
        return False
    except (ConnectionError, OSError):
        return True
    finally:
        writer.close()


async def sockets(base: str, stop_at: float, attack: Attack, count: int, trickle: bool) -> None:
    host, port = urlsplit(base).hostname, urlsplit(base).port

    async def one() -> None:
        while time.monotonic() < stop_at:
            if await _hold_socket(host, port, stop_at, trickle):
                if trickle:
                    attack.slow_closed_by_server += 1
                else:
                    attack.idle_closed_by_server += 1

    await asyncio.gather(*(one() for _ in range(count)))


async def big_responses(base: str, model: str, text: str, stop_at: float, attack: Attack, clients: int) -> None:
    body = {"model": model, "text": text, "state": "c", "topk": 100}

    async def one() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            while time.monotonic() < stop_at:
                await _request(attack, "big_trace", http, "POST", "/api/v1/trace", json=body)

    await asyncio.gather(*(one() for _ in range(clients)))


async def streams(base: str, model: str, stop_at: float, attack: Attack, clients: int) -> None:
    async def one(seed: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                params = {"model": model, "text": '"I', "n": 2000, "seed": seed}
                try:
                    async with http.stream("GET", "/api/v1/generate/stream", params=params) as r:
                        async for _ in r.aiter_bytes():
                            if time.monotonic() >= stop_at:
                                break
                        attack.saw("stream", r.status_code, time.perf_counter() - t0)
                        if r.status_code != 200:
                            await asyncio.sleep(0.5)
                except httpx.HTTPError as e:
                    attack.saw("stream", type(e).__name__, time.perf_counter() - t0)

    await asyncio.gather(*(one(s) for s in range(clients)))


async def warm_big_trace(base: str, model: str, text: str) -> int:
    """Trace the big text once so the attack's big responses come from the cache, as in the report."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        r = await http.post("/api/v1/trace", json={"model": model, "text": text, "units": [0], "topk": 0})
        return r.status_code


def tasks(base: str, model: str, big_text: str, stop_at: float, attack: Attack, idle: int, slow: int,
          big: int, stream_clients: int) -> list:
    return [health_prober(base, stop_at, attack), bombs(base, model, stop_at, attack),
            sockets(base, stop_at, attack, idle, trickle=False), sockets(base, stop_at, attack, slow, trickle=True),
            big_responses(base, model, big_text, stop_at, attack, big), streams(base, model, stop_at, attack,
                                                                                stream_clients)]


def summary(attack: Attack) -> dict:
    h = np.asarray(attack.health_ms) if attack.health_ms else np.asarray([float("nan")])
    out = {
        "health_n": len(attack.health_ms),
        "health_failures": attack.health_failures,
        "health_p50_ms": round(float(np.percentile(h, 50)), 1),
        "health_p99_ms": round(float(np.percentile(h, 99)), 1),
        "health_max_ms": round(float(np.max(h)), 1),
        "idle_closed_by_server": attack.idle_closed_by_server,
        "slow_closed_by_server": attack.slow_closed_by_server,
        "attacks": {},
    }
    for (kind, outcome), n in sorted(attack.statuses.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        out["attacks"].setdefault(kind, {})[str(outcome)] = n
    for kind, values in attack.latencies.items():
        out["attacks"][kind]["p50_s"] = round(float(np.percentile(values, 50)), 2)
        out["attacks"][kind]["max_s"] = round(float(np.max(values)), 2)
    out["health_target_met"] = (attack.health_failures == 0 and bool(attack.health_ms)
                                and out["health_p99_ms"] <= HEALTH_TARGET_MS)
    return out


def print_summary(s: dict) -> None:
    print(f"   /healthz during the attack: n={s['health_n']}, p50 {s['health_p50_ms']} ms, p99 {s['health_p99_ms']} ms, "
          f"max {s['health_max_ms']} ms, failures {s['health_failures']} (target p99 <= {HEALTH_TARGET_MS:g} ms: "
          f"{'met' if s['health_target_met'] else 'MISSED'})")
    print(f"   sockets closed by the server: idle {s['idle_closed_by_server']}, slowloris {s['slow_closed_by_server']}")
    for kind, outcome in s["attacks"].items():
        print(f"   attack {kind:15s} {outcome}")
