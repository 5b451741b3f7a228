"""The baseline of issue 4, measured in the three-zone test bed (harness/zones.py): how many bytes cross
zones per produced byte when stock Kafka replicates (RF=3, acks=all), with fasttier loaded and its fast tier
uploading. One broker per zone (az1..az3), MinIO in its own namespace; the test process's clients reach each
broker through a forwarder into that broker's zone, so the zone links carry only broker-to-broker traffic
(replication, the KRaft quorum, the RLMM's metadata topic) and the s3 links only the plugin's S3 requests.

Expected: every batch a leader appends goes to the two other zones, so cross-zone bytes are a little over
2x the batch bytes; every batch also goes once from its leader's zone to S3 (the fast tier).

    FASTTIER_ZONES_MB=64 python3 -m pytest tests/e2e/test_zones_stock.py -s    # more data (default 16)
"""

from __future__ import annotations

import os
import time

import pytest

from harness import wait_until
from harness.data import produce
from harness.zones import Zones, bed_support, bed_with_s3

_ok, _why = bed_support()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.plugin,
    pytest.mark.timeout(300),  # quick: about a minute on 2 cores
    pytest.mark.skipif(not _ok, reason=f"zones test bed unavailable: {_why}"),
]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
PRODUCE_MB = float(os.environ.get("FASTTIER_ZONES_MB", "16"))
MB = 1_000_000
TOPIC = "stock"
PARTITIONS = 3
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]  # partition p is led by node p, in zone p


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    with bed_with_s3(tmp_path_factory.mktemp("s3")) as zs:
        yield zs


def test_stock_replication_crosses_zones_twice_per_produced_byte(bed, make_cluster):
    z, s3 = bed
    kc = make_cluster(
        3, version=VERSION, plugin=True, s3=s3, zones=z, name="zones-stock",
        rsm_config={"wal.upload.interval.ms": 200},
    )
    assert [kc.zone_of(i) for i in range(3)] == ["az1", "az2", "az3"]
    # fast tier on (remote.storage.enable); no local deletion, so the replicas can be compared on disk
    kc.create_topic(TOPIC, config={"remote.storage.enable": "true", "min.insync.replicas": 2,
                                   "segment.bytes": 8 << 20}, replica_assignment=ASSIGNMENT)
    kc.wait_for_isr(TOPIC, 3)
    assert {p: s["leader"] for p, s in kc.partition_state(TOPIC).items()} == {0: 0, 1: 1, 2: 2}

    # what crosses zones with nothing produced (quorum heartbeats, metadata, fetch polls)
    z.reset_counters()
    t0 = time.monotonic()
    time.sleep(5)
    idle = z.counters()
    idle_rate = z.cross_zone_bytes(idle) / (time.monotonic() - t0)
    s3_before = s3.total_bytes(kc.prefix)

    z.reset_counters()
    t0 = time.monotonic()
    n_records = int(PRODUCE_MB * MB / 900)  # records of about 900 bytes (key, value, headers)
    produced = produce(kc, TOPIC, n_records, partitions=PARTITIONS, value_size=(900, 1100))
    produce_s = time.monotonic() - t0
    assert len(produced.records) == n_records

    # every replica holds every batch, byte for byte
    state = kc.wait_for_isr(TOPIC, 3)
    digests = {}

    def replicas_identical():
        kc.check_alive()
        digests.clear()
        for p in range(PARTITIONS):
            digests[p] = {i: kc.log_digest(i, TOPIC, p) for i in range(3)}
        return all(len(set(d.values())) == 1 for d in digests.values())

    wait_until(replicas_identical, 60, 1.0, lambda: f"replicas of {TOPIC} to be identical: {digests}")
    log_bytes = {p: digests[p][p][0] for p in range(PARTITIONS)}  # the leader's batches
    total = sum(log_bytes.values())
    assert total >= PRODUCE_MB * MB * 0.8, log_bytes

    # the fast tier has uploaded everything (each leader its own partition)
    wait_until(lambda: s3.total_bytes(kc.prefix) - s3_before >= total, 60, 1.0,
               lambda: f"the fast tier to hold {total} bytes (has {s3.total_bytes(kc.prefix) - s3_before})")
    time.sleep(1)
    stored = s3.total_bytes(kc.prefix) - s3_before
    c, d = z.counters(), z.counters(directed=True)
    elapsed = time.monotonic() - t0
    cross, to_s3 = z.cross_zone_bytes(c), z.s3_bytes(c)
    background = idle_rate * elapsed

    print(f"\n[zones-stock] Kafka {VERSION}, RF=3 acks=all, {n_records} records, {PARTITIONS} partitions "
          f"(one leader per zone), produced in {produce_s:.1f}s, measured over {elapsed:.1f}s")
    print(f"[zones-stock] batches appended by the leaders: {total / MB:.2f} MB "
          f"({', '.join(f'p{p} {b / MB:.2f}' for p, b in log_bytes.items())}); ISR {state}")
    print(f"[zones-stock] cross-zone: {cross / MB:.2f} MB = {cross / total:.3f} x produced "
          f"(idle background {idle_rate / 1e3:.1f} kB/s, about {background / MB:.3f} MB of it)")
    print(f"[zones-stock]   per link: {Zones.format_counters({k: v for k, v in c.items() if 's3' not in k})}")
    print(f"[zones-stock] to/from S3: {to_s3 / MB:.2f} MB = {to_s3 / total:.3f} x produced; "
          f"objects stored {stored / MB:.2f} MB; up "
          + ", ".join(f"{a} {d[(a, 's3')] / MB:.2f} MB" for a in z.zones)
          + "; down " + ", ".join(f"{a} {d[('s3', a)] / MB:.2f} MB" for a in z.zones))

    # stock replication: each leader's batches reach the two other zones
    assert cross >= 2 * total, f"cross-zone {cross} < 2 x {total}"
    # ... and nothing else of that size crosses zones (S3 and client traffic are on other paths)
    assert cross < 2.5 * total + 2 * background, f"cross-zone {cross} > 2.5 x {total}"
    # S3 traffic is on the s3 links: every stored byte went up one, and each leader uploaded its partition
    assert sum(d[(a, "s3")] for a in z.zones) >= stored
    for p, leader_zone in enumerate(z.zones):
        assert d[(leader_zone, "s3")] >= log_bytes[p], (leader_zone, d)
