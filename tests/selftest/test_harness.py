"""Self-test of the harness without the plugin (plain brokers + MinIO):
    python3 -m pytest tests/selftest -q
"""

from __future__ import annotations

import pytest

from harness import HarnessError, KafkaCluster, S3Server, live_processes
from harness.data import CODECS, assert_same, consume_all, produce, produce_transactional


def test_s3_server_restart_keeps_data_and_helpers_work(tmp_path):
    s3 = S3Server(buckets=["selftest-a", "selftest-b"], data_dir=tmp_path)
    with s3:
        s3.put("p/x.log", b"0123456789" * 100)
        s3.put("p/y.manifest", b"m")
        assert s3.keys("p/") == ["p/x.log", "p/y.manifest"]
        port = s3.port
        s3.stop()
        assert not s3.running()
        s3.start()
        assert s3.port == port
        assert s3.get("p/x.log") == b"0123456789" * 100
        off, n = s3.corrupt("p/x.log", offset=10, length=5)
        data = s3.get("p/x.log")
        assert (off, n) == (10, 5) and data[10:15] == bytes(b ^ 0xFF for b in b"01234")
        assert data[15:] == (b"0123456789" * 100)[15:]
        s3.kill()
        s3.start()
        assert s3.keys("", bucket="selftest-b") == []
        assert len(s3.keys()) == 2
    assert not live_processes()


def test_missing_plugin_dir_says_make_build(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTTIER_PLUGIN_DIR", str(tmp_path / "nope"))
    with pytest.raises(HarnessError, match="make build"):
        KafkaCluster(1, plugin=True, s3=object())


def test_plain_cluster_produce_consume_wipe_restart(make_cluster):
    kc = make_cluster(3, plugin=False, name="selftest")
    kc.create_topic("t", 2, config={"segment.bytes": 1 << 20})
    produced = produce(kc, "t", 20_000, partitions=2, codecs=CODECS)
    got = consume_all(kc, "t", produced.end_offsets())
    assert not got.errors
    assert_same(produced.records, got.records)
    txn = produce_transactional(kc, "t", [(500, True), (300, False), (200, True)], partitions=2, start_index=50_000)
    produced.merge(txn)
    got = consume_all(kc, "t", produced.end_offsets())
    assert_same(produced.only_committed(), got.records)

    kc.stop_broker(2)
    kc.wipe_broker(2)
    assert not kc.partition_dir(2, "t", 0).exists()
    kc.start_broker(2)
    kc.wait_for_isr("t", 3, contains=2)
    assert kc.local_segments(2, "t", 0)[0] == 0  # no tiering: re-replicated from offset 0
    kc.kill_broker(1)
    assert not kc.is_running(1)
    kc.start_broker(1)
    assert kc.alive_broker_ids() == [0, 1, 2]
    assert "Kafka Server started" in kc.broker_log(1)
