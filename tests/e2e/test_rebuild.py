"""Rebuilding a broker from the tiers (issue 4), in the three-zone test bed (harness/zones.py): one broker
per zone, MinIO in its own namespace, a tiered topic (RF=3, acks=all, 1 MiB segments, small local
retention). Broker 2 (zone az3, a follower of every partition) loses its data disk; `fasttier rebuild`,
run in az3 with the broker's own server.properties, writes the partitions back from the slow and fast
tiers; the broker restarts and fetches only the remainder from the leaders. Then the same broker is
rebuilt the stock way (wiped and restarted) and both are compared in the same run: wall time and the
bytes az3 received from the other zones.

    FASTTIER_REBUILD_MB=32 python3 -m pytest tests/e2e/test_rebuild.py -s    # more data (default 8)
"""

from __future__ import annotations

import os
import time

import pytest

from harness import S3Server, wait_until
from harness.data import produce
from harness.rebuild import (
    MB, bytes_from, compare_replicas, idle_rate_into, into_zone, log_end, other_partitions_bytes, rebuild_cli,
    rejoin_measured, tier_coverage, verify_in_zone,
)
from harness.tiering import wait_local_log_start_beyond
from harness.zones import Zones, bed_support

_ok, _why = bed_support()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.plugin,
    pytest.mark.timeout(600),  # about 3 minutes on 2 cores
    pytest.mark.skipif(not _ok, reason=f"zones test bed unavailable: {_why}"),
]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
PRODUCE_MB = float(os.environ.get("FASTTIER_REBUILD_MB", "8"))
TOPIC = "rebuilt"
PARTITIONS = 2
ASSIGNMENT = [[0, 1, 2], [1, 0, 2]]  # led by nodes 0 and 1; node 2 follows both
NODE = 2
SEGMENT = 1 << 20
LOCAL_RETENTION = 2 * SEGMENT
DOWNTIME_MB = 0.5  # produced while the rebuilt broker is down: the remainder it must fetch
# Fixed allowance on top of the measured terms: the KRaft metadata the node missed while down, fetch
# session set-up, TCP/IP headers of request/response exchanges.
SLACK = 256 * 1024


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    with Zones(n=3, s3=True) as z, S3Server(
        buckets=["fasttier-rebuild"], data_dir=tmp_path_factory.mktemp("s3"), netns=z.s3_ns, host=z.s3_addr
    ) as s3:
        yield z, s3


def record_count(mb: float) -> int:
    return max(1, int(mb * MB / 1000))  # records of about 1000 bytes


def test_rebuild_from_the_tiers_crosses_far_fewer_zone_bytes_than_stock(bed, make_cluster):
    z, s3 = bed
    kc = make_cluster(3, version=VERSION, plugin=True, s3=s3, zones=z, name="zones-rebuild",
                      rsm_config={"wal.upload.interval.ms": 200})
    zone = kc.zone_of(NODE)
    kc.create_topic(TOPIC, partitions=PARTITIONS, replica_assignment=ASSIGNMENT, config={
        "remote.storage.enable": "true", "min.insync.replicas": 2, "segment.bytes": SEGMENT,
        "local.retention.bytes": LOCAL_RETENTION, "file.delete.delay.ms": 1000,
    })
    kc.wait_for_isr(TOPIC, 3)
    topic_id = kc.topic_id(TOPIC)
    idle = idle_rate_into(z, zone)

    n = record_count(PRODUCE_MB)
    produce(kc, TOPIC, n, partitions=PARTITIONS, value_size=(900, 1100))
    leaders = {p: kc.leader_of(TOPIC, p) for p in range(PARTITIONS)}
    assert all(leaders[p] != NODE for p in leaders), leaders
    # local retention deleted the oldest segments (they are only in the slow tier now), and the tiers
    # hold everything up to each leader's log end
    wait_local_log_start_beyond(kc, TOPIC, {p: 0 for p in range(PARTITIONS)}, timeout=180)
    leo = {p: log_end(kc.partition_dir(leaders[p], TOPIC, p)) for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        wait_until(lambda p=p: (tier_coverage(kc, NODE, TOPIC, p) or -1) >= leo[p] - 1, 60, 1.0,
                   f"the tiers to hold partition {p} up to {leo[p] - 1}")

    # while the broker runs, its log directory is locked: refused, nothing touched
    running = rebuild_cli(kc, NODE, ["--topic", TOPIC, "--force"])
    assert running.returncode == 2, (running.stdout, running.stderr)
    assert ".lock" in running.stderr and "running" in running.stderr, running.stderr
    plan = rebuild_cli(kc, NODE, ["--topic", TOPIC, "--local-retention-bytes", str(LOCAL_RETENTION),
                                  "--dry-run", "--force", "--json"])
    assert plan.returncode == 0, plan.stderr
    assert plan.json()["dry_run"] and len(plan.json()["partitions"]) == PARTITIONS

    # ---- fasttier rebuild: stop, lose the disk, rebuild from the tiers in az3, restart
    kc.stop_broker(NODE)
    kc.wipe_broker(NODE)
    z.reset_counters()
    since = time.monotonic()
    cli = rebuild_cli(kc, NODE, ["--topic", TOPIC, "--local-retention-bytes", str(LOCAL_RETENTION), "--json"])
    assert cli.returncode == 0, (cli.stdout, cli.stderr)
    report = cli.json()
    assert report["ok"], report
    rebuilt = {r["partition"]: r for r in report["partitions"]}
    assert sorted(rebuilt) == list(range(PARTITIONS))
    for p, r in rebuilt.items():
        # a tiered log starts above the log start offset (what local retention keeps), and the fast tier
        # took it to the leader's log end
        assert r["first_offset"] > 0 and r["log_end_offset"] == leo[p], (p, r, leo)
        assert r["fast_bytes"] > 0 and r["slow_bytes"] > 0, r
        assert r["verified_batches"] == r["batches"] > 0
        assert r["topic_id"] == topic_id, (r["topic_id"], topic_id)
        assert (kc.partition_dir(NODE, TOPIC, p) / "partition.metadata").read_text() == \
            f"version: 0\ntopic_id: {topic_id}"
    during = z.counters(directed=True)
    s3_by_cli = during[("s3", zone)]
    assert s3_by_cli >= report["bytes"], (s3_by_cli, report["bytes"])  # the restored data came from S3...
    assert into_zone(z, zone, during) < SLACK, during  # ...and nothing crossed into az3 meanwhile

    fast = rejoin_measured(kc, z, NODE, since, lambda: produce(
        kc, TOPIC, record_count(DOWNTIME_MB), partitions=PARTITIONS, value_size=(900, 1100), start_index=n))
    fast_total = cli.seconds + fast.seconds

    # the rebuilt replicas are the leaders' logs, byte for byte
    for p in range(PARTITIONS):
        lp = leaders[p]
        wait_until(lambda p=p, lp=lp: log_end(kc.partition_dir(NODE, TOPIC, p)) == log_end(kc.partition_dir(lp, TOPIC, p)),
                   60, 0.5, f"node {NODE} to reach the leader's log end of partition {p}")
        c = compare_replicas(kc.partition_dir(lp, TOPIC, p), kc.partition_dir(NODE, TOPIC, p))
        assert c.ends[0] == c.ends[1] and c.first <= rebuilt[p]["log_end_offset"], c
        v = verify_in_zone(kc, NODE, TOPIC, p)
        assert v["ok"], v
    # what crossed into az3: the data newer than the tiers held at rebuild time, the internal topics
    # (not tiered: replicated, and read by the RLMM's consumer), the idle background, a fixed slack
    remainder = sum(bytes_from(kc.partition_dir(leaders[p], TOPIC, p), rebuilt[p]["log_end_offset"])
                    for p in range(PARTITIONS))
    internal = other_partitions_bytes(kc, NODE, TOPIC)
    allowed = 1.05 * (remainder + 2 * internal) + 2 * idle * fast.window + SLACK

    # ---- stock rebuild of the same broker: lose the disk, restart, Kafka replicates from the leaders
    kc.stop_broker(NODE)
    kc.wipe_broker(NODE)
    z.reset_counters()
    stock = rejoin_measured(kc, z, NODE, time.monotonic(), lambda: produce(
        kc, TOPIC, record_count(DOWNTIME_MB), partitions=PARTITIONS, value_size=(900, 1100),
        start_index=n + record_count(DOWNTIME_MB)))
    fetched_stock = sum(bytes_from(kc.partition_dir(NODE, TOPIC, p), 0) for p in range(PARTITIONS))
    for p in range(PARTITIONS):
        wait_until(lambda p=p: log_end(kc.partition_dir(NODE, TOPIC, p)) == log_end(kc.partition_dir(leaders[p], TOPIC, p)),
                   60, 0.5, f"node {NODE} to reach the leader's log end of partition {p} (stock)")
        compare_replicas(kc.partition_dir(leaders[p], TOPIC, p), kc.partition_dir(NODE, TOPIC, p))

    print(f"\n[rebuild] Kafka {VERSION}, {PARTITIONS} partitions, {n} records (~{PRODUCE_MB:.0f} MB) + "
          f"{DOWNTIME_MB} MB while down each time; segments {SEGMENT >> 20} MiB, local retention "
          f"{LOCAL_RETENTION >> 20} MiB")
    print(f"[rebuild] fasttier: restored {report['bytes'] / MB:.2f} MB from S3 in {cli.seconds:.1f}s "
          f"(az3<-s3 {s3_by_cli / MB:.2f} MB), rejoined in {fast.seconds:.1f}s; total {fast_total:.1f}s; "
          f"cross-zone into {zone} {fast.into_zone / MB:.3f} MB (remainder {remainder / MB:.3f} MB, internal "
          f"topics {internal / MB:.3f} MB, idle {idle / 1e3:.1f} kB/s, allowed {allowed / MB:.3f} MB)")
    print(f"[rebuild] stock:    rejoined in {stock.seconds:.1f}s; cross-zone into {zone} "
          f"{stock.into_zone / MB:.3f} MB (its log of {TOPIC}: {fetched_stock / MB:.3f} MB)")

    assert fast.into_zone <= allowed, (fast, remainder, internal, idle)
    # stock replication brings the node's whole local log of the topic across zones
    assert stock.into_zone >= fetched_stock, (stock, fetched_stock)
    assert fast.into_zone * 3 < stock.into_zone, (fast, stock)
