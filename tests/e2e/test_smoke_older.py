"""Smoke test on the older supported Kafka line (4.1.x): the plugin loads in a stock 4.1 broker, a topic
tiers to S3, and a consumer reads it back from offset 0 byte for byte."""

from __future__ import annotations

import os

import pytest

from harness.data import assert_same, consume_all, produce
from harness.tiering import assert_segments_complete, tiered_config, wait_all_tiered

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

OLDER_VERSION = os.environ.get("FASTTIER_OLDER_KAFKA_VERSION", "4.1.2")

CLUSTER = dict(n_brokers=3, version=OLDER_VERSION, plugin=True)


def test_older_kafka_plugin_loads_tiers_and_reads_back(kc, s3_server):
    # the broker instantiated and configured fasttier's RSM (stock RemoteLogManager logs the class)
    for i in range(kc.n):
        assert kc.grep_log(i, r"io\.fasttier"), f"broker {i} log never mentions io.fasttier\n{kc.diagnostics([i])}"
    topic, partitions = "smoke", 2
    kc.create_topic(topic, partitions, config=tiered_config())
    produced = produce(kc, topic, 20_000, partitions=partitions, codecs=("zstd", "none", "gzip"))
    local_start = wait_all_tiered(kc, topic, partitions)
    assert_segments_complete(kc, s3_server, topic, kc.topic_id(topic), partitions)
    got = consume_all(kc, topic, produced.end_offsets(), timeout=240)
    assert not got.errors, got.errors[:5]
    assert_same(produced.records, got.records, f"Kafka {OLDER_VERSION}: read from offset 0")
    assert all(local_start[p] > 0 for p in range(partitions))
