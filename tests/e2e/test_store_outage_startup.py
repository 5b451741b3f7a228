"""A broker restarted while the object store is down comes up like a stock broker, serves its local data, and
the tiers resume when the store is back (issue 15: "start-up that never blocks on the store").

Before: RemoteStorageManager.configure checked the bucket and failed when the store did not answer, so the
broker exited at start-up ("Fatal error during broker startup", the same path as a wrong bucket); a stock
broker without the plugin would have come up and served its local data.
"""

from __future__ import annotations

import os
import time

import pytest

from harness.data import assert_same, consume_all, produce
from harness.tiering import tiered_config, topic_objects, wait_all_tiered

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")

CLUSTER = dict(n_brokers=1, version=VERSION, plugin=True, rsm_config={"chunk.bytes": 256 * 1024})


def test_broker_restarted_during_store_outage_serves_local_data_and_tiering_resumes(kc, s3_server):
    topic = "restart-outage"
    kc.create_topic(topic, 1, config=tiered_config())
    tid = kc.topic_id(topic)
    produced = produce(kc, topic, 6_000, partitions=1, codecs=("none",))
    wait_all_tiered(kc, topic, 1, timeout=240)
    tiered_before = len(topic_objects(s3_server, tid, kc.prefix).logs)
    assert tiered_before >= 1

    s3_server.stop()
    try:
        kc.stop_broker(0)
        mark = kc.log_mark(0)
        t0 = time.monotonic()
        kc.start_broker(0, timeout=120)  # raises if the broker does not come up (or exits)
        up_s = time.monotonic() - t0
        assert kc.is_running(0)
        # local data: written and read back while the store is still down
        before = produced.end_offsets()
        more = produce(kc, topic, 6_000, partitions=1, codecs=("none",), start_index=6_000)
        got = consume_all(kc, topic, more.end_offsets(), start_offsets=before, timeout=120)
        assert not got.errors, got.errors[:5]
        assert_same(more.records, got.records, "records produced after a restart during the store outage")
        produced.merge(more)
        log = kc.log_since(0, mark)
        warned = [ln for ln in log.splitlines() if "does not answer" in ln]
        assert warned, "no start-up warning that the store does not answer:\n" + kc.diagnostics([0], lines=60)
        assert "Fatal error during broker startup" not in log
        print(f"broker up in {up_s:.1f}s with the store down; warning: {warned[0][:250]}")
    finally:
        s3_server.start()

    # the tiers resume: the segments rolled during the outage are copied, everything reads back
    t0 = time.monotonic()
    wait_all_tiered(kc, topic, 1, timeout=300)
    resumed_s = time.monotonic() - t0
    assert len(topic_objects(s3_server, tid, kc.prefix).logs) > tiered_before
    got = consume_all(kc, topic, produced.end_offsets(), timeout=240)
    assert not got.errors, got.errors[:5]
    assert_same(produced.records, got.records, "after the store came back")
    print(f"tiering caught up {resumed_s:.1f}s after the store came back")
