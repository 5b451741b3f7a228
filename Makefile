# fasttier — the two commands of the README, and their parts.
#   make demo   set up, build, run a local 3-broker cluster with the plugin on MinIO and show tiering
#   make test   set up, build, run every test suite (what CI runs: .ci/run)
#   make bench  set up, build, run the benchmarks (prints figures; see docs/benchmarks.md)
#
# Build output of cargo is cached outside the clone (like the Kafka jars and MinIO) so a fresh clone on a
# machine that has built before does not recompile the AWS SDK; set CARGO_TARGET_DIR to override.
export FASTTIER_CACHE ?= $(HOME)/.cache/fasttier
export CARGO_TARGET_DIR ?= $(FASTTIER_CACHE)/target
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test bench setup build clean

setup:
	bash tests/scripts/install-build-tools.sh
	bash tests/scripts/setup.sh

build:
	cargo build --release -p fasttier-jni -p fasttier-cli
	gradle -q --no-daemon pluginDir distTar

test: setup build
	bash tests/scripts/run-tests.sh

demo: setup build
	python3 tests/demo.py

bench: setup build
	bash tests/bench/run.sh

clean:
	rm -rf build java-shim/build target
