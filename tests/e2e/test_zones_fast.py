"""Replication through the fast tier (issue 4), in the three-zone test bed (harness/zones.py): one broker per
zone, MinIO in its own namespace, RF=3 and acks=all. Each follower's replica fetches go to fasttier's proxy
inside the follower (its JVM resolves the leaders' names to it), which serves record bytes from the
leaders' fast-tier streams and sends the leaders only offsets. The same workload also runs on a stock
cluster (fasttier loaded, replication not through it) in the same module, so the cross-zone figures are
compared within one run.

    FASTTIER_ZONES_MB=64 python3 -m pytest tests/e2e/test_zones_fast.py -s    # more data (default 16)
"""

from __future__ import annotations

import json
import os
import time

import pytest

from harness import wait_until
from harness.data import assert_same, consume_all, produce
from harness.jmx import Jmx
from harness.workload import (
    ContinuousProducer,
    assert_nothing_lost,
    elect_preferred,
    high_watermarks,
    kill_leader_and_restart,
)
from harness.zones import Zones, bed_support, bed_with_s3

_ok, _why = bed_support()
pytestmark = [  # noqa: E501
    pytest.mark.e2e,
    pytest.mark.plugin,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not _ok, reason=f"zones test bed unavailable: {_why}"),
]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
PRODUCE_MB = float(os.environ.get("FASTTIER_ZONES_MB", "16"))
MB = 1_000_000
PARTITIONS = 12
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]] * 4  # partition p is led by node p % 3, in zone p % 3
# A throughput-oriented producer. Through the fast tier, acks=all waits for the fast tier's round trip (tens
# of ms instead of a few), and a broker handles one produce request per connection at a time, so a partition
# moves at most batch.size per acks=all round trip: larger batches keep throughput (docs/replication.md).
PRODUCER = {"batch.size": 131072, "linger.ms": 20}
# the plugin's defaults (group-commit uploads, notifications, immediate offset reports), except that a 2-core
# CI box running 3 brokers, MinIO and the clients stalls now and then for seconds; a partition should not
# leave the fast tier for that (the fallback itself is tested with S3 down)
RSM = {"replication.fast.max.lag.ms": 10000}
FAST_RSM = {**RSM, **json.loads(os.environ.get("FASTTIER_ZONES_FAST_RSM", "{}"))}

_results: dict[str, dict] = {}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    with bed_with_s3(tmp_path_factory.mktemp("s3")) as zs:
        yield zs


def wait_identical(kc, topic: str, timeout: float = 90, partitions: int = PARTITIONS) -> dict[int, int]:
    """Waits until the three replicas of every partition hold the same bytes; returns the leader bytes."""
    digests: dict[int, dict[int, tuple[int, str]]] = {}

    def identical():
        kc.check_alive()
        for p in range(partitions):
            digests[p] = {i: kc.log_digest(i, topic, p) for i in range(3)}
        return all(len(set(d.values())) == 1 for d in digests.values())

    wait_until(identical, timeout, 1.0, lambda: f"replicas of {topic} to be identical: {digests}")
    return {p: digests[p][ASSIGNMENT[p][0]][0] for p in range(partitions)}


def run_workload(z, kc, topic: str, label: str) -> dict:
    kc.create_topic(topic, config={"remote.storage.enable": "true", "min.insync.replicas": 2,
                                   "segment.bytes": 8 << 20}, replica_assignment=ASSIGNMENT)
    kc.wait_for_isr(topic, 3)
    z.reset_counters()
    t0 = time.monotonic()
    time.sleep(5)
    idle_rate = z.cross_zone_bytes() / (time.monotonic() - t0)

    z.reset_counters()
    t0 = time.monotonic()
    n_records = int(PRODUCE_MB * MB / 1000)
    produced = produce(kc, topic, n_records, partitions=PARTITIONS, value_size=(900, 1100),
                       codecs=("none", "lz4"), producer_config=PRODUCER)
    produce_s = time.monotonic() - t0
    assert len(produced.records) == n_records
    leader_bytes = wait_identical(kc, topic)
    total = sum(leader_bytes.values())
    c = z.counters()
    elapsed = time.monotonic() - t0
    cross = z.cross_zone_bytes(c)
    state = kc.partition_state(topic)
    # what crosses zones with nothing produced (the KRaft quorum, idle fetch polls) is in both runs; the
    # replication bytes are what the workload added to it
    net = max(0.0, cross - idle_rate * elapsed)
    r = {
        "label": label, "records": n_records, "log_bytes": total, "cross": cross, "net": net, "s3": z.s3_bytes(c),
        "idle_rate": idle_rate, "elapsed": elapsed, "produce_s": produce_s,
        "isr": {p: s["isr"] for p, s in state.items()},
        "links": Zones.format_counters({k: v for k, v in c.items() if "s3" not in k}),
        "produced": produced,
    }
    print(f"\n[zones-{label}] {n_records} records, {total / MB:.2f} MB appended by the leaders, produced in "
          f"{produce_s:.1f}s; cross-zone {cross / MB:.3f} MB = {cross / total:.4f} x produced, of which replication "
          f"{net / MB:.3f} MB = {net / total:.4f} x produced (idle background {idle_rate / 1e3:.1f} kB/s over "
          f"{elapsed:.0f}s); S3 links {r['s3'] / MB:.2f} MB; ISR {r['isr']}")
    print(f"[zones-{label}]   per link: {r['links']}")
    return r


def test_stock_baseline(bed, make_cluster):
    z, s3 = bed
    kc = make_cluster(3, version=VERSION, plugin=True, s3=s3, zones=z, name="zones-stock2", rsm_config=RSM)
    r = run_workload(z, kc, "base", "stock")
    assert r["cross"] >= 2 * r["log_bytes"], r
    _results["stock"] = r


def test_replication_through_the_fast_tier(bed, make_cluster):
    z, s3 = bed
    kc = make_cluster(3, version=VERSION, plugin=True, s3=s3, zones=z, name="zones-fast", rsm_config=FAST_RSM,
                      fast_replication=True, jmx=True)
    topic = "fast"
    r = run_workload(z, kc, topic, "fast")

    # every replica holds the leader's bytes (checked above), nothing acknowledged is lost, the ISR is whole
    assert all(len(isr) == 3 for isr in r["isr"].values()), r["isr"]
    got = consume_all(kc, topic, r["produced"].end_offsets(), timeout=120)
    assert not got.errors, got.errors[:5]
    assert_same(r["produced"].records, got.records, "after replication through the fast tier")

    # the followers' bytes came from the fast tier, not from the leaders
    fast_bytes = leader_bytes = 0
    for i in range(3):
        m = Jmx(kc, i).plugin()
        shown = ", ".join(f"{k}={int(v)}" for k, v in sorted(m.items()) if k.startswith("replication-"))
        print(f"[zones-fast] node {i}: " + shown)
        fast_bytes += m.get("replication-fast-bytes-total", 0)
        leader_bytes += m.get("replication-leader-bytes-total", 0)
    assert fast_bytes >= 1.5 * r["log_bytes"], (fast_bytes, r["log_bytes"])

    # per-partition metrics (tagged leader, topic-id, partition): every followed partition of the topic is
    # served from the fast tier
    tid = kc.topic_id(topic)
    per_partition: dict[tuple[int, int], float] = {}

    def tagged():
        per_partition.clear()
        for i in range(3):
            for k, v in Jmx(kc, i).read(["kafka.server:type=plugins,*"]).items():
                if k.endswith(":replication-partition-fast-bytes-total") and f"topic-id={tid}" in k:
                    part = int(k.split("partition=", 1)[1].split(",", 1)[0].split(":", 1)[0])
                    per_partition[(i, part)] = v
        return len(per_partition) == 2 * PARTITIONS and all(v > 0 for v in per_partition.values())

    wait_until(tagged, 60, 3.0, lambda: f"per-partition replication metrics of {topic}: {per_partition}")

    stock = _results.get("stock")
    base = stock["net"] if stock else 2 * r["log_bytes"]
    print(f"[zones-fast] replication cross-zone {r['net'] / MB:.3f} MB vs stock {base / MB:.3f} MB = "
          f"{r['net'] / base:.2%} (gross {r['cross'] / MB:.3f} "
          f"vs {stock['cross'] / MB if stock else float('nan'):.3f} MB); "
          f"served from the fast tier {fast_bytes / MB:.2f} MB, from leaders {leader_bytes / MB:.3f} MB")
    assert r["net"] <= 0.05 * base, f"replication cross-zone bytes {r['net']:.0f} > 5% of stock's {base:.0f}"


def fast_metric(kc, name: str) -> dict[int, float]:
    return {i: Jmx(kc, i).plugin().get(name, 0.0) for i in range(kc.n)}


def isr_sizes(kc, topic: str) -> dict[int, int]:
    return {p: len(s["isr"]) for p, s in kc.partition_state(topic).items()}


LOADED_PARTITIONS = 6


def loaded_fast_cluster(bed, make_cluster, topic: str):
    """A fast-replication cluster with `topic` (6 partitions, two led in each zone) under continuous acks=all
    produce (~0.8 MB/s), once the fast path carries its replication. Returns (cluster, s3, producer)."""
    z, s3 = bed
    kc = make_cluster(3, version=VERSION, plugin=True, s3=s3, zones=z, name=f"zones-{topic}", rsm_config=FAST_RSM,
                      fast_replication=True, jmx=True)
    kc.create_topic(topic, config={"remote.storage.enable": "true", "min.insync.replicas": 2},
                    replica_assignment=ASSIGNMENT[:LOADED_PARTITIONS])
    kc.wait_for_isr(topic, 3)
    prod = ContinuousProducer(kc, topic, LOADED_PARTITIONS, rate=800, value_size=1000, linger_ms=20).start()
    wait_until(lambda: sum(fast_metric(kc, "replication-fast-bytes-total").values()) > 1_000_000, 60, 2.0,
               "the fast path to carry replication")
    return kc, s3, prod


def fast_path_then_stop(kc, prod, topic: str, what: str):
    """Waits until another MB of replication came from the fast tier, stops the producer, and checks that the
    replicas are identical and every acknowledged record reads back. Returns what was acknowledged."""
    fast_after = sum(fast_metric(kc, "replication-fast-bytes-total").values())
    wait_until(lambda: sum(fast_metric(kc, "replication-fast-bytes-total").values()) > fast_after + 1_000_000, 90, 2.0,
               what)
    acked = prod.stop()
    wait_identical(kc, topic, partitions=LOADED_PARTITIONS)
    assert_nothing_lost(kc, topic, LOADED_PARTITIONS, acked)
    return acked


def test_s3_outage_falls_back_to_the_leader_and_back(bed, make_cluster):
    """S3 down mid-run: followers fetch from the leaders within seconds, acks=all produce goes on, the ISR
    stays whole; S3 back: the fast path resumes. Nothing acknowledged is lost, replicas end identical."""
    kc, s3, prod = loaded_fast_cluster(bed, make_cluster, "outage")
    topic = "outage"
    try:
        before = prod.acked.count()
        s3.kill()
        t_down = time.monotonic()
        shrunk = []
        while time.monotonic() - t_down < 20:
            sizes = isr_sizes(kc, topic)
            shrunk += [p for p, n in sizes.items() if n < 3]
            time.sleep(2)
        during = prod.acked.count()
        fallbacks = fast_metric(kc, "replication-fallbacks-store-total")
        leader_bytes_down = sum(fast_metric(kc, "replication-leader-bytes-total").values())
        print(f"\n[zones-outage] acked {before} -> {during} during 20 s without S3; fallbacks(store) {fallbacks}; "
              f"bytes from leaders {leader_bytes_down / MB:.2f} MB; ISR shrank for partitions {sorted(set(shrunk))}")
        assert during - before > 800 * 20 * 0.5, f"acks=all produce stalled while S3 was down: {before} -> {during}"
        assert not shrunk, f"the ISR shrank during the S3 outage: {sorted(set(shrunk))}"
        assert sum(fallbacks.values()) >= 1, fallbacks
        assert leader_bytes_down > 500_000, "followers did not fetch from the leaders during the outage"
    finally:
        s3.start()
    fast_path_then_stop(kc, prod, topic, "the fast path to resume after S3 came back")
    assert all(n == 3 for n in isr_sizes(kc, topic).values()), kc.partition_state(topic)


def test_leader_kill_and_preferred_election(bed, make_cluster):
    """kill -9 of a leader and a preferred-leader election mid-run: no acknowledged record lost, replicas end
    identical (no divergence), and the fast path carries replication again under the new leaders."""
    kc, _, prod = loaded_fast_cluster(bed, make_cluster, "moves")
    topic, parts = "moves", LOADED_PARTITIONS
    victim = kill_leader_and_restart(kc, topic, 0)
    elect_preferred(kc, topic, parts)
    wait_until(lambda: all(kc.leader_of(topic, p) == ASSIGNMENT[p][0] for p in range(parts)), 60, 1.0,
               "the preferred leaders to lead again")
    acked = fast_path_then_stop(kc, prod, topic, "the fast path to carry replication under the new leaders")
    print(f"\n[zones-moves] broker {victim} killed and back, preferred leaders elected; {len(acked.records)} acked "
          f"records read back; replicas identical")


PERF_RECORDS = int(os.environ.get("FASTTIER_ZONES_PERF_RECORDS", "30000"))


def test_default_java_producer_at_full_speed(bed, make_cluster):
    """Kafka's own producer perf tool with every producer setting at Kafka's default (acks=all, idempotence,
    batch.size 16 KiB, linger.ms 5) at full speed through the fast tier: every record is acknowledged, nothing
    is lost or duplicated, replicas end identical, and the followers' bytes came from the fast tier. The
    throughput is printed (the benchmark compares it with stock: make bench-zones), not asserted."""
    z, s3 = bed
    kc = make_cluster(3, version=VERSION, plugin=True, s3=s3, zones=z, name="zones-perf", rsm_config=FAST_RSM,
                      fast_replication=True, jmx=True)
    topic, parts = "perf", LOADED_PARTITIONS
    kc.create_topic(topic, config={"remote.storage.enable": "true", "min.insync.replicas": 2},
                    replica_assignment=ASSIGNMENT[:parts])
    kc.wait_for_isr(topic, 3)
    fast_before = sum(fast_metric(kc, "replication-fast-bytes-total").values())
    t0 = time.monotonic()
    r = kc.run_tool("org.apache.kafka.tools.ProducerPerformance",
                    ["--topic", topic, "--num-records", str(PERF_RECORDS), "--record-size", "1000",
                     "--throughput", "-1", "--producer-props", f"bootstrap.servers={kc.bootstrap_servers()}"],
                    timeout=300)
    took = time.monotonic() - t0
    summary = [line for line in r.stdout.splitlines() if "records sent" in line]
    print(f"\n[zones-perf] {took:.1f} s: {summary[-1] if summary else r.stdout[-500:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary and summary[-1].startswith(f"{PERF_RECORDS} records sent"), r.stdout[-2000:]
    assert "Exception" not in r.stderr, r.stderr[-2000:]
    wait_identical(kc, topic, partitions=parts)
    # idempotent acks=all: exactly the records sent, each once
    hw = high_watermarks(kc, topic, parts)
    assert sum(hw.values()) == PERF_RECORDS, hw
    assert all(n == 3 for n in isr_sizes(kc, topic).values()), kc.partition_state(topic)
    legs = [Jmx(kc, i).plugin() for i in range(kc.n)]
    means = {}
    for leg in ("upload-wait", "upload-put", "learn", "get", "serve", "append", "report"):
        ms = sum(m.get(f"roundtrip-{leg}-ms-total", 0) for m in legs)
        n = sum(m.get(f"roundtrip-{leg}-count", 0) for m in legs)
        means[leg] = round(ms / n, 1) if n else None
    print(f"[zones-perf] round-trip legs, mean ms: {means}")
    fast_bytes = sum(fast_metric(kc, "replication-fast-bytes-total").values()) - fast_before
    assert fast_bytes >= 1.5 * PERF_RECORDS * 1000 * 0.9, f"followers got {fast_bytes} bytes from the fast tier"
