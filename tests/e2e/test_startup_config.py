"""Bad plugin configuration on a stock broker: one clear message naming the problem, and a broker that
does not come up half-working.

What a stock Kafka 4.x broker does when RemoteStorageManager.configure throws (read in the 4.1.2 and
4.4.0 jars, and asserted below): RemoteLogManager's constructor calls configure
(RemoteLogManager.configAndWrapRsmPlugin), BrokerServer.startup creates the RemoteLogManager, so the
exception fails broker startup ("Fatal error during broker startup. Prepare to shutdown"), the node
shuts down and the JVM exits with a non-zero code. fasttier validates every rsm.config.* key and checks
the bucket (HeadBucket) inside configure, so each case below must end the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from harness import free_port
from harness.procs import REPO_ROOT, cache_dir

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")


def _cases():
    return [
        pytest.param({"s3.bucket": None}, [r"rsm\.config\.s3\.bucket"], id="missing-bucket"),
        pytest.param({"s3.bucket": "fasttier-no-such-bucket"}, [r"fasttier-no-such-bucket"], id="unknown-bucket"),
        pytest.param({"s3.bukket": "fasttier-e2e"}, [r"rsm\.config\.s3\.bukket"], id="unknown-key"),
    ]


@pytest.mark.parametrize("rsm_config,must_name", _cases())
def test_bad_plugin_config_fails_startup_with_one_clear_message(make_cluster, s3_server, rsm_config, must_name):
    kc = make_cluster(1, version=VERSION, plugin=True, s3=s3_server, rsm_config=rsm_config, start=False,
                      name="badcfg")
    kc.start(wait=False)
    rc = kc.wait_for_exit(0, timeout=180)
    log = kc.broker_log(0)
    assert rc is not None, (
        "broker with bad plugin config is still running after 180 s (expected startup to fail)\n"
        + kc.diagnostics([0])
    )
    assert rc != 0, f"exit code {rc}"
    assert "Fatal error during broker startup" in log, kc.diagnostics([0])
    # the plugin's message: starts with "fasttier: " and names the problem
    lines = [ln for ln in log.splitlines() if "fasttier" in ln and any(re.search(p, ln) for p in must_name)]
    assert lines, f"no log line names {must_name}:\n{kc.diagnostics([0], lines=80)}"
    print(f"exit {rc}; message: {lines[0][:300]}")


def test_store_that_does_not_answer_is_not_a_config_error(make_cluster, s3_server):
    """Nothing listens at the endpoint: the broker comes up (like a stock broker) and says so once."""
    dead_port = free_port()
    kc = make_cluster(1, version=VERSION, plugin=True, s3=s3_server, start=False, name="noanswer",
                      rsm_config={"s3.endpoint": f"http://127.0.0.1:{dead_port}"})
    t0 = time.monotonic()
    kc.start(timeout=120)
    print(f"broker up in {time.monotonic() - t0:.1f}s")
    log = kc.broker_log(0)
    lines = [ln for ln in log.splitlines() if "does not answer" in ln and f"127.0.0.1:{dead_port}" in ln]
    assert lines, kc.diagnostics([0], lines=60)
    assert kc.is_running(0)
    print(lines[0][:300])
    # the version check read this broker's version (and passed)
    ready = [ln for ln in log.splitlines() if "remote storage manager ready" in ln]
    assert ready and f"Kafka {VERSION}," in ready[0], ready
    assert "cannot tell the Kafka version" not in log


OLD_KAFKA = os.environ.get("FASTTIER_KAFKA_OLD_VERSION", "4.0.1")


def _ensure_kafka(version: str) -> None:
    """Fetch that version's broker class path (Maven Central, as tests/scripts/setup.sh does) if missing:
    only this test needs it (about 20 s once)."""
    if any((cache_dir() / "kafka" / version / "libs").glob(f"kafka_2.13-{version}.jar")):
        return
    env = dict(os.environ, FASTTIER_KAFKA_VERSIONS=version, FASTTIER_SKIP_PIP="1", FASTTIER_SKIP_MINIO="1")
    subprocess.run(["bash", str(REPO_ROOT / "tests" / "scripts" / "setup.sh")], env=env, check=True, timeout=600)


def test_kafka_40_stops_at_startup_naming_the_missing_41_api(make_cluster, s3_server):
    _ensure_kafka(OLD_KAFKA)
    kc = make_cluster(1, version=OLD_KAFKA, plugin=True, s3=s3_server, start=False, name="kafka40")
    kc.start(wait=False)
    rc = kc.wait_for_exit(0, timeout=180)
    log = kc.broker_log(0)
    assert rc is not None, f"Kafka {OLD_KAFKA} broker with fasttier is still running\n" + kc.diagnostics([0])
    assert rc != 0, f"exit code {rc}"
    assert "Fatal error during broker startup" in log, kc.diagnostics([0])
    lines = [ln for ln in log.splitlines() if "org/apache/kafka/common/metrics/Monitorable" in ln]
    assert lines, kc.diagnostics([0], lines=80)
    print(f"Kafka {OLD_KAFKA}: exit {rc}; {lines[0][:300]}")
