#!/usr/bin/env bash
# tests/scripts/setup.sh — install everything the end-to-end tests need. Idempotent; fast when done.
#
# What it installs (nothing else; no Docker):
#   1. Python test dependencies from tests/requirements.txt (pip): confluent-kafka (its wheel bundles
#      librdkafka with gzip/snappy/lz4/zstd, transactions and headers), pytest, pytest-timeout, boto3.
#   2. Stock Apache Kafka broker class paths from Maven Central, one per version in
#      $FASTTIER_KAFKA_VERSIONS (default "4.4.0 4.3.2 4.2.2 4.1.2": the newest patch release of each
#      supported line, for the version matrix tests/e2e/test_versions.py; 4.4.0 is the default broker of
#      the other tests and 4.1.2 the older line's smoke), resolved by Maven from
#      tests/harness/kafka-deps/pom.xml into $FASTTIER_CACHE/kafka/<version>/libs:
#      kafka_2.13 (kafka.Kafka, kafka.tools.StorageTool), kafka-tools, log4j-slf4j2-impl + log4j-core
#      (+ slf4j-api 2). The log4j2 configuration is tests/harness/log4j2.xml (one log file per broker).
#   3. The S3-compatible server: MinIO, built from source with `go install` (Go module proxy) at a
#      pinned commit into $FASTTIER_CACHE/bin/minio.
#
# S3 server choice — MinIO (github.com/minio/minio, pinned below), because:
#   * it is a production-grade S3 implementation that real deployments run, with real on-disk
#     persistence: a stop/start on the same port and data dir keeps every object, which the
#     "S3 outage" tests need; it implements what the plugin uses (path-style addressing, SigV4, ranged
#     GETs, multipart uploads, ListObjectsV2, DeleteObjects, HeadBucket, NoSuchBucket errors);
#   * it installs from a registry we can reach (the Go module proxy) with no binary download, and
#     starts in about a second;
#   * measured on the 2-core CI-sized machine (while Rust builds ran beside it): `go install` from an
#     empty Go module and build cache takes 7-9 minutes wall clock (4.3 min user CPU; downloads are a
#     small part); with a warm Go build cache, seconds. The rest of a from-scratch run (pip into an
#     empty venv: 14 s; Kafka 4.4.0 and 4.1.2 from an empty Maven repository: 16 s + 15 s, 4.2.2 and
#     4.3.2 about 10 s more each) is about a minute. A second run of this script (everything present)
#     takes about 1.5 s.
#   Caveats: MinIO's open-source repository is in maintenance mode and publishes no semver tags, so
#   the pin is a Go pseudo-version (a commit). MinIO always also listens on the IPv6 loopback [::1]
#   next to 127.0.0.1 (cmd/server-main.go getServerListenAddrs): loopback only, never another address.
#   Alternatives considered: moto (PyPI) — quick to install but an in-memory mock whose data does not
#   survive a restart (no real outage test) and whose S3 semantics are emulated; s3s-fs (crates.io) —
#   a small reference server that maps objects to plain files, fine but less battle-tested and also a
#   multi-minute cargo build; SeaweedFS (go install) — production-grade but a larger multi-process
#   setup (master/volume/filer/s3) for no gain here; Ceph radosgw (apt) — far too heavy for a test box.
#
# Environment:
#   FASTTIER_CACHE            cache root (default ~/.cache/fasttier)
#   FASTTIER_KAFKA_VERSIONS   Kafka versions to resolve (default "4.4.0 4.3.2 4.2.2 4.1.2")
#   FASTTIER_MINIO_VERSION    MinIO module version to build (default: the pin below)
#   FASTTIER_SKIP_PIP=1 / FASTTIER_SKIP_KAFKA=1 / FASTTIER_SKIP_MINIO=1   skip a step
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TESTS_DIR="$REPO_ROOT/tests"
CACHE="${FASTTIER_CACHE:-$HOME/.cache/fasttier}"
# The newest patch release of each supported line on Maven Central (bump a line here when a patch ships).
KAFKA_VERSIONS="${FASTTIER_KAFKA_VERSIONS:-4.4.0 4.3.2 4.2.2 4.1.2}"
# MinIO at commit 7aac2a2c5b7c (2026-02-12), what `go install github.com/minio/minio@latest` resolved to.
MINIO_VERSION="${FASTTIER_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
started=$(date +%s)

mkdir -p "$CACHE"

# ------------------------------------------------------------------------------------------ 1. pip
if [[ "${FASTTIER_SKIP_PIP:-0}" != "1" ]]; then
  req="$TESTS_DIR/requirements.txt"
  # one stamp per interpreter (several Pythons on one machine each need the packages)
  pyid="$("$PYTHON" -c 'import sys; print(sys.prefix, sys.version)' | sha256sum | cut -c1-16)"
  stamp="$CACHE/pip-requirements-$pyid.sha256"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
      && "$PYTHON" -c 'import confluent_kafka, boto3, pytest, pytest_timeout' 2>/dev/null; then
    log "python deps: up to date ($req)"
  else
    log "python deps: pip install -r $req"
    t0=$(date +%s)
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$req"
    "$PYTHON" -c 'import confluent_kafka; print("  confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0])'
    echo "$want" > "$stamp"
    log "python deps: installed in $(( $(date +%s) - t0 ))s"
  fi
fi

# ------------------------------------------------------------------------------------------ 2. Kafka
if [[ "${FASTTIER_SKIP_KAFKA:-0}" != "1" ]]; then
  command -v mvn >/dev/null || die "mvn (Maven) not found: apt-get install maven"
  command -v java >/dev/null || die "java not found (Java 17+ needed)"
  pom="$TESTS_DIR/harness/kafka-deps/pom.xml"
  for v in $KAFKA_VERSIONS; do
    dest="$CACHE/kafka/$v/libs"
    stamp="$CACHE/kafka/$v/.complete"
    want="$(sha256sum "$pom" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$dest/kafka_2.13-$v.jar" ]]; then
      log "kafka $v: up to date ($dest, $(ls "$dest" | wc -l) jars)"
      continue
    fi
    log "kafka $v: resolving broker class path from Maven Central into $dest"
    t0=$(date +%s)
    tmp="$CACHE/kafka/$v/libs.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    mvnlog="$CACHE/kafka/$v/mvn.log"
    if ! mvn -B -Dstyle.color=never -f "$pom" -Dkafka.version="$v" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" dependency:copy-dependencies >"$mvnlog" 2>&1; then
      tail -40 "$mvnlog" >&2
      rm -rf "$tmp"
      die "Maven could not resolve org.apache.kafka:kafka_2.13:$v (full log: $mvnlog)"
    fi
    [[ -f "$tmp/kafka_2.13-$v.jar" ]] || { rm -rf "$tmp"; die "kafka_2.13-$v.jar missing after resolve"; }
    rm -rf "$dest"
    mv "$tmp" "$dest"
    echo "$want" > "$stamp"
    log "kafka $v: $(ls "$dest" | wc -l) jars in $(( $(date +%s) - t0 ))s"
  done
fi

# ------------------------------------------------------------------------------------------ 3. MinIO
if [[ "${FASTTIER_SKIP_MINIO:-0}" != "1" ]]; then
  bin="$CACHE/bin/minio"
  stamp="$CACHE/bin/minio.version"
  if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$MINIO_VERSION" ]] && "$bin" --version >/dev/null 2>&1; then
    log "minio: up to date ($bin, github.com/minio/minio@$MINIO_VERSION)"
  else
    command -v go >/dev/null || die "go not found (Go 1.24+ needed to build MinIO)"
    mkdir -p "$CACHE/bin"
    # A binary built elsewhere from the same module version is as good: reuse it instead of rebuilding.
    reuse=""
    for cand in "$(go env GOPATH 2>/dev/null)/bin/minio" "$(command -v minio 2>/dev/null || true)"; do
      if [[ -n "$cand" && -x "$cand" ]] \
          && go version -m "$cand" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+github.com/minio/minio[[:space:]]+$MINIO_VERSION([[:space:]]|$)"; then
        reuse="$cand"; break
      fi
    done
    if [[ -n "$reuse" ]]; then
      log "minio: reusing $reuse (built from github.com/minio/minio@$MINIO_VERSION)"
      cp -f "$reuse" "$bin.tmp.$$"
    else
      log "minio: go install github.com/minio/minio@$MINIO_VERSION (several minutes from scratch)"
      t0=$(date +%s)
      gobin="$CACHE/bin/.gobin.$$"
      mkdir -p "$gobin"
      GOBIN="$gobin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install -trimpath "github.com/minio/minio@$MINIO_VERSION" \
        || { rm -rf "$gobin"; die "go install github.com/minio/minio@$MINIO_VERSION failed"; }
      mv -f "$gobin/minio" "$bin.tmp.$$"
      rm -rf "$gobin"
      log "minio: built in $(( $(date +%s) - t0 ))s"
    fi
    mv -f "$bin.tmp.$$" "$bin"
    "$bin" --version >/dev/null || die "$bin does not run"
    echo "$MINIO_VERSION" > "$stamp"
    log "minio: installed $bin"
  fi
fi

log "done in $(( $(date +%s) - started ))s (cache: $CACHE)"
