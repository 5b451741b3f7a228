"""Supported versions, checked: a short smoke per (Kafka line, Java) cell of the support matrix.

Each cell starts a one-node KRaft cluster of that stock Kafka release on that JVM with fasttier's RSM and
RLMM (the fast tier on) against the module's MinIO, and checks:
  * the broker runs on the asked JVM (/proc/<pid>/exe) and the plugin's version check read that Kafka
    ("remote storage manager ready (... Kafka <version>, ...)");
  * the fast tier uploads the active segment's data (.wal objects under the cluster's prefix);
  * rolled segments tier to the slow tier (.log + .indexes + .manifest each) and leave the local disk;
  * a consumer from offset 0 reads every record back (from remote storage, then the local tail) byte for
    byte.

Matrix (README "Supported versions"): Kafka 4.1, 4.2, 4.3, 4.4 (the newest patch release of each line that
tests/scripts/setup.sh resolves) x Java 17 and the newest Java found (Java 25 on the project's machines; a
Java 21 is used when it is the newest installed). By default (CI too) the cells run are every Kafka line
on Java 17 and the newest Kafka on the newer Java; FASTTIER_VERSION_MATRIX=full runs all of them. A cell
whose Java is not installed is skipped saying so.

Environment:
  FASTTIER_VERSION_MATRIX      "smoke" (default) or "full"
  FASTTIER_MATRIX_KAFKA        Kafka versions of the rows (default "4.1.2 4.2.2 4.3.2 4.4.0"; the last
                               one is the newest, run on the newer Java by default)
  FASTTIER_JAVA17_HOME         the Java 17 column (default: a JDK/JRE 17 under /usr/lib/jvm)
  FASTTIER_JAVA_NEWER_HOME     the newer-Java column (default: the newest JDK/JRE >= 21 under /usr/lib/jvm)

Kafka 4.0 (refused at class load) is tested in test_startup_config.py; a version newer than 4.4 (refused by
the shim's version check) in the shim's KafkaVersionCheckTest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import pytest

from harness import wait_until
from harness.data import assert_same, consume_all, produce
from harness.kafka import java_version, kafka_libs
from harness.procs import HarnessError
from harness.tiering import assert_segments_complete, tiered_config, wait_all_tiered

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

KAFKA_VERSIONS = os.environ.get("FASTTIER_MATRIX_KAFKA", "4.1.2 4.2.2 4.3.2 4.4.0").split()
MATRIX = os.environ.get("FASTTIER_VERSION_MATRIX", "smoke").strip().lower() or "smoke"
JVM_DIR = Path("/usr/lib/jvm")


def _major(version: Optional[str]) -> Optional[int]:
    try:
        return int(version.split(".")[0]) if version else None
    except ValueError:
        return None


def _installed_javas() -> list[tuple[int, str]]:
    """(feature version, home) of every JDK/JRE under /usr/lib/jvm with a `release` file and bin/java,
    real directories only (Debian's java-1.17.0-openjdk-amd64 is a link to java-17-openjdk-amd64)."""
    out = []
    if JVM_DIR.is_dir():
        for d in sorted(JVM_DIR.iterdir()):
            if d.is_symlink() or not (d / "bin" / "java").exists():
                continue
            m = _major(java_version(str(d)))
            if m is not None:
                out.append((m, str(d)))
    return out


def _java_home(env_key: str, pick) -> tuple[Optional[str], str]:
    """(home or None, why none) of one column: $env_key if set, else pick(installed javas)."""
    given = os.environ.get(env_key)
    if given:
        if (Path(given) / "bin" / "java").exists():
            return given, ""
        return None, f"{env_key}={given} has no bin/java"
    home = pick(_installed_javas())
    return (home, "") if home else (None, f"not installed under {JVM_DIR} (set {env_key})")


JAVA17, JAVA17_WHY = _java_home(
    "FASTTIER_JAVA17_HOME", lambda js: next((h for m, h in js if m == 17), None))
JAVA_NEWER, JAVA_NEWER_WHY = _java_home(
    "FASTTIER_JAVA_NEWER_HOME", lambda js: max(((m, h) for m, h in js if m >= 21), default=(0, None))[1])
JAVA_NEWER_MAJOR = _major(java_version(JAVA_NEWER)) if JAVA_NEWER else None


def _cells():
    newest = KAFKA_VERSIONS[-1]
    columns = [
        ("java17", JAVA17, JAVA17_WHY, "Java 17"),
        (f"java{JAVA_NEWER_MAJOR}" if JAVA_NEWER_MAJOR else "javanewer", JAVA_NEWER, JAVA_NEWER_WHY,
         f"Java {JAVA_NEWER_MAJOR}" if JAVA_NEWER_MAJOR else "a Java >= 21"),
    ]
    for col, (label, home, why, name) in enumerate(columns):
        for kafka in KAFKA_VERSIONS:
            marks = []
            if home is None:
                marks.append(pytest.mark.skip(reason=f"{name} for Kafka {kafka}: {why}"))
            elif MATRIX != "full" and col == 1 and kafka != newest:
                marks.append(pytest.mark.skip(
                    reason=f"Kafka {kafka} on {name}: not in the default subset (FASTTIER_VERSION_MATRIX=full)"))
            yield pytest.param(kafka, home, id=f"kafka{kafka}-{label}", marks=marks)


def _wal_objects(s3, kc) -> list[str]:
    return [k for k in s3.keys(f"{kc.prefix}fasttier/v1/wal/") if k.endswith(".wal")]


@pytest.mark.parametrize("kafka,java_home", list(_cells()))
def test_version_cell(make_cluster, s3_server, kafka, java_home):
    t0 = time.monotonic()
    try:
        kafka_libs(kafka)
    except HarnessError as e:
        pytest.fail(f"{e}\n(tests/scripts/setup.sh resolves every supported line by default)")
    jv = java_version(java_home)
    kc = make_cluster(1, version=kafka, plugin=True, s3=s3_server, java_home=java_home,
                      name=f"k{kafka}-j{_major(jv)}", rsm_config={"wal.upload.interval.ms": 100})
    started = time.monotonic() - t0

    # the broker JVM is the asked one, and the plugin saw this Kafka version (and accepted it)
    exe = os.path.realpath(f"/proc/{kc.nodes[0].proc.pid}/exe")
    assert exe.startswith(os.path.realpath(java_home) + "/"), f"broker runs {exe}, not a java of {java_home}"
    ready = kc.grep_log(0, r"fasttier: remote storage manager ready")
    assert ready and f"Kafka {kafka}," in ready[0], f"{ready}\n{kc.diagnostics([0])}"

    topic = "cell"
    kc.create_topic(topic, 1, config=tiered_config(**{"min.insync.replicas": 1}))
    # ~3.6 MB of records: three 1 MiB segments roll and tier, the rest stays in the active segment
    produced = produce(kc, topic, 12_000, codecs=("zstd", "none"))

    # the fast tier uploads the leader's active-segment data
    wal = wait_until(lambda: _wal_objects(s3_server, kc), 30, 0.5, f"fast-tier objects under {kc.prefix}")

    # the slow tier: rolled segments copied (complete) and deleted locally
    local_start = wait_all_tiered(kc, topic, 1, timeout=90)
    assert local_start[0] > 0
    segments = assert_segments_complete(kc, s3_server, topic, kc.topic_id(topic), 1)

    # read back from offset 0: offsets below local_start come from remote storage only
    got = consume_all(kc, topic, produced.end_offsets(), timeout=60)
    assert not got.errors, got.errors[:5]
    assert_same(produced.records, got.records, f"Kafka {kafka} on Java {jv}: read from offset 0")

    errors = [ln for ln in kc.plugin_problems(0) if " ERROR " in ln]
    assert not errors, errors[:5]
    assert kc.is_running(0), kc.diagnostics([0])
    print(f"Kafka {kafka} on Java {jv}: broker up in {started:.1f}s, {len(wal)} fast-tier objects, "
          f"{segments[0]} tiered segments (local log starts at {local_start[0]}), "
          f"{len(got.records)} records read back; {time.monotonic() - t0:.1f}s")
