# shellcheck shell=bash
# Sourced by scripts/check-image.sh and scripts/image-bases.sh: podman as it runs on these machines
# (no Docker daemon): runc as the runtime, cgroupfs, no default ulimits.
#   pm SECONDS ARGS...   podman ARGS with that time limit (timeout --foreground here and in the scripts:
#                        a signal to the caller's process group reaches podman too)
#   need_podman          exits 2 with the reason where root, podman, runc or debootstrap is missing
RNNSCOPE_IMAGE_CACHE=${RNNSCOPE_IMAGE_CACHE:-/var/cache/rnnscope-image}
RUNC=${RUNC:-$(command -v runc || echo /usr/sbin/runc)}

need_podman() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  [ -x "$RUNC" ] || missing+=(runc)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]} (apt-get install podman runc debootstrap curl; .ci/run does)" >&2
    exit 2
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "needs root (debootstrap, and podman's storage and runc as set up here)" >&2
    exit 2
  fi
  mkdir -p "$RNNSCOPE_IMAGE_CACHE"
  if [ -z "${CONTAINERS_CONF:-}" ]; then
    export CONTAINERS_CONF="$RNNSCOPE_IMAGE_CACHE/containers.conf"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n' > "$CONTAINERS_CONF"
  fi
}

pm() {
  # (without systemd podman cannot add timers for HEALTHCHECKs, says so on every run and rm, and goes on:
  # `podman healthcheck run` runs them. Its stderr goes through a file: a detached container's conmon
  # keeps it open, which would hold a pipe open as long as the container runs.)
  local limit=$1 rc=0 err
  shift
  err=$(mktemp /tmp/rnnscope-podman-err.XXXXXX)
  timeout --foreground "$limit" podman --runtime "$RUNC" "$@" 2> "$err" || rc=$?
  grep -v 'unable to get systemd connection' "$err" >&2 || true
  rm -f "$err"
  return "$rc"
}
