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

import pytest

from harness import S3Server
from harness.data import produce
from harness.rebuild import (
    MB,
    SLACK,
    fasttier_round,
    idle_rate_into,
    into_zone,
    rebuild_cli,
    same_as_leaders,
    stock_round,
    verify_in_zone,
    wait_tiered,
)
from harness.zones import Zones, bed_support

_ok, _why = bed_support()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.plugin,
    pytest.mark.timeout(600),  # about a minute on 2 cores
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
    leaders, leo = wait_tiered(kc, NODE, TOPIC, PARTITIONS)
    assert all(leaders[p] != NODE for p in leaders), leaders

    # while the broker runs, its log directory is locked: refused, nothing touched
    running = rebuild_cli(kc, NODE, ["--topic", TOPIC, "--force"])
    assert running.returncode == 2, (running.stdout, running.stderr)
    assert ".lock" in running.stderr and "running" in running.stderr, running.stderr
    plan = rebuild_cli(kc, NODE, ["--topic", TOPIC, "--local-retention-bytes", str(LOCAL_RETENTION),
                                  "--dry-run", "--force", "--json"])
    assert plan.returncode == 0, plan.stderr
    assert plan.json()["dry_run"] and len(plan.json()["partitions"]) == PARTITIONS

    def downtime(start_index):
        return lambda: produce(kc, TOPIC, record_count(DOWNTIME_MB), partitions=PARTITIONS,
                               value_size=(900, 1100), start_index=start_index)

    # ---- fasttier: stop, lose the disk, rebuild from the tiers in az3, produce meanwhile, restart
    f = fasttier_round(kc, z, NODE, TOPIC, ["--local-retention-bytes", str(LOCAL_RETENTION)], leaders,
                       downtime(n))
    assert f.report["ok"], f.report
    rebuilt = f.partitions()
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
    s3_by_cli = f.during_cli[("s3", zone)]
    assert s3_by_cli >= f.report["bytes"], (s3_by_cli, f.report["bytes"])  # the restored data came from S3...
    assert into_zone(z, zone, f.during_cli) < SLACK, f.during_cli  # ...and nothing crossed into az3 meanwhile

    # the rebuilt replicas are the leaders' logs, byte for byte, and verify against the tiers
    for p, c in same_as_leaders(kc, NODE, TOPIC, leaders).items():
        assert c.ends[0] == c.ends[1] and c.first <= rebuilt[p]["log_end_offset"], c
        v = verify_in_zone(kc, NODE, TOPIC, p)
        assert v["ok"], v
    # what crossed into az3: the data newer than the tiers held at rebuild time, the internal topics (not
    # tiered: replicated, and read by the RLMM's consumer), the idle background, a fixed slack
    allowed = 1.05 * (f.remainder + 2 * f.internal) + 2 * idle * f.rejoin.window + SLACK

    # ---- stock rebuild of the same broker: lose the disk, produce meanwhile, restart
    s = stock_round(kc, z, NODE, TOPIC, PARTITIONS, downtime(n + record_count(DOWNTIME_MB)))
    same_as_leaders(kc, NODE, TOPIC, leaders)

    print(f"\n[rebuild] Kafka {VERSION}, {PARTITIONS} partitions, {n} records (~{PRODUCE_MB:.0f} MB) + "
          f"{DOWNTIME_MB} MB while down each time; segments {SEGMENT >> 20} MiB, local retention "
          f"{LOCAL_RETENTION >> 20} MiB")
    print(f"[rebuild] fasttier: restored {f.report['bytes'] / MB:.2f} MB from S3 in {f.cli.seconds:.1f}s "
          f"({zone}<-s3 {s3_by_cli / MB:.2f} MB), rejoined in {f.rejoin.seconds:.1f}s; total {f.seconds:.1f}s; "
          f"cross-zone into {zone} {f.rejoin.into_zone / MB:.3f} MB (remainder {f.remainder / MB:.3f} MB, "
          f"internal topics {f.internal / MB:.3f} MB, idle {idle / 1e3:.1f} kB/s, allowed {allowed / MB:.3f} MB)")
    print(f"[rebuild] stock:    rejoined in {s.rejoin.seconds:.1f}s; cross-zone into {zone} "
          f"{s.rejoin.into_zone / MB:.3f} MB (its log of {TOPIC}: {s.fetched / MB:.3f} MB)")

    assert f.rejoin.into_zone <= allowed, (f.rejoin, f.remainder, f.internal, idle)
    # stock replication brings the node's whole local log of the topic across zones
    assert s.rejoin.into_zone >= s.fetched, (s.rejoin, s.fetched)
    assert f.rejoin.into_zone * 3 < s.rejoin.into_zone, (f.rejoin, s.rejoin)
