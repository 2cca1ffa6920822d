#!/usr/bin/env bash
# Build the Dockerfile with podman and check the image running: /healthz, a trace, a share link that
# outlives its container in the data volume, a server that is not root, the image's HEALTHCHECK.
#
#   scripts/check-image.sh [--report FILE] [--keep]
#
# Needs root, podman, runc and debootstrap (apt-get install podman runc debootstrap; .ci/run does).
# No base image can be pulled and no Docker daemon runs on the machines this was written for, so:
#   - the Dockerfile's base images (python:3.11-slim, node:20-bookworm-slim) are stand-ins made here from
#     Debian bookworm's packages (scripts/image-bases.sh), cached in podman's image store;
#   - podman runs with runc, cgroupfs and no default ulimits (a containers.conf passed as CONTAINERS_CONF);
#   - torch comes from the wheel on this machine (pip's find-links), mounted as the build context
#     `torch-wheels`; where there is none the Dockerfile's default (PyTorch's CPU index) is used.
# The build runs under `nice -n 10`; every step has a time limit; the containers, volume and image made
# here are removed at the end, with the build's intermediate images (not the cached base images). --keep
# leaves them all: the image (localhost/rnnscope-check:latest) and the layer cache for the next build.
# --report FILE writes the figures (image size, build time, start-up to healthy, ...) as JSON.
#
# Settings (environment): RNNSCOPE_IMAGE_BUILD_TIMEOUT (seconds, default 2400), TORCH_WHEELS (a folder
# holding the torch wheel; default: pip's find-links), and those of scripts/image-bases.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

report="" keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --report) report=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--report FILE] [--keep]" >&2; exit 2 ;;
  esac
done

log() { printf '[check-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# shellcheck source=scripts/podman-env.sh
. "$ROOT/scripts/podman-env.sh"   # pm SECONDS ARGS: podman with runc and the containers.conf, timed
need_podman
# One image check at a time on a machine: they share the tag, the base images and podman's store.
exec 9> "$RNNSCOPE_IMAGE_CACHE/check-image.lock"
if ! flock -n 9; then
  log "another image check is running: waiting for it (at most ${RNNSCOPE_IMAGE_LOCK_WAIT:-1200} s)"
  flock -w "${RNNSCOPE_IMAGE_LOCK_WAIT:-1200}" 9 || fail "the other image check did not finish"
fi

TAG=localhost/rnnscope-check:latest
RUN_ID="rnnscope-check-$$"
VOLUME="$RUN_ID-data"
WORK=$(mktemp -d /tmp/rnnscope-check.XXXXXX)
containers=()
# What was there before, so that an interrupted build's leftovers (its running step under runc, its
# working containers, its bundle folders in /var/tmp) can be told apart and removed. The lock above
# makes them this run's.
pm 60 ps -a --external -q --no-trunc | sort -u > "$WORK/containers.before"
"$RUNC" list -q 2>/dev/null | sort -u > "$WORK/runc.before" || true
find /var/tmp -maxdepth 1 -name 'buildah*' | sort -u > "$WORK/bundles.before"
cleanup() {
  local rc=$? id
  for c in "${containers[@]}"; do pm 60 rm -f -t 5 "$c" >/dev/null 2>&1 || true; done
  for id in $("$RUNC" list -q 2>/dev/null | sort -u | comm -13 "$WORK/runc.before" -); do
    timeout 30 "$RUNC" kill "$id" KILL >/dev/null 2>&1 || true
    timeout 30 "$RUNC" delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(pm 60 ps -a --external -q --no-trunc | sort -u | comm -13 "$WORK/containers.before" -); do
    pm 60 rm -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(find /var/tmp -maxdepth 1 -name 'buildah*' | sort -u | comm -13 "$WORK/bundles.before" -); do
    rm -rf "$id"
  done
  pm 60 volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  if [ -z "$keep" ]; then
    # the image and the intermediate images its build made (podman keeps them as a layer cache)
    pm 120 rmi -f "$TAG" >/dev/null 2>&1 || true
    if [ -f "$WORK/images.before" ]; then
      local made
      made=$(pm 60 images -a -q --no-trunc | sort -u | comm -13 "$WORK/images.before" - || true)
      # shellcheck disable=SC2086
      [ -z "$made" ] || pm 300 rmi -f $made >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the base images -------------------------------------------------------------------------------
t0=$(now)
bash "$ROOT/scripts/image-bases.sh" >&2
bases_s=$(since "$t0")
log "base images ready in ${bases_s}s"

# ---- where torch comes from --------------------------------------------------------------------------
torch_version=$(sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
[ -n "$torch_version" ] || fail "no torch==X pin in pyproject.toml"
wheel=""
links=${TORCH_WHEELS:-${PIP_FIND_LINKS:-}}
if [ -z "$links" ]; then
  for py in "$ROOT/.venv/bin/python" python3; do
    links=$("$py" -m pip config get global.find-links 2>/dev/null) && break || links=""
  done
fi
for d in $links; do
  d=${d#file://}
  for w in "$d"/torch-"$torch_version"*-cp311-cp311-*manylinux*x86_64.whl; do
    [ -f "$w" ] && wheel=$w && break 2
  done
done
torch_args=()
if [ -n "$wheel" ]; then
  # A build context with that one wheel (a hard link where the file system allows, else a copy).
  mkdir "$WORK/wheels"
  ln "$wheel" "$WORK/wheels/" 2>/dev/null || cp "$wheel" "$WORK/wheels/"
  torch_args=(--build-context "torch-wheels=$WORK/wheels" --build-arg TORCH_FIND_LINKS=/wheels
              --build-arg TORCH_INDEX_URL=https://pypi.org/simple)
  log "torch from $wheel"
else
  log "no torch $torch_version wheel in pip's find-links ($links): the Dockerfile's default index"
fi

# ---- build -------------------------------------------------------------------------------------------
pm 60 images -a -q --no-trunc | sort -u > "$WORK/images.before"
log "building $TAG (nice -n 10)"
t0=$(now)
if ! nice -n 10 timeout --foreground "${RNNSCOPE_IMAGE_BUILD_TIMEOUT:-2400}" \
    podman --runtime "$RUNC" build --format docker --pull=never --network host --layers \
      "${torch_args[@]}" -t "$TAG" -f Dockerfile . >"$WORK/build.log" 2>&1; then
  tail -n 60 "$WORK/build.log" >&2
  fail "the image did not build (log above)"
fi
build_s=$(since "$t0")
size=$(pm 60 image inspect --format '{{.Size}}' "$TAG")
log "built in ${build_s}s, $((size / 1000000)) MB"

# ---- the image's own settings ------------------------------------------------------------------------
img_user=$(pm 60 image inspect --format '{{.Config.User}}' "$TAG")
case "$img_user" in ""|root|0|0:*|root:*) fail "image USER is '$img_user'" ;; esac
hc=$(pm 60 image inspect --format '{{json .Config.Healthcheck}}' "$TAG")
case "$hc" in *healthz*) ;; *) fail "no HEALTHCHECK on /healthz in the image: $hc" ;; esac
# Nothing of the working tree's heavy or private folders in /app (.dockerignore and the COPY lines).
# shellcheck disable=SC2016
leaked=$(pm 120 run --rm --pull=never --network none "$TAG" sh -c \
  'cd /app && for p in .venv .git node_modules runs data data-dir artifacts tests bench; do [ -e "$p" ] && echo "$p"; done; true')
[ -z "$leaked" ] || fail "the image holds $leaked under /app"
torch_in=$(pm 120 run --rm --pull=never --network none "$TAG" python -c 'import torch; print(torch.__version__)')
log "image USER $img_user, torch $torch_in, none of .venv .git node_modules runs data artifacts in /app"

# ---- run it ------------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)   # not the default 7860: the server and the HEALTHCHECK must both follow $PORT
BASE="http://127.0.0.1:$PORT"
pm 60 volume create "$VOLUME" >/dev/null

start() {  # start NAME: run the image on $PORT with the data volume; started_s: seconds to /healthz 200
  local name=$1 t
  t=$(now)
  containers+=("$name")
  pm 120 run -d --pull=never --name "$name" --network host -e PORT="$PORT" -e RNNSCOPE_TORCH_THREADS=1 \
    -v "$VOLUME:/data" "$TAG" >/dev/null
  local deadline=$((SECONDS + 180))
  until curl -fsS -o /dev/null --max-time 3 "$BASE/healthz" 2>/dev/null; do
    if [ "$(pm 60 inspect --format '{{.State.Running}}' "$name")" != true ] || [ $SECONDS -gt $deadline ]; then
      pm 60 logs "$name" 2>&1 | tail -n 40 >&2
      fail "$name did not answer /healthz on port $PORT"
    fi
    sleep 0.2
  done
  started_s=$(since "$t")
}

log "starting the container on port $PORT"
start "$RUN_ID-1"; first_s=$started_s
log "/healthz 200 after ${first_s}s"
body=$(curl -fsS --max-time 10 "$BASE/healthz")
log "/healthz: $body"

# The health check, as podman runs it (its command, inside the container).
t0=$(now)
hc_ok=""
for _ in $(seq 1 30); do
  if pm 30 healthcheck run "$RUN_ID-1" >/dev/null 2>&1; then hc_ok=1; break; fi
  sleep 1
done
[ -n "$hc_ok" ] || fail "the image's HEALTHCHECK does not pass on a serving container"
healthcheck_s=$(since "$t0")
health=$(pm 60 inspect --format '{{.State.Health.Status}}' "$RUN_ID-1" 2>/dev/null || pm 60 inspect --format '{{.State.Healthcheck.Status}}' "$RUN_ID-1")
[ "$health" = healthy ] || fail "health status is '$health' after a passing check"

# Not root: the serving process's user ids, read from the host.
pid=$(pm 60 inspect --format '{{.State.Pid}}' "$RUN_ID-1")
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
for u in $uids; do [ "$u" != 0 ] || fail "the server (host pid $pid) runs with uid 0: Uid $uids"; done
cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline")
case "$cmd" in *rnnscope*serve*) ;; *) fail "the container's first process is '$cmd', not rnnscope serve" ;; esac
log "server: '$cmd' with uids $uids"

# A trace.
t0=$(now)
curl -fsS --max-time 120 -H 'Content-Type: application/json' \
  -d '{"model":"austen-lstm","text":"\"Hello,\" she said.","layer":1,"state":"c","units":[336],"topk":1}' \
  "$BASE/api/v1/trace" > "$WORK/trace.json" || fail "POST /api/v1/trace failed"
trace_s=$(since "$t0")
python3 - "$WORK/trace.json" <<'EOF' || fail "the trace is not what it should be"
import json, math, sys
t = json.load(open(sys.argv[1]))
assert t["model"] == "austen-lstm" and t["length"] == 18, (t["model"], t["length"])
vals = [row[0] for row in t["layers"][0]["states"]["c"]]
assert len(vals) == 18 and all(math.isfinite(v) for v in vals), vals
# the quote cell (docs: austen-lstm's c[336]) is not flat across an opening and a closing quote
assert max(vals) - min(vals) > 0.1, vals
EOF
log "trace: 18 characters in ${trace_s}s (first request, cold)"

# A share link, written to the volume.
curl -fsS --max-time 60 -H 'Content-Type: application/json' \
  -d '{"model":"austen-lstm","text":"\"Kept,\" she said.","layer":1,"state":"c","unit":336}' \
  "$BASE/api/v1/share" > "$WORK/share.json" || fail "POST /api/v1/share failed"
sid=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/share.json")
mnt=$(pm 60 volume inspect --format '{{.Mountpoint}}' "$VOLUME")
[ -s "$mnt/shares.sqlite3" ] || fail "no shares.sqlite3 in the data volume ($mnt): $(ls -la "$mnt")"
log "share link $sid; the volume holds $(cd "$mnt" && echo *)"

# Removed and started again: the link is still there.
t0=$(now)
pm 60 stop -t 20 "$RUN_ID-1" >/dev/null
stop_s=$(since "$t0")
exit_code=$(pm 60 inspect --format '{{.State.ExitCode}}' "$RUN_ID-1")
pm 60 rm "$RUN_ID-1" >/dev/null
log "stopped in ${stop_s}s (exit code $exit_code), removed"
start "$RUN_ID-2"; second_s=$started_s
curl -fsS --max-time 30 "$BASE/api/v1/share/$sid" > "$WORK/share2.json" || fail "link $sid is gone after a restart"
python3 - "$WORK/share.json" "$WORK/share2.json" <<'EOF' || fail "the link's view changed across the restart"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["id"] == b["id"] and a["view"] == b["view"], (a, b)
assert b["view"]["text"] == '"Kept," she said.', b["view"]
EOF
page=$(curl -fsS --max-time 60 -o /dev/null -w '%{http_code}' "$BASE/s/$sid")
[ "$page" = 200 ] || fail "GET /s/$sid answered $page"
log "link $sid still there in a new container (healthy after ${second_s}s); its page answers 200"

# ---- figures -------------------------------------------------------------------------------------------
cat > "$WORK/report.json" <<EOF
{"image_bytes": $size, "build_s": $build_s, "bases_s": $bases_s, "start_to_healthz_s": $first_s,
 "restart_to_healthz_s": $second_s, "healthcheck_s": $healthcheck_s, "first_trace_s": $trace_s,
 "stop_s": $stop_s, "stop_exit_code": $exit_code, "server_uids": "$uids", "image_user": "$img_user",
 "torch": "$torch_in", "torch_wheel": "$wheel", "share_id": "$sid"}
EOF
[ -z "$report" ] || cp "$WORK/report.json" "$report"
cat "$WORK/report.json"
log "OK"
