#!/usr/bin/env bash
# Builds the container image (Containerfile) with podman and smoke-tests it, on a machine that has
# no container runtime that can run it: the image's root file system is mounted read-only
# (`podman image mount`) and its own entry point runs in a chroot with a private mount and PID
# namespace (fresh /proc, the host's /dev, a tmpfs /tmp, a host folder as the /data volume), as
# the image's user, with the image's environment and working folder: what `docker run
# --read-only` does, less the network namespace (the server listens on a loopback port).
#
#   scripts/image.sh                 build $IMAGE, smoke-test it, and check that the smoke test
#                                    fails for the same image without OpenCV
#   scripts/image.sh --smoke IMAGE   smoke-test an image built elsewhere
#
# Installs podman (and debootstrap, when debian:bookworm-slim cannot be pulled: then a local
# bookworm base is made) with apt-get when missing. The host's CA bundle (BUILD_CA) is handed to
# the build as a secret for a TLS-intercepting proxy; it is not written into the image.
# Settings: IMAGE (default localhost/fillframe:ci), EXTRAS (build argument; `flux` is the GPU
# worker, too large for CI), BASE, BUILD_CA, DEBIAN_MIRROR; for the smoke test, SMOKE_ENV
# (settings, "FILLFRAME_ENGINE=flux ...") and SMOKE_DATA (a folder copied into /data).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/fillframe:ci}
BASE=${BASE:-docker.io/library/debian:bookworm-slim}
LOCAL_BASE=localhost/fillframe-base:bookworm
BUILD_CA=${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[image.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# Everything made on the way is undone on any exit: mounts, servers, folders.
CLEANUP=()
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
  CLEANUP=()
}
trap cleanup EXIT
trap 'exit 130' INT  # so that an interrupted or timed-out run cleans up too
trap 'exit 143' TERM
WORK=$(mktemp -d /tmp/fillframe-image.XXXXXX)
CLEANUP+=("rm -rf '$WORK'")

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  log "installing $* with apt-get"
  apt-get install -y -qq "$@" >"$WORK/apt.log" 2>&1 \
    || { apt-get update -qq >>"$WORK/apt.log" 2>&1 && apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1; } \
    || { cat "$WORK/apt.log" >&2; die "could not install $*"; }
}

make_local_base() {
  command -v debootstrap >/dev/null || apt_install debootstrap
  log "$BASE cannot be pulled: making $LOCAL_BASE with debootstrap from $DEBIAN_MIRROR"
  local root="$WORK/base"
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # Like Docker Hub's slim image: no documentation, manual pages or translations, now or from
  # later installs; no package lists or downloaded packages; updates and security updates on.
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  tar -C "$root" -c . | podman import -q --change 'CMD ["bash"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
}

pick_base() {
  if podman image exists "$BASE" || timeout 120 podman pull -q "$BASE" >/dev/null 2>&1; then
    echo "$BASE"
    return
  fi
  podman image exists "$LOCAL_BASE" || make_local_base
  echo "$LOCAL_BASE"
}

build() {
  local base started old secret=()
  base=$(pick_base)
  [ -r "$BUILD_CA" ] && secret=(--secret "id=build-ca,src=$BUILD_CA")
  old=$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  log "building $IMAGE on $base${EXTRAS:+ with EXTRAS=$EXTRAS}"
  started=$(date +%s)
  # --format docker: the OCI format has no HEALTHCHECK.
  podman build --isolation chroot --format docker --build-arg "BASE=$base" \
    --build-arg "EXTRAS=${EXTRAS:-}" "${secret[@]}" -t "$IMAGE" -f Containerfile . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; die "podman build failed (log above)"; }
  BUILD_SECONDS=$(($(date +%s) - started))
  # The image this build replaced would otherwise stay behind, untagged, on every run.
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect -f '{{.Id}}' "$IMAGE")" ]; then
    podman rmi -f "$old" >/dev/null 2>&1 || true
  fi
  log "built $IMAGE in ${BUILD_SECONDS} s: $(image_mb "$IMAGE") MB"
}

image_mb() { echo $(($(podman image inspect -f '{{.Size}}' "$1") / 1000000)); }

# in_image DATA -- COMMAND...: runs COMMAND in the mounted image as its container would (DATA is
# the host folder mounted at /data, or - for none: then /data is the image's read-only folder).
# The mounts live in the command's own mount namespace, so none outlives it. It execs: call it in
# a subshell, `(in_image ...)`, so that a background one's $! is unshare's PID.
in_image() {
  local data=$1
  shift 2
  exec unshare --mount --pid --fork --mount-proc="$ROOT/proc" \
    bash -c 'set -e; root=$1 data=$2 user=$3; shift 3
      mount --rbind /dev "$root/dev"
      mount -t tmpfs -o mode=1777,size=512m tmpfs "$root/tmp"
      [ "$data" = - ] || mount --bind "$data" "$root/data"
      exec chroot --userspec="$user" "$root" /usr/bin/env -i "$@"' \
    _ "$ROOT" "$data" "$USERSPEC" "${IMAGE_ENV[@]}" "${RUN_ENV[@]}" \
    /bin/sh -c 'cd "$0" && exec "$@"' "$WORKDIR" "$@"
}

# ns_pid1 PID: the host's PID of the first process in the namespace that `unshare` PID made (the
# server itself, after the execs). unshare ignores SIGTERM, and its --kill-child does not survive
# chroot's change of user, so this is the process to signal.
ns_pid1() {
  local child
  for _ in $(seq 50); do
    child=$(cat "/proc/$1/task/$1/children" 2>/dev/null || true)
    [ -n "$child" ] && { echo "${child%% *}"; return; }
    sleep 0.1
  done
  return 1
}

# stop PID1 SECONDS: SIGTERM, then SIGKILL after SECONDS; the PID namespace dies with its first process.
stop() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq $(($2 * 10))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

# in_server_ns PID1 COMMAND...: COMMAND in the server's namespaces, the way a HEALTHCHECK runs.
in_server_ns() {
  local pid1=$1
  shift
  nsenter --target "$pid1" --mount --pid -- chroot --userspec="$USERSPEC" "$ROOT" \
    /usr/bin/env -i "${IMAGE_ENV[@]}" "$@"
}

# start NAME ARGS...: the image's entry point with ARGS, in the background, /data mounted.
declare -A UNSHARE_PID PID1
start() {
  local name=$1
  shift
  (in_image "$DATA" -- "${ENTRYPOINT[@]}" "$@") >"$WORK/$name.log" 2>&1 &
  UNSHARE_PID[$name]=$!
  PID1[$name]=$(ns_pid1 "$!") || die "$name did not start"
  CLEANUP+=("kill_role $name")
}

# wait_healthy NAME: until the image's own HEALTHCHECK passes in NAME's container, as
# `docker run`'s health status would say; at most 60 s.
wait_healthy() {
  local i
  for i in $(seq 240); do
    in_server_ns "${PID1[$1]}" fillframe-healthcheck >/dev/null 2>&1 && return 0
    kill -0 "${UNSHARE_PID[$1]}" 2>/dev/null || { cat "$WORK/$1.log" >&2; die "$1 exited before it was ready (log above)"; }
    sleep 0.25
  done
  cat "$WORK/$1.log" >&2
  die "the HEALTHCHECK of $1 did not pass within 60 s"
}

# seed_request PORT NAMES...: the seed page's request through the API on PORT, from inside the
# image; NAMES are the processes whose logs explain a failure.
seed_request() {
  local port=$1 name
  shift
  log "$* healthy (HEALTHCHECK passes); the seed request through 127.0.0.1:$port"
  if ! (in_image - -- python3 - "http://127.0.0.1:$port" "$KEY") <tests/deploy/image_smoke.py >"$WORK/client.log" 2>&1; then
    cat "$WORK/client.log" >&2
    for name in "$@"; do cat "$WORK/$name.log" >&2; done
    die "the seed request did not complete (logs above)"
  fi
  grep -E '^(submitted|result):' "$WORK/client.log" | cut -c1-200 >&2
}

# stop_role NAME [SECONDS]: SIGTERM (SIGKILL after SECONDS, default 40); it must end with status 0.
stop_role() {
  local name=$1 rc=0
  [ -n "${UNSHARE_PID[$name]:-}" ] || return 0
  stop "${PID1[$name]}" "${2:-40}"
  wait "${UNSHARE_PID[$name]}" || rc=$?
  unset "UNSHARE_PID[$name]"
  [ "$rc" = 0 ] || { cat "$WORK/$name.log" >&2; die "$name ended with status $rc on SIGTERM"; }
}

# kill_role NAME: for the clean-up on failure; stops NAME if it still runs, without judging.
kill_role() {
  [ -n "${UNSHARE_PID[$1]:-}" ] || return 0
  stop "${PID1[$1]}" 5
  wait "${UNSHARE_PID[$1]}" 2>/dev/null || true
}

smoke() {
  local image=$1 started user uid gid home port api_port metrics_port rc
  started=$(date +%s)
  log "smoke-testing $image"
  ROOT=$(podman image mount "$image")
  CLEANUP+=("podman image unmount '$image' >/dev/null")
  mapfile -t IMAGE_ENV < <(podman image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
  mapfile -t ENTRYPOINT < <(podman image inspect -f '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$image" | sed '/^$/d')
  WORKDIR=$(podman image inspect -f '{{.Config.WorkingDir}}' "$image")
  user=$(podman image inspect -f '{{.Config.User}}' "$image")
  uid=$(awk -F: -v u="$user" '$1 == u || $3 == u { print $3 }' "$ROOT/etc/passwd")
  gid=$(awk -F: -v u="$user" '$1 == u || $3 == u { print $4 }' "$ROOT/etc/passwd")
  home=$(awk -F: -v u="$user" '$1 == u || $3 == u { print $6 }' "$ROOT/etc/passwd")
  [ -n "$uid" ] && [ "$uid" != 0 ] || die "the image does not run as a non-root user (User: '${user}')"
  USERSPEC="$uid:$gid"
  IMAGE_ENV+=("HOME=$home")  # as a container runtime sets it
  RUN_ENV=()

  # A read-only /data (the image's own, no volume): one line, exit status 1.
  rc=0
  (in_image - -- "${ENTRYPOINT[@]}" migrate) >"$WORK/ro.out" 2>"$WORK/ro.err" || rc=$?
  [ "$rc" = 1 ] && [ "$(wc -l <"$WORK/ro.err")" = 1 ] && grep -q '^Error: The data folder /data is not writable' "$WORK/ro.err" \
    || { cat "$WORK/ro.out" "$WORK/ro.err" >&2; die "a read-only /data did not end in one line and exit status 1 (status $rc)"; }
  log "read-only /data refused: $(cat "$WORK/ro.err")"

  DATA="$WORK/data"
  install -d -o "$uid" -g "$gid" -m 0750 "$DATA"
  KEY=$( (in_image "$DATA" -- "${ENTRYPOINT[@]}" keys create --name smoke) | tail -n1)
  [[ $KEY == afk_* ]] || die "keys create printed no key (last line: '$KEY')"
  read -r port api_port metrics_port < <(in_image - -- python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
  # SMOKE_ENV / SMOKE_DATA: other settings for the run (e.g. another engine) and a folder copied
  # into /data first (e.g. its weights).
  read -r -a RUN_ENV <<<"FILLFRAME_ALLOW_PRIVATE_URLS=true ${SMOKE_ENV:-}"
  if [ -n "${SMOKE_DATA:-}" ]; then
    cp -r "$SMOKE_DATA" "$DATA/" && chown -R "$uid:$gid" "$DATA"
  fi

  # `docker run IMAGE`: the API and an in-process worker.
  start serve serve --host 127.0.0.1 --port "$port"
  wait_healthy serve
  seed_request "$port" serve
  stop_role serve
  # Many machines: an API process and a worker, sharing /data's SQLite here.
  start api serve --no-worker --host 127.0.0.1 --port "$api_port"
  RUN_ENV+=("FILLFRAME_WORKER_METRICS_PORT=$metrics_port")
  start worker worker
  wait_healthy api
  wait_healthy worker
  seed_request "$api_port" api worker
  stop_role api
  stop_role worker
  for kept in fillframe.db secret files; do
    [ -e "$DATA/$kept" ] || die "/data has no $kept after the run"
  done
  log "smoke test passed in $(($(date +%s) - started)) s"
}

# The smoke test must be able to fail: the same image without OpenCV (the classic engine's
# library) has to be refused.
check_smoke_fails() {
  local broken="${IMAGE%:*}:no-opencv" rc=0
  log "checking that the smoke test fails for $broken"
  printf 'FROM %s\nUSER root\nRUN rm -rf /opt/fillframe/lib/python3*/site-packages/cv2\nUSER %s\n' \
    "$IMAGE" "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" \
    | podman build -q --isolation chroot --format docker -t "$broken" -f - "$WORK" >/dev/null
  CLEANUP+=("podman rmi -f '$broken' >/dev/null 2>&1")
  ("$0" --smoke "$broken") >"$WORK/broken.log" 2>&1 || rc=$?
  [ "$rc" != 0 ] || { cat "$WORK/broken.log" >&2; die "the smoke test passed on an image without OpenCV"; }
  log "as it should, the smoke test failed: $(grep -m1 'FAILED' "$WORK/broken.log" | sed 's/^\[[^]]*\] //')"
  log "  its server said: $(grep -m1 -E '^[A-Za-z]*Error: ' "$WORK/broken.log" || echo '(no error line)')"
}

started=$(date +%s)
command -v podman >/dev/null || apt_install podman
if [ "${1:-}" = --smoke ]; then
  smoke "$2"
  exit 0
fi
build
smoke "$IMAGE"
check_smoke_fails
log "image $IMAGE: $(image_mb "$IMAGE") MB, built in ${BUILD_SECONDS} s; whole script (installs included) $(($(date +%s) - started)) s"
