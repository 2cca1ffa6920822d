#!/usr/bin/env bash
# The Dockerfile's base images, made from Debian bookworm's packages where none can be pulled:
#   docker.io/library/python:3.11-slim      debootstrap minbase + python3 (3.11), python3-venv, ca-certificates,
#                                           with a venv at /usr/local: python and pip in /usr/local/bin and
#                                           pip free to install, as in the official image
#   docker.io/library/node:20-bookworm-slim that + Debian's nodejs and npm (Node 18: enough for `npm ci`)
# Both trust this machine's extra CA certificates (/usr/local/share/ca-certificates), as its own tools do.
# A real image already under either name is left alone and used.
#
# Cached in podman's image store as localhost/rnnscope-base-{python,node}:KEY, KEY a hash of the recipe
# (RECIPE below), the mirror and those certificates; remade when older than RNNSCOPE_BASE_MAX_AGE_DAYS
# (30). The .debs are kept in $RNNSCOPE_IMAGE_CACHE/debs. Mirror: RNNSCOPE_DEBIAN_MIRROR, else the one apt uses here.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/podman-env.sh
. "$HERE/podman-env.sh"
need_podman

log() { printf '[image-bases %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
PY_NAME=docker.io/library/python:3.11-slim
NODE_NAME=docker.io/library/node:20-bookworm-slim
MAX_AGE_DAYS=${RNNSCOPE_BASE_MAX_AGE_DAYS:-30}

mirror=${RNNSCOPE_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # deb822 (.sources) or one-line sources: the first URI serving bookworm itself (not -security)
  mirror=$(awk '
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && uri != "") { print uri; exit } }
    /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|file):/) { u = $i; if ($(i+1) == "bookworm") { print u; exit } } }
  ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
cas=$(find /usr/local/share/ca-certificates -name '*.crt' -type f 2>/dev/null | sort || true)
# What the stand-ins are made of; RECIPE names this script's way of making them: change it with that.
RECIPE="2 bookworm minbase python3,python3-venv,ca-certificates venv:/usr/local slim + nodejs,npm"
key=$( { echo "$RECIPE"; echo "$mirror"; for f in $cas; do cat "$f"; done; } | sha256sum | cut -c1-12)
PY_BASE=localhost/rnnscope-base-python:$key
NODE_BASE=localhost/rnnscope-base-node:$key

fresh() {  # fresh IMAGE: present and younger than MAX_AGE_DAYS
  local made
  made=$(pm 60 image inspect --format '{{.Created.Unix}}' "$1" 2>/dev/null) || return 1
  [ $(( $(date +%s) - made )) -lt $(( MAX_AGE_DAYS * 86400 )) ]
}

old_ids=()
if fresh "$PY_BASE" && fresh "$NODE_BASE"; then
  log "cached: $PY_BASE, $NODE_BASE"
else
  work=$(mktemp -d /tmp/rnnscope-bases.XXXXXX)
  trap 'umount -R "$work/root/proc" "$work/root/sys" 2>/dev/null || true; rm -rf "$work"' EXIT
  mkdir -p "$RNNSCOPE_IMAGE_CACHE/debs"
  log "debootstrap bookworm from $mirror"
  if ! nice -n 10 timeout --foreground 1200 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      --cache-dir="$RNNSCOPE_IMAGE_CACHE/debs" bookworm "$work/root" "$mirror" > "$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    tail -n 30 "$work/root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
  fi
  r=$work/root
  # as Debian's slim images: no documentation, manual pages or translations
  cat > "$r/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
  find "$r/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/*
  for f in $cas; do cp "$f" "$r/usr/local/share/ca-certificates/"; done
  chroot "$r" update-ca-certificates >/dev/null 2>&1
  chroot "$r" python3 -m venv /usr/local
  timeout --foreground 300 chroot "$r" /usr/local/bin/python -m pip --version >&2
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/log/*.log "$r"/debootstrap
  log "importing $PY_BASE"
  tar -C "$r" --numeric-owner -c . | pm 600 import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change 'LABEL org.rnnscope.standin=python:3.11-slim' - "$PY_BASE" >/dev/null
  log "building $NODE_BASE (apt-get install nodejs npm)"
  printf 'FROM %s\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null && rm -rf /var/lib/apt/lists/* /var/cache/apt/* && node --version && npm --version\nENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\nLABEL org.rnnscope.standin=node:20-bookworm-slim\nCMD ["node"]\n' "$PY_BASE" > "$work/Containerfile"
  if ! nice -n 10 timeout --foreground 900 podman --runtime "$RUNC" build --format docker --pull=never --network host --layers=false \
      -t "$NODE_BASE" -f "$work/Containerfile" "$work" > "$work/node.log" 2>&1; then
    tail -n 30 "$work/node.log" >&2
    exit 1
  fi
  # older stand-ins (another key): untagged here, removed once the Dockerfile's names have moved on
  for old in $(pm 60 images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/rnnscope-base-(python|node):' | grep -v ":$key\$" || true); do
    old_ids+=("$(pm 60 image inspect --format '{{.Id}}' "$old")")
    pm 60 untag "$old" >/dev/null 2>&1 || true
  done
fi

# The Dockerfile's names point at the stand-ins, unless a real (pulled) image holds the name.
for pair in "$PY_NAME=$PY_BASE" "$NODE_NAME=$NODE_BASE"; do
  name=${pair%%=*} base=${pair#*=}
  if pm 60 image exists "$name"; then
    standin=$(pm 60 image inspect --format '{{index .Labels "org.rnnscope.standin"}}' "$name" 2>/dev/null || true)
    if [ -z "$standin" ] || [ "$standin" = "<no value>" ]; then
      log "$name is a real image here: used as it is"
      continue
    fi
  fi
  pm 60 tag "$base" "$name"
done
for id in "${old_ids[@]}"; do
  [ -z "$(pm 60 image inspect --format '{{.RepoTags}}' "$id" 2>/dev/null | tr -d '[]')" ] || continue
  pm 120 rmi "$id" >/dev/null 2>&1 || true   # (fails, harmlessly, while an image still builds on it)
done
log "$PY_NAME -> $(pm 60 image inspect --format '{{.Id}}' "$PY_NAME" | cut -c1-12), $NODE_NAME -> $(pm 60 image inspect --format '{{.Id}}' "$NODE_NAME" | cut -c1-12)"
