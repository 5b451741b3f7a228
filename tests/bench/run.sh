#!/usr/bin/env bash
# The benchmarks of fasttier (`make bench` runs this after `make setup build`). They PRINT FIGURES —
# throughput and memory, each next to a baseline measured in the same run — and assert nothing about
# speed. What they measure and how to read them: docs/benchmarks.md. About 10 minutes on 2 cores.
#
#   bash tests/bench/run.sh                  # everything; figures table at the end, JSON in build/bench/
#   bash tests/bench/run.sh --only native    # only the engine benchmarks (no broker)
#   bash tests/bench/run.sh --wait-quiet 600 # first wait (up to 600 s) until no other JVM runs here
#   bash tests/bench/run.sh --sweep          # also read with other max.partition.fetch.bytes
#   bash tests/bench/run.sh --only aiven     # only the side by side with Aiven's plugin (tests/bench/aiven.py;
#                                            # skipped with a message without ../shared/baselines/; --aiven-mib 1024)
#
# Needs: the plugin in build/plugin (make build), MinIO and the Kafka class path (tests/scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export FASTTIER_CACHE="${FASTTIER_CACHE:-$HOME/.cache/fasttier}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FASTTIER_CACHE/target}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! ls build/plugin/*.jar >/dev/null 2>&1 && [[ -z "${FASTTIER_PLUGIN_DIR:-}" ]]; then
    echo "tests/bench/run.sh: no plugin in build/plugin; run 'make build' first (or 'make bench')" >&2
    exit 2
fi
cargo build --release --quiet -p fasttier-bench
exec python3 tests/bench/bench.py "$@"
