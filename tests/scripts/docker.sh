#!/usr/bin/env bash
# A private Docker engine for the Testcontainers tests (docs/testcontainers.md), and the images they use.
#
#   tests/scripts/docker.sh install   apt-get install docker.io and debootstrap if missing (Debian/Ubuntu, root)
#   tests/scripts/docker.sh start     start dockerd (idempotent): own network namespace, own socket, own state
#   tests/scripts/docker.sh build     build the images if their inputs changed (content hash), write images.env
#   tests/scripts/docker.sh env       print the environment Testcontainers needs (eval "$(docker.sh env)")
#   tests/scripts/docker.sh exec -- CMD...   run CMD in the engine's network namespace, with that environment
#   tests/scripts/docker.sh stop      remove every container, network and volume, stop dockerd, delete the namespace
#   tests/scripts/docker.sh status    is the engine up; which images are built
#
# The engine: Debian's docker.io (dockerd 20.10) started as
#   nsenter --net=/run/netns/$NS unshare -m --propagation private -- dockerd --iptables=false ...
# in a network namespace of its own (lo only), so it creates no bridge, route or iptables rule where the
# other tests (the zones bed) run; `unshare -m` keeps its overlay mounts private. `ip netns exec` is not used:
# it remounts /sys, which hides the cgroup hierarchy dockerd needs. Published container ports live in that
# namespace, so whatever talks to them (the Gradle test JVM) runs there too: `docker.sh exec -- gradle ...`.
# The Docker socket is a file and works from anywhere.
#
# Images (no registry is reachable; everything is built locally from what tests/scripts/setup.sh fetched):
#   fasttier/base:<hash>            debootstrap --variant=minbase --include=openjdk-17-jre-headless bookworm,
#                                   `docker import`ed; the root file system tarball is cached in
#                                   $FASTTIER_CACHE/docker/base-<hash>.tar (a few minutes the first time)
#   fasttier/kafka:<ver>-<hash>     Kafka <ver> ($FASTTIER_CACHE/kafka/<ver>/libs) with a start script
#                                   compatible with apache/kafka's (/etc/kafka/docker/run, KAFKA_* variables)
#   fasttier/kafka-fasttier:<ver>-<hash>  the above with the plugin (build/plugin) on the class path
#   fasttier/minio:<hash>           $FASTTIER_CACHE/bin/minio
# <hash> is a SHA-256 prefix over every input of the image (recipe files, jars, binaries), so an image is
# rebuilt exactly when something that goes into it changed. Each image is also tagged :latest (kafka ones:
# :<ver>). The names of the current build are written to $FASTTIER_CACHE/docker/images.env.
#
# Environment:
#   FASTTIER_CACHE            cache root (default ~/.cache/fasttier)
#   FASTTIER_KAFKA_VERSION    Kafka version of the images (default 4.4.0)
#   FASTTIER_PLUGIN_DIR       plugin jar + .so (default <repo>/build/plugin)
#   FASTTIER_DOCKER_NETNS     network namespace name (default fasttier-docker)
#   FASTTIER_DOCKER_RUN       runtime dir: socket, pid file, exec root (default /run/fasttier-docker)
#   FASTTIER_DEBIAN_MIRROR    debootstrap mirror (default: the Debian archive URI of apt's own sources)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${FASTTIER_CACHE:-$HOME/.cache/fasttier}"
KAFKA_VERSION="${FASTTIER_KAFKA_VERSION:-4.4.0}"
PLUGIN_DIR="${FASTTIER_PLUGIN_DIR:-$REPO/build/plugin}"
NS="${FASTTIER_DOCKER_NETNS:-fasttier-docker}"
RUN="${FASTTIER_DOCKER_RUN:-/run/fasttier-docker}"
SOCK="$RUN/docker.sock"
PIDFILE="$RUN/dockerd.pid"
STATE="$CACHE/docker"
DATA_ROOT="$STATE/data-root"
IMAGES_ENV="$STATE/images.env"
# The Debian client that comes with docker.io (20.10): it speaks the daemon's API and builds with the
# classic builder. (/usr/local/bin/docker, if present, may be a newer client whose `build` wants buildx.)
DOCKER="${FASTTIER_DOCKER_CLI:-/usr/bin/docker}"
BASE_SUITE=bookworm
BASE_INCLUDE=openjdk-17-jre-headless

log() { printf 'docker.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
d() { DOCKER_HOST="unix://$SOCK" "$DOCKER" "$@"; }
alive() { [[ -S "$SOCK" ]] && d version --format '{{.Server.Version}}' >/dev/null 2>&1; }

cmd_install() {
  local missing=()
  command -v dockerd >/dev/null && [[ -x "$DOCKER" ]] || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v nsenter >/dev/null && command -v unshare >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "need root to install ${missing[*]}"
    log "installing ${missing[*]} (apt-get)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

cmd_start() {
  if alive; then log "dockerd already running ($SOCK)"; return 0; fi
  [[ $(id -u) -eq 0 ]] || die "dockerd needs root"
  cmd_install
  mkdir -p "$RUN" "$DATA_ROOT"
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    die "dockerd pid $(cat "$PIDFILE") is running but does not answer on $SOCK; run '$0 stop' first"
  fi
  rm -f "$PIDFILE" "$SOCK"
  if [[ ! -e "/run/netns/$NS" ]]; then
    ip netns add "$NS"
  fi
  ip -n "$NS" link set lo up
  log "starting dockerd in network namespace $NS (log $STATE/dockerd.log)"
  # setsid: its own session, so the caller's terminal signals do not reach it; stop is explicit.
  setsid nsenter --net="/run/netns/$NS" unshare -m --propagation private -- \
    dockerd --iptables=false --ip-masq=false --ip-forward=false \
      -H "unix://$SOCK" --pidfile "$PIDFILE" --exec-root "$RUN/exec" --data-root "$DATA_ROOT" \
      --storage-driver overlay2 --log-driver json-file --log-opt max-size=20m \
      --default-address-pool base=172.30.0.0/16,size=24 \
      >"$STATE/dockerd.log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 120; i++)); do
    alive && { log "dockerd $(d version --format '{{.Server.Version}}') up ($SOCK)"; return 0; }
    sleep 0.5
  done
  tail -20 "$STATE/dockerd.log" >&2 || true
  die "dockerd did not come up within 60 s"
}

cmd_stop() {
  if alive; then
    local ids
    ids=$(d ps -aq)
    [[ -z "$ids" ]] || { log "removing containers: $(echo $ids)"; d rm -f -v $ids >/dev/null || true; }
    d network prune -f >/dev/null 2>&1 || true
    d volume prune -f >/dev/null 2>&1 || true
  fi
  if [[ -f "$PIDFILE" ]]; then
    local pid i
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping dockerd (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 60 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); i++)); do sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then log "dockerd still running after 30 s: SIGKILL"; kill -KILL "$pid" || true; fi
    fi
    rm -f "$PIDFILE"
  fi
  # the containerd that dockerd started (its pid file lives under the exec root)
  local cpid
  for f in "$RUN"/exec/containerd/containerd.pid; do
    [[ -f "$f" ]] || continue
    cpid=$(cat "$f")
    if kill -0 "$cpid" 2>/dev/null; then log "stopping containerd (pid $cpid)"; kill -TERM "$cpid" 2>/dev/null || true; sleep 1; fi
    rm -f "$f"
  done
  rm -f "$SOCK"
  rm -rf "$RUN/exec"
  rmdir "$RUN" 2>/dev/null || true
  if [[ -e "/run/netns/$NS" ]]; then ip netns del "$NS" 2>/dev/null || true; fi
  log "stopped"
}

cmd_env() {
  cat <<EOF
export DOCKER_HOST=unix://$SOCK
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CHECKS_DISABLE=true
export TESTCONTAINERS_HOST_OVERRIDE=localhost
EOF
  [[ -f "$IMAGES_ENV" ]] && sed 's/^/export /' "$IMAGES_ENV"
  return 0
}

cmd_exec() {
  [[ "${1:-}" == "--" ]] && shift
  [[ $# -gt 0 ]] || die "exec: no command"
  alive || die "dockerd is not running (tests/scripts/docker.sh start)"
  eval "$(cmd_env)"
  exec nsenter --net="/run/netns/$NS" -- "$@"
}

# ----------------------------------------------------------------------------------------------- images
hash_of() { sha256sum | cut -c1-16; }
have_image() { d image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  if [[ -n "${FASTTIER_DEBIAN_MIRROR:-}" ]]; then echo "$FASTTIER_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +(\[[^]]*\] +)?https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | head -1 || true)
  [[ -n "$uri" ]] || die "no Debian archive URI in apt's sources: set FASTTIER_DEBIAN_MIRROR"
  echo "$uri"
}

build_base() {
  local key tar tag mirror t0
  key=$(printf 'debootstrap --variant=minbase --include=%s %s\nrecipe-v1\n' "$BASE_INCLUDE" "$BASE_SUITE" | hash_of)
  tag="fasttier/base:$key"
  BASE_IMAGE="$tag"
  have_image "$tag" && return 0
  tar="$STATE/base-$key.tar"
  if [[ ! -s "$tar" ]]; then
    command -v debootstrap >/dev/null || cmd_install
    mirror=$(debian_mirror)
    local root="$STATE/base-root.$$"
    rm -rf "$root"
    t0=$(date +%s)
    log "debootstrap --variant=minbase --include=$BASE_INCLUDE $BASE_SUITE from $mirror (a few minutes, once)"
    if ! debootstrap --variant=minbase --include="$BASE_INCLUDE" "$BASE_SUITE" "$root" "$mirror" >"$STATE/debootstrap.log" 2>&1; then
      tail -20 "$STATE/debootstrap.log" >&2
      rm -rf "$root"
      die "debootstrap failed (log $STATE/debootstrap.log)"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$root"
    log "base root file system: $(du -h "$tar" | cut -f1) in $(($(date +%s) - t0)) s ($tar)"
  fi
  log "docker import $tar as $tag"
  d import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' "$tar" "$tag" >/dev/null
  d tag "$tag" fasttier/base:latest
}

# build_image <tag> <context dir> [--build-arg ...]: docker build unless the tag exists
build_image() {
  local tag=$1 ctx=$2
  shift 2
  if have_image "$tag"; then log "$tag: up to date"; return 0; fi
  local t0
  t0=$(date +%s)
  d build -q -t "$tag" "$@" "$ctx" >/dev/null
  log "$tag: built in $(($(date +%s) - t0)) s"
}

# image_from <docker/ subdir> <tag prefix> <FROM build-arg name> <FROM image>: completes the build context
# $ctx/<subdir> with the recipe files of docker/<subdir>, tags it <tag prefix><hash of FROM image and every
# context file>, builds it unless that tag exists, and prints the tag.
image_from() {
  local sub=$1 prefix=$2 arg=$3 from=$4 tag
  cp "$REPO/docker/$sub"/* "$ctx/$sub/"
  tag="$prefix$( (echo "$from"; cd "$ctx/$sub" && find . -type f | LC_ALL=C sort | xargs sha256sum) | hash_of)"
  build_image "$tag" "$ctx/$sub" --build-arg "$arg=$from"
  echo "$tag"
}

cmd_build() {
  alive || die "dockerd is not running (tests/scripts/docker.sh start)"
  mkdir -p "$STATE"
  local libs="$CACHE/kafka/$KAFKA_VERSION/libs" minio="$CACHE/bin/minio"
  [[ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "no Kafka $KAFKA_VERSION jars in $libs (run tests/scripts/setup.sh, FASTTIER_KAFKA_VERSIONS=$KAFKA_VERSION)"
  [[ -x "$minio" ]] || die "no MinIO binary at $minio (run tests/scripts/setup.sh)"
  compgen -G "$PLUGIN_DIR/*.jar" >/dev/null || die "no plugin jar in $PLUGIN_DIR (run make build)"
  build_base
  local ctx="$STATE/context.$$"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  trap 'rm -rf "$ctx"' RETURN

  # Kafka, apache/kafka-compatible
  mkdir -p "$ctx/kafka/libs"
  ln "$libs"/*.jar "$ctx/kafka/libs/" 2>/dev/null || cp "$libs"/*.jar "$ctx/kafka/libs/"
  KAFKA_IMAGE=$(image_from kafka "fasttier/kafka:$KAFKA_VERSION-" BASE_IMAGE "$BASE_IMAGE")
  d tag "$KAFKA_IMAGE" "fasttier/kafka:$KAFKA_VERSION"

  # Kafka + fasttier
  mkdir -p "$ctx/fasttier/plugin"
  cp "$PLUGIN_DIR"/*.jar "$ctx/fasttier/plugin/"
  cp "$PLUGIN_DIR"/*.so "$ctx/fasttier/plugin/" 2>/dev/null || true
  FASTTIER_IMAGE=$(image_from fasttier "fasttier/kafka-fasttier:$KAFKA_VERSION-" KAFKA_IMAGE "$KAFKA_IMAGE")
  d tag "$FASTTIER_IMAGE" "fasttier/kafka-fasttier:$KAFKA_VERSION"

  # MinIO
  mkdir -p "$ctx/minio"
  cp "$minio" "$ctx/minio/minio"
  MINIO_IMAGE=$(image_from minio "fasttier/minio:" BASE_IMAGE "$BASE_IMAGE")
  d tag "$MINIO_IMAGE" fasttier/minio:latest

  cat >"$IMAGES_ENV.tmp" <<EOF
FASTTIER_KAFKA_STOCK_IMAGE=$KAFKA_IMAGE
FASTTIER_KAFKA_IMAGE=$FASTTIER_IMAGE
FASTTIER_MINIO_IMAGE=$MINIO_IMAGE
EOF
  mv "$IMAGES_ENV.tmp" "$IMAGES_ENV"
  # images of earlier builds (other hashes) are dead weight in the data root
  local old
  old=$(d images --format '{{.Repository}}:{{.Tag}}' | grep -E '^fasttier/(kafka|kafka-fasttier|minio):' \
    | grep -vxF -e "$KAFKA_IMAGE" -e "fasttier/kafka:$KAFKA_VERSION" -e "$FASTTIER_IMAGE" \
      -e "fasttier/kafka-fasttier:$KAFKA_VERSION" -e "$MINIO_IMAGE" -e fasttier/minio:latest \
    | grep -E -- '-?[0-9a-f]{16}$' || true)
  [[ -z "$old" ]] || d rmi $old >/dev/null 2>&1 || true
  cat "$IMAGES_ENV"
}

cmd_status() {
  if alive; then
    echo "dockerd $(d version --format '{{.Server.Version}}') running on $SOCK (network namespace $NS)"
    d images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^fasttier/' || true
    d ps -a --format '{{.ID}} {{.Image}} {{.Status}}'
  else
    echo "dockerd not running"
    return 1
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  build) cmd_build ;;
  env) cmd_env ;;
  exec) shift; cmd_exec "$@" ;;
  status) cmd_status ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
