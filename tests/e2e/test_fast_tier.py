"""Fast tier end to end: stock Kafka brokers (3 nodes, KRaft, RF=3) with fasttier's RSM and RLMM upload
their led partitions' active-segment data to MinIO continuously. The check is always the same and always
byte for byte: `fasttier partition verify` reads a broker's local log directory and compares every batch
with what the slow tier plus the fast tier hold (all brokers' streams, resolved by the leader-epoch rule),
and reports gaps, duplicates, conflicts and mismatches.

One cluster and one S3 server serve the module; scenarios run in file order (the disruptive ones last),
each on its own topics, under continuous acks=all produce.
"""

from __future__ import annotations

import os
import time

import pytest

from harness import wait_until
from harness.cli import cli_json, verify_partition
from harness.data import produce_transactional
from harness.jmx import Jmx
from harness.tiering import tiered_config
from harness.workload import (
    ContinuousProducer,
    assert_nothing_lost,
    elect_preferred,
    high_watermarks,
    kill_leader_and_restart,
)

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
INTERVAL_MS = 200

CLUSTER = dict(
    n_brokers=3,
    version=VERSION,
    plugin=True,
    jmx=True,
    rsm_config={
        "wal.upload.interval.ms": INTERVAL_MS,
        "wal.cleanup.interval.ms": 2000,
        "wal.safety.horizon.ms": 3000,
        "wal.head.interval.ms": 500,
    },
)


def fast_topic_config(**over) -> dict:
    """Small segments that roll on size and on time, so data moves from the fast tier to the slow tier
    within the test."""
    cfg = tiered_config(**{"segment.ms": 8000, "min.insync.replicas": 2})
    cfg.update(over)
    return cfg


# --------------------------------------------------------------------------------------------------
# the check


def verify_all(kc, topic: str, partitions: int, nodes=None, timeout: float = 120.0) -> dict[tuple[int, int], dict]:
    """Waits until, on every replica (or `nodes`), the tiers hold the partition's log up to its end
    byte-identical with no gap, duplicate or conflict; returns the last reports. The leader's report
    must reach its local log end (everything acknowledged is uploaded)."""
    hw = high_watermarks(kc, topic, partitions)
    reports: dict[tuple[int, int], dict] = {}

    def check() -> bool:
        for p in range(partitions):
            leader = kc.leader_of(topic, p)
            for n in (nodes if nodes is not None else range(kc.n)):
                if not kc.is_running(n):
                    continue
                r = verify_partition(kc, n, topic, p)
                reports[(n, p)] = r
                if not r["ok"]:
                    return False
                if n == leader and (r["last_uploaded_offset"] is None or r["last_uploaded_offset"] < hw[p] - 1):
                    return False
        return True

    try:
        wait_until(check, timeout, 2.0, f"the tiers to hold {topic} exactly")
    except Exception:
        bad = {k: {f: v for f, v in r.items() if f not in ("dir",)} for k, r in reports.items() if not r["ok"]}
        pytest.fail(f"verify of {topic} did not settle; failing reports: {bad or reports}")
    for (n, p), r in reports.items():
        assert r["batches_mismatched"] == 0 and r["conflicts"] == 0 and r["duplicates"] == 0, r
        assert r["local_missing"] == 0 and not r["tier_gaps"], r
    return reports


def plugin_metrics(kc, node: int) -> dict[str, float]:
    return Jmx(kc, node).plugin()


def wal_keys(s3, kc) -> list[str]:
    return [k for k in s3.keys(f"{kc.prefix}fasttier/v1/wal/") if k.endswith(".wal")]


# --------------------------------------------------------------------------------------------------
# 1. continuous produce: plain, compressed and transactional topics, across segment rolls


def test_continuous_produce_is_mirrored_exactly(kc, s3_server):
    kc.create_topic("ft-plain", 3, config=fast_topic_config())
    kc.create_topic("ft-zstd", 2, config=fast_topic_config())
    kc.create_topic("ft-txn", 1, config=fast_topic_config())
    plain = ContinuousProducer(kc, "ft-plain", 3, "none", rate=1500).start()
    zstd = ContinuousProducer(kc, "ft-zstd", 2, "zstd", rate=1500).start()
    t0 = time.monotonic()
    # transactional batches with aborted transactions, while the others run
    txns = produce_transactional(kc, "ft-txn", [(40, i % 3 != 2) for i in range(30)], partitions=1,
                                 ts0=int(time.time() * 1000))
    assert any(not c for c in txns.committed.values()), "some transactions aborted"
    # the fast tier follows within seconds while produce goes on (not only after it stops)
    time.sleep(max(0.0, 6 - (time.monotonic() - t0)))
    mid = verify_partition(kc, kc.leader_of("ft-plain", 0), "ft-plain", 0)
    assert mid["ok"], mid  # (a leader's uploads race nothing: verify retries what cleanup deletes under it)
    assert mid["fast_ranges"] > 0 and mid["last_uploaded_offset"] is not None, mid
    assert mid["local_log_end_offset"] - 1 - mid["last_uploaded_offset"] < 6 * 1500, \
        f"fast tier far behind the leader during produce: {mid}"
    time.sleep(max(0.0, 20 - (time.monotonic() - t0)))
    acked = {"ft-plain": plain.stop(), "ft-zstd": zstd.stop()}

    reports = {}
    for topic, parts in (("ft-plain", 3), ("ft-zstd", 2), ("ft-txn", 1)):
        reports.update({(topic,) + k: v for k, v in verify_all(kc, topic, parts).items()})
    # across segment rolls: the slow tier took over part of the data; both tiers took part
    assert any(r["slow_segments"] > 0 for r in reports.values()), "no segment reached the slow tier"
    # (a partition whose data all reached the slow tier may have no fast-tier range left: cleanup)
    assert sum(r["fast_ranges"] for r in reports.values()) > 0
    # enough batches were checked (how many depends on how the producers batched: fewer, larger batches on a
    # loaded machine; a replica whose data all went to the slow tier and local retention has none left)
    assert sum(r["batches_checked"] for r in reports.values()) > 100
    for topic, a in acked.items():
        assert_nothing_lost(kc, topic, 3 if topic == "ft-plain" else 2, a)

    m = plugin_metrics(kc, kc.leader_of("ft-plain", 0))
    assert m.get("wal-objects-total", 0) > 10, m
    assert m.get("wal-upload-lag-count", 0) > 0 and m.get("wal-upload-lag-le-10000ms", 0) > 0, m
    assert 0 <= m.get("wal-upload-lag-p99-ms", -1) < 60_000, m
    assert m.get("wal-partitions", 0) >= 1, m
    assert m.get("wal-retained-bytes", 0) > 0, m


# --------------------------------------------------------------------------------------------------
# 2. fast tier size stays bounded: objects whose data reached the slow tier are deleted


def test_cleanup_deletes_objects_the_slow_tier_covers(kc, s3_server):
    kc.create_topic("ft-clean", 2, config=fast_topic_config(**{"segment.ms": 4000}))
    prod = ContinuousProducer(kc, "ft-clean", 2, "lz4", rate=1000).start()
    time.sleep(25)
    prod.stop()
    created = sum(plugin_metrics(kc, n).get("wal-objects-total", 0) for n in range(kc.n))

    def deleted() -> float:
        return sum(plugin_metrics(kc, n).get("wal-deleted-objects-total", 0) for n in range(kc.n))

    wait_until(lambda: deleted() > 0, 90, 3.0, "fast-tier cleanup to delete covered objects")
    retained = len(wal_keys(s3_server, kc))
    assert retained < created, f"{retained} WAL objects retained of {created} created"
    # what was deleted is in the slow tier: the partition is still complete across both tiers
    verify_all(kc, "ft-clean", 2)
    sizes = [plugin_metrics(kc, n).get("wal-retained-bytes", -1) for n in range(kc.n)]
    assert all(s >= 0 for s in sizes), sizes


# --------------------------------------------------------------------------------------------------
# 2b. a deleted topic's fast-tier data goes too (no slow-tier coverage needed: the partition is gone)


def test_deleted_topic_leaves_the_fast_tier(kc, s3_server):
    topic = "ft-deleted"
    kc.create_topic(topic, 2, config=fast_topic_config(**{"segment.ms": 600000}))
    tid = kc.topic_id(topic)
    prod = ContinuousProducer(kc, topic, 2, "none", rate=500).start()
    time.sleep(5)
    prod.stop()

    def keys_with_topic() -> set[str]:
        keys: set[str] = set()
        for p in range(2):
            shown = cli_json(kc, 0, ["partition", "show", "--topic", topic, "--partition", str(p), "--topic-id", tid])
            keys |= {r["key"] for r in shown["fast"]["ranges"]}
        return keys

    held = keys_with_topic()
    assert held, "the topic's data never reached the fast tier"
    kc.delete_topic(topic)
    # newer objects from another topic, so the objects holding the deleted topic are not streams' newest
    other = ContinuousProducer(kc, "ft-after-delete", 3, "none", rate=300)
    kc.create_topic("ft-after-delete", 3, config=fast_topic_config())
    other.start()
    try:
        wait_until(lambda: not (held & set(wal_keys(s3_server, kc))), 90, 2.0,
                   f"the deleted topic's {len(held)} WAL objects to be deleted")
    finally:
        other.stop()


# --------------------------------------------------------------------------------------------------
# 3. leadership moves: kill -9 of a leader, then a preferred-leader election, under produce


def test_leadership_moves_continue_the_partition(kc, s3_server):
    topic, parts = "ft-moves", 3
    kc.create_topic(topic, parts, config=fast_topic_config())
    prod = ContinuousProducer(kc, topic, parts, "none", rate=1500).start()
    time.sleep(6)
    victim = kill_leader_and_restart(kc, topic, 0)  # kill -9 in the middle of uploads
    time.sleep(3)
    elect_preferred(kc, topic, parts)
    time.sleep(6)
    acked = prod.stop()
    verify_all(kc, topic, parts)
    assert_nothing_lost(kc, topic, parts, acked)
    # the killed broker's stream resumed after its restart: it uploads again as a leader
    def victim_uploads() -> bool:
        return plugin_metrics(kc, victim).get("wal-objects-total", 0) > 0
    leads_any = any(kc.leader_of(topic, p) == victim for p in range(parts))
    if leads_any:
        wait_until(victim_uploads, 30, 1.0, f"broker {victim} to upload after its restart")
    # every object in every stream is whole and valid (the CLI checks header CRCs and the hash chain)
    streams = cli_json(kc, 0, ["wal", "list"])
    assert streams, "no streams listed"


# --------------------------------------------------------------------------------------------------
# 4. object store down: brokers keep serving, uploads catch up, lag visible meanwhile


def test_store_outage_falls_behind_and_catches_up(kc, s3_server):
    topic, parts = "ft-outage", 2
    kc.create_topic(topic, parts, config=fast_topic_config(**{"segment.ms": 60000}))
    prod = ContinuousProducer(kc, topic, parts, "none", rate=1000).start()
    time.sleep(4)
    leader = kc.leader_of(topic, 0)
    log_mark = kc.log_mark(leader)
    s3_server.stop()
    try:
        before = prod.acked.count()
        time.sleep(15)
        during = prod.acked.count()
        assert during - before > 1000, f"produce stalled while S3 was down: {before} -> {during}"
        m = plugin_metrics(kc, leader)
        assert m.get("wal-behind-ms", 0) > 1000, f"lag not visible in metrics during the outage: {m}"
        assert m.get("wal-errors-total", 0) > 0, m
        for n in range(kc.n):
            assert kc.is_running(n), kc.diagnostics([n])
        failures = [ln for ln in kc.log_since(leader, log_mark).splitlines()
                    if "fast tier: uploading key=" in ln and "fasttier/v1/wal/" in ln]
        assert failures, "upload failures not logged with the object key"
    finally:
        s3_server.start()
    time.sleep(5)
    acked = prod.stop()
    verify_all(kc, topic, parts, timeout=180)
    assert_nothing_lost(kc, topic, parts, acked)
    wait_until(lambda: plugin_metrics(kc, leader).get("wal-behind-ms", 1) < 5000, 60, 2.0, "lag to recover")
