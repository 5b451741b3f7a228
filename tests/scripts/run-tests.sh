#!/usr/bin/env bash
# Runs every test suite of fasttier, after `make setup build` (the Makefile's `test` target does both):
#   1. Rust: unit tests, the object-store conformance suite on memory/fault-injecting stores and on a real
#      MinIO (tests/scripts/with_s3.py), JNI bridge tests;
#   2. Java: the shim's JUnit tests against the real native library (Gradle);
#   2b. Testcontainers: brokers with the plugin and MinIO in containers of a private Docker engine
#      (tests/scripts/docker.sh, docs/testcontainers.md; the engine is stopped again when this script ends);
#   3. end to end: the harness self-test and the real-broker scenarios (pytest, tests/selftest + tests/e2e).
# Every suite runs even if an earlier one failed; the last line sums them up:
#   "fasttier: N passed, N failed, N skipped". Exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
export FASTTIER_CACHE="${FASTTIER_CACHE:-$HOME/.cache/fasttier}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FASTTIER_CACHE/target}"
logs=build/test-logs
rm -rf "$logs" && mkdir -p "$logs"
status=0
step() { printf '\n===== %s (%s) =====\n' "$1" "$(date +%H:%M:%S)"; }

step "rust: cargo test --release --workspace (with MinIO)"
python3 tests/scripts/with_s3.py -- cargo test --release --workspace --no-fail-fast 2>&1 | tee "$logs/cargo.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

step "java: gradle test"
rm -rf java-shim/build/test-results
gradle --no-daemon -q test 2>&1 | tee "$logs/gradle.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

step "testcontainers: gradle :testcontainers:containerTest (a private dockerd, docs/testcontainers.md)"
# The engine runs in a network namespace of its own; the test JVM joins it (docker.sh exec) to reach the
# containers' ports, after a first Gradle run here has resolved and compiled everything (no network there).
trap 'bash tests/scripts/docker.sh stop >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
rm -rf testcontainers/build/test-results/containerTest
{
  bash tests/scripts/docker.sh start \
    && bash tests/scripts/docker.sh build \
    && gradle --no-daemon -q :testcontainers:containerTestClasspath \
    && bash tests/scripts/docker.sh exec -- gradle --no-daemon --offline -q :testcontainers:containerTest
} 2>&1 | tee "$logs/testcontainers.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
bash tests/scripts/docker.sh stop 2>&1 | tee -a "$logs/testcontainers.log"

step "end to end: pytest tests/selftest tests/e2e"
python3 -m pytest tests/selftest tests/e2e -q -rA --junitxml="$logs/pytest.xml" ${FASTTIER_PYTEST_ARGS:-} 2>&1 | tee "$logs/pytest.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

python3 tests/scripts/summarize.py "$logs/cargo.log" java-shim/build/test-results "$logs/pytest.xml" \
  testcontainers/build/test-results/containerTest || status=1
exit $status
