"""A throwaway local stack: a PostgreSQL cluster, `rnnscope serve` replicas and nginx, all on loopback.

The tests in tests/deploy/ use it, and so does a person trying the deployment out (deploy/README.md):

    .venv/bin/python deploy/stack.py up                 # PostgreSQL + 2 replicas + nginx on http://127.0.0.1:8080
    .venv/bin/python deploy/stack.py bench --duration 20   # bench/load.py through nginx, one replica vs two

Every process runs in its own session (killed by process group when the stack closes, even after a
failure) and listens on 127.0.0.1 only. PostgreSQL refuses to run as root, and nginx should not: when
this runs as root, both run as `nobody` with a private folder that user owns.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = Path(__file__).resolve().parent / "nginx" / "rnnscope.conf"


# ---- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unprivileged() -> dict:
    """Popen arguments that drop root to `nobody` (nothing when not root): PostgreSQL refuses root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("nobody")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def private_dir(prefix: str) -> Path:
    """A new folder that the unprivileged user owns (under /tmp when root, so `nobody` can reach it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.geteuid() == 0 else None))
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def as_owner(path: Path) -> None:
    """Give a file or folder the stack wrote to the unprivileged user (a no-op when not root)."""
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, user.pw_uid, user.pw_gid)


def kill_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    """Signal a process started with start_new_session=True and everything it started."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait)


def stop_group(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Ask politely (sig), then SIGKILL the whole group after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        kill_group(proc, signal.SIGKILL, 1.0)  # its children, if any outlived it
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    kill_group(proc, signal.SIGKILL, 5.0)


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None,
               every: float = 0.1):
    """Poll check() until it returns a true value; bounded in time; fails early when proc has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
            state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else "timed out"
            raise RuntimeError(f"{what}: {state}\n{tail}")
        time.sleep(every)


# ---- PostgreSQL ----------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The folder holding initdb and postgres: beside `initdb` on PATH, else Debian's newest."""
    found = shutil.which("initdb")
    candidates = [Path(os.path.realpath(found)).parent] if found else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    candidates += [Path(p) for p in reversed(versions)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


class PostgresCluster:
    """initdb + postgres on a free loopback port, in a private folder; password login as `rnnscope`."""

    user = "rnnscope"

    def __init__(self, port: int | None = None, log_statements: bool = False):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL's server programs (initdb, postgres) are missing: "
                               "apt-get install postgresql")
        self.port = port or free_port()
        self.password = secrets.token_hex(12)
        self.dir = private_dir("rnnscope-pg-")
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self.log_statements = log_statements
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        as_owner(pwfile)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        pwfile.unlink()

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=self._env(), **unprivileged())
        if r.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")

    def _env(self) -> dict:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.dir)}

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        """Start the server (again, after stop()) and wait until it takes logins."""
        settings = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.dir),
                    "max_connections": "200", "shared_buffers": "32MB", "logging_collector": "off"}
        if self.log_statements:
            settings["log_statement"] = "all"
        cmd = [str(self.bin / "postgres"), "-D", str(self.data)]
        for k, v in settings.items():
            cmd += ["-c", f"{k}={v}"]
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=self._env(), **unprivileged())
        finally:
            log.close()
        wait_until(self._ready, timeout, "postgres did not start", self.proc, self.log, every=0.2)
        return self

    def _ready(self) -> bool:
        try:
            self.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - starting up: refused, or "the database system is starting up"
            return False

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """fast: roll back open transactions and shut down cleanly (SIGINT); immediate: crash-like (SIGQUIT)."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        if self.proc is not None:
            stop_group(self.proc, sig, grace=timeout)
            self.proc = None

    def close(self) -> None:
        """Stop the server for good and delete its folder."""
        try:
            self.stop("immediate", timeout=10)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def url(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A SQLAlchemy URL; plain postgresql:// (the store picks the psycopg driver)."""
        return (f"postgresql://{user or self.user}:{password or self.password}@127.0.0.1:{self.port}/{database}")

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True, connect_timeout=3)

    def execute(self, sql: str, params=None, database: str = "postgres") -> list[tuple]:
        with self.connect(database) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its name."""
        name = name or "t_" + secrets.token_hex(6)
        self.execute(f'CREATE DATABASE "{name}"')
        return name


# ---- rnnscope replicas ---------------------------------------------------------------------------
def rnnscope_cmd() -> list[str]:
    exe = shutil.which("rnnscope", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "app.cli"]


class Replica:
    """One `rnnscope serve` on 127.0.0.1:port; start() again after stop()/kill() restarts it on the same port."""

    def __init__(self, name: str, models_dir: Path, data_dir: Path, log_dir: Path, port: int | None = None,
                 **env: str):
        self.name = name
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}.log"
        self.env = {**os.environ, "RNNSCOPE_MODELS_DIR": str(models_dir), "RNNSCOPE_DATA_DIR": str(data_dir),
                    "RNNSCOPE_RESCAN_SECONDS": "0", **env}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Replica:
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen([*rnnscope_cmd(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                          "--log-level", "warning"], cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        wait_until(lambda: http_status(self.base + "/healthz") == 200, timeout, f"replica {self.name} did not come up",
                   self.proc, self.log, every=0.2)
        return self

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGTERM, grace=15)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crashed host or an OOM kill looks like to the proxy."""
        kill_group(self.proc, signal.SIGKILL)
        self.proc = None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# ---- nginx ---------------------------------------------------------------------------------------
def nginx_bin() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def render_nginx_conf(listen: str, replicas: list[str], log_dir: str, text: str | None = None) -> str:
    """deploy/nginx/rnnscope.conf with this stack's listen address, replica addresses and log folder.

    Only those change; each must be found exactly where the shipped file has it, so a config reshaped
    without updating this fails here instead of silently testing something else.
    """
    text = NGINX_CONF.read_text() if text is None else text
    servers = re.findall(r"^( +)server 127\.0\.0\.1:800\d( .*);$", text, re.M)
    if len(servers) != 2 or len(set(servers)) != 1:
        raise ValueError("deploy/nginx/rnnscope.conf: expected two `server 127.0.0.1:800N ...;` lines alike")
    indent, options = servers[0]
    block = "\n".join(f"{indent}server {addr}{options};" for addr in replicas)
    text = re.sub(r"^ +server 127\.0\.0\.1:8001 .*;\n +server 127\.0\.0\.1:8002 .*;$", lambda m: block, text,
                  count=1, flags=re.M)
    text, n_listen = re.subn(r"^(\s*)listen 80;$", lambda m: f"{m.group(1)}listen {listen};", text, flags=re.M)
    text, n_log = re.subn(r"^(\s*)(access_log|error_log) /var/log/nginx/(rnnscope\.\w+\.log) (\w+);$",
                          lambda m: f"{m.group(1)}{m.group(2)} {log_dir}/{m.group(3)} {m.group(4)};", text, flags=re.M)
    if (n_listen, n_log) != (1, 2):
        raise ValueError(f"deploy/nginx/rnnscope.conf: expected one `listen 80;` and two /var/log/nginx/rnnscope.*.log "
                         f"lines, found {n_listen} and {n_log}")
    return text


class Nginx:
    """nginx (Debian's package) in the foreground with its own prefix, pid and logs; unprivileged."""

    def __init__(self, replicas: list[str], port: int | None = None):
        self.bin = nginx_bin()
        if self.bin is None:
            raise RuntimeError("nginx is missing: apt-get install nginx")
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = private_dir("rnnscope-nginx-")
        self.access_log = self.dir / "rnnscope.access.log"
        self.site_error_log = self.dir / "rnnscope.error.log"  # the shipped config's own (crit only)
        self.error_log = self.dir / "error.log"
        self.proc: subprocess.Popen | None = None
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "tmp" / sub).mkdir(parents=True)
        site = render_nginx_conf(f"127.0.0.1:{self.port}", replicas, str(self.dir))
        (self.dir / "rnnscope.conf").write_text(site)
        d = self.dir
        # The frame Debian's /etc/nginx/nginx.conf gives a conf.d/ file, with every path in this folder.
        (d / "nginx.conf").write_text(f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    access_log off;
    include {d}/rnnscope.conf;
}}
""")
        as_owner(self.dir)

    def _cmd(self, *extra: str) -> list[str]:
        return [self.bin, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.error_log), *extra]

    def check(self) -> str:
        """`nginx -t` on the rendered config; raises with nginx's words when it is refused."""
        r = subprocess.run(self._cmd("-t"), capture_output=True, text=True, timeout=30, **unprivileged())
        if r.returncode != 0:
            raise RuntimeError(f"nginx -t refused the config:\n{r.stderr}")
        return r.stderr

    def start(self, timeout: float = 30.0) -> Nginx:
        self.check()
        self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, **unprivileged())
        wait_until(lambda: _listening(self.port), timeout, "nginx did not start", self.proc, self.error_log)
        return self

    def close(self) -> None:
        try:
            stop_group(self.proc, signal.SIGQUIT, grace=10)  # graceful: finish the requests in flight
        finally:
            self.proc = None

    def log_lines(self) -> list[dict]:
        """The access log, one dict a line (the shipped `rnnscope` log_format)."""
        out = []
        if not self.access_log.is_file():
            return out
        for line in self.access_log.read_text(errors="replace").splitlines():
            m = LOG_LINE.match(line)
            if m:
                out.append(m.groupdict())
        return out


# The shipped log_format: no query strings (they hold the user's text), the upstream(s) tried and their statuses.
LOG_LINE = re.compile(r'^(?P<addr>\S+) \[(?P<msec>[\d.]+)\] "(?P<method>\S+) (?P<uri>\S*)" (?P<status>\d+) '
                      r'(?P<bytes>\d+) (?P<time>[\d.]+) upstream=(?P<upstream>.*?) upstream_status=(?P<ustatus>.*)$')


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- the whole stack -----------------------------------------------------------------------------
class Stack(contextlib.ExitStack):
    """PostgreSQL, `replicas` rnnscope processes sharing its database, nginx in front; closed in reverse."""

    def __init__(self, models_dir: Path, default_model: str, replicas: int = 2, listen_port: int | None = None,
                 public_url: str | None = None, **env: str):
        super().__init__()
        self.models_dir, self.default_model = models_dir, default_model
        self.n, self.listen_port, self.public_url, self.env = replicas, listen_port, public_url, env
        self.pg: PostgresCluster | None = None
        self.replicas: list[Replica] = []
        self.nginx: Nginx | None = None

    def __enter__(self) -> Stack:
        super().__enter__()
        try:
            self.pg = PostgresCluster()
            self.callback(self.pg.close)
            self.pg.start()
            self.database_url = self.pg.url(self.pg.create_database("rnnscope"))
            self.work = Path(tempfile.mkdtemp(prefix="rnnscope-stack-"))
            self.callback(shutil.rmtree, self.work, True)
            port = self.listen_port or free_port()
            public = self.public_url or f"http://127.0.0.1:{port}"
            for i in range(self.n):
                r = Replica(f"replica-{i + 1}", self.models_dir, self.work / f"data-{i + 1}", self.work,
                            RNNSCOPE_DATABASE_URL=self.database_url, RNNSCOPE_DEFAULT_MODEL=self.default_model,
                            RNNSCOPE_PUBLIC_URL=public, **self.env)
                self.callback(r.kill)
                self.replicas.append(r)
            for r in self.replicas:  # one at a time: two cold starts at once double each one's wait
                r.start()
            self.nginx = Nginx([f"127.0.0.1:{r.port}" for r in self.replicas], port=port)
            self.callback(shutil.rmtree, self.nginx.dir, True)
            self.callback(self.nginx.close)
            self.nginx.start()
        except BaseException:
            self.close()
            raise
        return self


def _demo_model(folder: Path) -> tuple[Path, str]:
    """The shipped models when present; else a small random-weight LSTM (bench/load.py's)."""
    zoo = ROOT / "models" / "zoo"
    if (zoo / "austen-lstm" / "config.json").is_file():
        return zoo, "austen-lstm"
    sys.path.insert(0, str(ROOT))
    from bench.load import small_model

    small_model(folder / "load-lstm", 128, 2)
    return folder, "load-lstm"


def cmd_up(args) -> int:
    with tempfile.TemporaryDirectory(prefix="rnnscope-demo-") as tmp:
        models, default = (args.models, args.default_model) if args.models else _demo_model(Path(tmp))
        with Stack(models, default, replicas=args.replicas, listen_port=args.port) as stack:
            print(f"PostgreSQL 127.0.0.1:{stack.pg.port} ({stack.pg.dir}), replicas "
                  f"{', '.join(r.base for r in stack.replicas)}")
            print(f"open {stack.nginx.base}/  (Ctrl-C stops everything)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while all(r.proc is not None and r.proc.poll() is None for r in stack.replicas):
                    time.sleep(1)
    return 0


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in a process group (nginx's workers, PostgreSQL's backends)."""
    total = 0.0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


BENCH_SETUPS = (("1 replica, direct", 1, True), ("nginx, 1 replica", 1, False), ("nginx, 2 replicas", 2, False))


def cmd_bench(args) -> int:
    """bench/load.py's clients through nginx to one replica and to two (and to one without nginx), in
    interleaved rounds so that a machine shared with other work biases no setup; the CPU each part used
    is measured too, since on a busy machine req/s alone says more about the neighbours than the app."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from bench import load

    runs: dict[str, list[dict]] = {label: [] for i, (label, _, _) in enumerate(BENCH_SETUPS)
                                   if not args.setups or i + 1 in args.setups}
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-") as tmp:
        models = Path(tmp) / "models"
        load.small_model(models / "load-lstm", args.hidden, args.layers)
        env = {"RNNSCOPE_SHARE_RATE_LIMIT": "0", "RNNSCOPE_RATE_LIMIT": "0"}
        setups = [setup for i, setup in enumerate(BENCH_SETUPS) if not args.setups or i + 1 in args.setups]
        for round_no in range(args.rounds):
            for label, n, direct in setups:
                with Stack(models, "load-lstm", replicas=n, **env) as stack:
                    base = stack.replicas[0].base if direct else stack.nginx.base
                    info = next(m for m in json.load(urllib.request.urlopen(base + "/api/v1/models"))
                                if m["name"] == "load-lstm")
                    shared = load.Shared("load-lstm", info["layers"], info["hidden"], info["states"])
                    pids = [r.proc.pid for r in stack.replicas]
                    asyncio.run(load.run_phase(base, pids[0], shared, 4, args.warmup, 60, 99, 100_000))
                    groups = {"replicas": pids, "nginx": [stack.nginx.proc.pid], "postgres": [stack.pg.proc.pid]}
                    cpu0 = {k: sum(group_cpu_seconds(p) for p in v) for k, v in groups.items()}
                    load0 = os.getloadavg()[0]
                    phase = asyncio.run(load.run_phase(base, pids[0], shared, args.clients, args.duration, 60,
                                                       round_no + 1, 500_000))
                    s = load.summary(phase)
                    s["cpu_cores"] = {k: round((sum(group_cpu_seconds(p) for p in v) - cpu0[k]) / phase.seconds, 2)
                                      for k, v in groups.items()}
                    s["cpu_cores"]["load_generator"] = s["client_cpu_cores"]
                    s["req_per_replica_cpu_second"] = round(s["requests"] / phase.seconds
                                                            / max(s["cpu_cores"]["replicas"], 1e-9), 1)
                    s["load_average_before"] = round(load0, 2)
                    runs[label].append(s)
                    print(f"== round {round_no + 1}, {label}: {s['rps']} req/s, p50 {s['p50_ms']} ms, p95 "
                          f"{s['p95_ms']} ms, p99 {s['p99_ms']} ms; statuses {s['statuses']}; dropped "
                          f"{s['dropped'] or 0}; CPU cores {s['cpu_cores']}; {s['req_per_replica_cpu_second']} req "
                          f"per replica CPU-second; load average {load0:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "duration": args.duration, "rounds": args.rounds,
                                         "model": f"random-weight LSTM {args.layers}x{args.hidden}",
                                         "cpus": os.cpu_count(), "runs": runs}, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="run PostgreSQL, replicas and nginx until Ctrl-C")
    up.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1")
    up.add_argument("--replicas", type=int, default=2)
    up.add_argument("--models", type=Path, default=None, help="a models folder (default: models/zoo)")
    up.add_argument("--default-model", default="austen-lstm")
    bench = sub.add_parser("bench", help="bench/load.py through nginx, one replica vs two")
    bench.add_argument("--duration", type=float, default=20.0, help="seconds per measured phase")
    bench.add_argument("--warmup", type=float, default=5.0)
    bench.add_argument("--clients", type=int, default=16)
    bench.add_argument("--hidden", type=int, default=128)
    bench.add_argument("--layers", type=int, default=2)
    bench.add_argument("--rounds", type=int, default=1, help="repeat the setups, interleaved")
    bench.add_argument("--setups", type=int, nargs="*", default=[],
                       help="which setups to run (1: one replica direct, 2: nginx + 1, 3: nginx + 2; default all)")
    bench.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "up" and not 1 <= args.replicas <= 8:
        ap.error("--replicas must be 1..8")
    if args.cmd == "bench" and not (0 < args.duration <= 600 and 1 <= args.clients <= 256 and 1 <= args.rounds <= 10):
        ap.error("--duration must be in (0, 600] s, --clients in 1..256 and --rounds in 1..10")
    return cmd_up(args) if args.cmd == "up" else cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
