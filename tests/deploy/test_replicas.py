"""Two `rnnscope serve` replicas behind nginx (deploy/nginx/rnnscope.conf, as shipped), one PostgreSQL store.

A link made through one replica opens through the other; the health check and RNNSCOPE_PUBLIC_URL are
right behind the proxy; the longest text the app takes fits through it; and one replica killed while
bench/load.py's clients run costs no acknowledged share: the proxy sends everything to the other one.
Everything listens on 127.0.0.1; deploy/stack.py's processes are killed by group when the module ends.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

import pytest

from bench import load
from deploy.stack import NGINX_CONF, Stack, http_status, render_nginx_conf

from .conftest import need_nginx, need_postgres

pytestmark = pytest.mark.slow

VIEW = {"model": "load-lstm", "text": 'She said "yes".\nHe left.', "layer": 0, "state": "c", "unit": 3, "mode": "neuron"}


def request(url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), dict(e.headers)


def log_since(stack, before: int, n: int, uri: str) -> list[dict]:
    """The access log's lines for `uri` from line `before` on, once there are n of them (nginx writes a line
    just after the response has gone, so a client, this test or the one before, can be ahead of it)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [ln for ln in stack.nginx.log_lines()[before:] if ln["uri"] == uri]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) == n, (len(lines), n)
            return lines
        time.sleep(0.02)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_postgres()
    need_nginx()
    models = tmp_path_factory.mktemp("replica-models")
    load.small_model(models / "load-lstm", 64, 1)  # bench/load.py's model: its clients' texts fit its vocabulary
    # Loopback clients all share one address: the per-client share limit would be everyone's limit here.
    with Stack(models, "load-lstm", replicas=2, RNNSCOPE_SHARE_RATE_LIMIT="0", RNNSCOPE_TORCH_THREADS="1") as s:
        yield s


def test_the_shipped_config_is_what_runs(stack):
    """nginx -t accepts it, and rendering it changed only the listen port, replica addresses and log paths."""
    assert "test is successful" in stack.nginx.check()
    shipped = NGINX_CONF.read_text().splitlines()
    rendered = (stack.nginx.dir / "rnnscope.conf").read_text().splitlines()
    changed = [(a.strip(), b.strip()) for a, b in zip(shipped, rendered) if a != b]
    assert len(shipped) == len(rendered) and len(changed) == 5, changed
    assert all(re.match(r"(listen|server|access_log|error_log) ", a) for a, _ in changed), changed
    with pytest.raises(ValueError, match="expected two `server 127.0.0.1:800N"):
        render_nginx_conf("127.0.0.1:1", ["127.0.0.1:2"], "/tmp", text=NGINX_CONF.read_text().replace("8002", "9002"))


def test_a_link_made_through_one_replica_opens_through_the_other(stack):
    a, b = stack.replicas
    status, body, _ = request(a.base + "/api/v1/share", VIEW)
    assert status == 200, body
    made = json.loads(body)
    sid = made["id"]
    assert made["url"] == f"{stack.nginx.base}/s/{sid}"  # RNNSCOPE_PUBLIC_URL, not the replica's own address
    status, page, _ = request(f"{b.base}/s/{sid}")
    assert status == 200 and "He left." in page
    status, body, _ = request(b.base + "/api/v1/share", dict(reversed(list(VIEW.items()))))
    assert status == 200 and json.loads(body)["id"] == sid  # the same view is the same link on every replica
    status, body, _ = request(f"{stack.nginx.base}/api/v1/share/{sid}")
    assert status == 200 and json.loads(body)["view"] == made["view"]
    assert request(f"{stack.nginx.base}/s/{sid}")[0] == 200
    count = stack.pg.execute("SELECT COUNT(*), SUM(opened) FROM shares WHERE id = %s", (sid,), database="rnnscope")
    assert count == [(1, 2)]  # one row in the one store, opened once directly and once through the proxy


def test_health_and_the_public_url_behind_the_proxy(stack):
    status, body, _ = request(stack.nginx.base + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "models": 1}
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    status, body, _ = request(stack.nginx.base + "/api/v1/share", {**VIEW, "unit": 4}, headers=evil)
    assert status == 200, body
    sid = json.loads(body)["id"]
    assert json.loads(body)["url"] == f"{stack.nginx.base}/s/{sid}"
    status, page, _ = request(f"{stack.nginx.base}/s/{sid}", headers=evil)
    assert status == 200 and "evil.example" not in page
    assert f'<meta property="og:url" content="{stack.nginx.base}/s/{sid}">' in page


def test_the_proxy_spreads_requests_and_keeps_a_text_on_one_replica(stack):
    """Requests without a text spread over both replicas; the same text in the URL always reaches the same
    one (whose trace cache holds it), and different texts reach both."""
    both = {f"127.0.0.1:{r.port}" for r in stack.replicas}
    before = len(stack.nginx.log_lines())
    for _ in range(40):
        assert request(stack.nginx.base + "/api/v1/models")[0] == 200
    assert {ln["upstream"] for ln in log_since(stack, before, 40, "/api/v1/models")} == both
    by_text = {}
    for i in range(12):
        query = urllib.parse.urlencode({**VIEW, "text": f"Text number {i}.", "unit": i % 3})
        for _ in range(3):
            before = len(stack.nginx.log_lines())
            assert request(f"{stack.nginx.base}/?{query}", headers={"HX-Request": "true"})[0] == 200
            by_text.setdefault(i, set()).add(log_since(stack, before, 1, "/")[0]["upstream"])
    assert all(len(upstreams) == 1 for upstreams in by_text.values()), by_text
    assert set().union(*by_text.values()) == both


def test_the_longest_text_fits_through_the_proxy(stack):
    """A view lives in its URL: 20,000 characters of 3-byte UTF-8 is ~180 KB of query (nginx's default: 414)."""
    text = "€" * 19_995 + " end."
    query = urllib.parse.urlencode({**VIEW, "text": text})
    assert len(query) > 150_000
    status, page, _ = request(f"{stack.nginx.base}/?{query}", headers={"HX-Request": "true"}, timeout=60)
    assert status == 200 and page.count('class="ch') >= 20_000
    status, _, _ = request(f"{stack.nginx.base}/?{query}{'x' * 200_000}", timeout=60)
    assert status == 414  # well past the app's own limit (~300 KB of request line) the proxy refuses it


def test_a_replica_killed_under_load_costs_no_acknowledged_share(stack):
    """bench/load.py's clients (the real mix, no think time) through the proxy; replica 2 is SIGKILLed a third
    of the way in. Every share acknowledged (200) opens afterwards, no request fails (but for a response cut
    mid-transfer by the kill), and from a second after the kill every request is answered by replica 1 (nginx
    tries replica 2 again now and then: refused, next)."""
    a, b = stack.replicas
    info = json.loads(request(stack.nginx.base + "/api/v1/models")[1])[0]
    shared = load.Shared("load-lstm", info["layers"], info["hidden"], info["states"])
    killed: dict[str, float] = {}
    duration = 15.0

    def kill_b() -> None:
        time.sleep(duration / 3)
        killed["at"] = time.time()
        b.kill()

    killer = threading.Thread(target=kill_b)
    killer.start()
    try:
        phase = asyncio.run(load.run_phase(stack.nginx.base, a.proc.pid, shared, 8, duration, 30.0, 7, 20_000))
    finally:
        killer.join(timeout=30)
    s = load.summary(phase)
    assert "at" in killed and http_status(b.base + "/healthz") is None  # replica 2 really is gone
    # nginx moves a request to the other replica until it has begun passing the response on: a response
    # caught mid-transfer by the SIGKILL is cut (the client sees RemoteProtocolError). Seen once in 663
    # requests under a loaded full-suite run; anything else dropped, or more of them, is a failure.
    cut = s["dropped"].get("RemoteProtocolError", 0)
    assert set(s["dropped"]) <= {"RemoteProtocolError"} and cut <= 2, s["dropped"]
    assert s["errors_5xx"] == 0 and s["timeouts"] == 0 and s["bad_bodies"] == 0, s
    assert set(s["statuses"]) <= {"200", "422"}, s["statuses"]  # 422: the bench's probe on a text with no quotes
    assert set(s["per_kind"]["share_create"]["statuses"]) == {"200"}  # every link asked for was acknowledged

    lines = stack.nginx.log_lines()
    after = [ln for ln in lines if float(ln["msec"]) > killed["at"] + 1.0]
    assert len(after) >= 50, len(after)  # the load went on after the kill
    survivor = f"127.0.0.1:{a.port}"
    assert all(ln["upstream"].split(", ")[-1] == survivor for ln in after), Counter(ln["upstream"] for ln in after)
    assert all(ln["status"] in ("200", "422") for ln in after), Counter(ln["status"] for ln in after)
    before = [ln for ln in lines if float(ln["msec"]) < killed["at"]]
    assert {ln["upstream"] for ln in before} >= {survivor, f"127.0.0.1:{b.port}"}  # both served before it

    # Every acknowledged share is in the one store and opens through the proxy.
    links = sorted(set(shared.links))
    assert len(links) >= 10
    stored = {row[0] for row in stack.pg.execute("SELECT id FROM shares", database="rnnscope")}
    assert set(links) <= stored
    for sid in links:
        status, body, _ = request(f"{stack.nginx.base}/api/v1/share/{sid}")
        assert status == 200 and json.loads(body)["id"] == sid
    status, body, _ = request(stack.nginx.base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    # Neither nginx log holds a view's text (the error log would quote request lines at `error`).
    logs = stack.nginx.access_log.read_text() + stack.nginx.error_log.read_text()
    if stack.nginx.site_error_log.exists():
        logs += stack.nginx.site_error_log.read_text()
    assert "text=" not in logs and "%20" not in logs and "+the+" not in logs

    retried = sum(", " in ln["upstream"] for ln in lines)
    print(f"\nkill under load: {s['requests']} requests at {s['rps']} req/s (p99 {s['p99_ms']} ms), "
          f"{len(after)} after the kill, {retried} retried on the other replica by nginx, {len(links)} links made, "
          f"statuses {s['statuses']}")

    # Replica 2 comes back on its port and opens a link made while it was down.
    b.start()
    status, page, _ = request(f"{b.base}/s/{links[-1]}")
    assert status == 200
