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

import pytest

from harness import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")


def _cases():
    dead_port = free_port()  # nothing listens here
    return [
        pytest.param({"s3.bucket": None}, [r"rsm\.config\.s3\.bucket"], id="missing-bucket"),
        pytest.param({"s3.bucket": "fasttier-no-such-bucket"}, [r"fasttier-no-such-bucket"], id="unknown-bucket"),
        pytest.param(
            {"s3.endpoint": f"http://127.0.0.1:{dead_port}"}, [rf"127\.0\.0\.1:{dead_port}"], id="bad-endpoint"
        ),
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
    lines = [l for l in log.splitlines() if "fasttier" in l and any(re.search(p, l) for p in must_name)]
    assert lines, f"no log line names {must_name}:\n{kc.diagnostics([0], lines=80)}"
    print(f"exit {rc}; message: {lines[0][:300]}")
