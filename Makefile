# fasttier — the two commands of the README, and their parts.
#   make demo   set up, build, show the slow tier, the fast tier's lag and replication through the fast tier against
#               stock in the three-zone bed (3 brokers, MinIO); KEEP=1 leaves the cluster running until Ctrl-C
#   make test   set up, build, run every test suite (what CI runs: .ci/run)
#   make gates  the quality gates (rustfmt, clippy, ruff, javac -Xlint:all -Werror); .ci/run runs them before make test
#   make bench  set up, build, run the benchmarks (prints figures; see docs/benchmarks.md)
#   make bench-fast  set up, build, run the fast tier benchmark (docs/benchmarks.md, "Fast tier")
#   make bench-rebuild  set up, build, rebuild a broker from the tiers vs stock (docs/benchmarks.md, "Rebuilding a broker")
#   make bench-zones  set up, build, stock vs fast tier vs replication through it in the zones bed (docs/benchmarks.md, "Replication through the fast tier")
#   make bench-link  set up, build, remote reads with the store behind a capped link (docs/benchmarks.md, "The store behind a link")
#
# Build output of cargo is cached outside the clone (like the Kafka jars and MinIO) so a fresh clone on a
# machine that has built before does not recompile the AWS SDK; set CARGO_TARGET_DIR to override.
export FASTTIER_CACHE ?= $(HOME)/.cache/fasttier
export CARGO_TARGET_DIR ?= $(FASTTIER_CACHE)/target
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test gates bench bench-fast bench-rebuild bench-zones bench-link setup build clean

setup:
	bash tests/scripts/install-build-tools.sh
	bash tests/scripts/setup.sh

build:
	cargo build --release -p fasttier-jni -p fasttier-cli
	gradle -q --no-daemon pluginDir distTar

gates:
	bash tests/scripts/gates.sh

test: setup build
	bash tests/scripts/run-tests.sh

demo: setup build
	python3 tests/demo.py $(if $(KEEP),--keep-running)

bench: setup build
	bash tests/bench/run.sh

bench-fast: setup build
	cargo build --release --quiet -p fasttier-bench --bin fasttier-bench-fast
	python3 tests/bench/fast_tier.py

bench-rebuild: setup build
	python3 tests/bench/rebuild.py

bench-zones: setup build
	cargo build --release --quiet -p fasttier-bench
	python3 tests/bench/zones.py

bench-link: setup build
	cargo build --release --quiet -p fasttier-bench
	python3 tests/bench/store_link.py

clean:
	rm -rf build java-shim/build target
