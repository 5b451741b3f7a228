"""Slow tier (KIP-405 tiered storage) end to end: stock Kafka brokers (3 nodes, KRaft, RF=3) with the
fasttier RemoteStorageManager, a real S3 server (MinIO), byte-exact checks of everything read back.

One cluster and one S3 server serve the whole module (scenarios run in file order; the disruptive
ones — S3 outage, corruption, wiped broker — come last). Every topic is its own scenario's.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from harness import wait_until
from harness.data import (
    CODECS,
    Produced,
    assert_same,
    consume_all,
    expected_offset_for_time,
    produce,
    produce_transactional,
)
from harness.tiering import (
    SEGMENT_BYTES,
    assert_segments_complete,
    local_log_starts,
    tiered_config,
    topic_objects,
    wait_all_tiered,
    wait_for_no_objects,
    wait_for_segments,
    wait_local_log_start_beyond,
)

pytestmark = [pytest.mark.e2e, pytest.mark.plugin]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")

CLUSTER = dict(
    n_brokers=3,
    version=VERSION,
    plugin=True,
    # 4 verified chunks per 1 MiB segment, so reads cross chunk boundaries
    rsm_config={"chunk.bytes": 256 * 1024},
)


def brokers_alive(kc) -> None:
    for i in range(kc.n):
        assert kc.is_running(i), f"broker {i} died (exit {kc.exit_code(i)}):\n{kc.diagnostics([i])}"
    assert kc.alive_broker_ids() == list(range(kc.n))


# --------------------------------------------------------------------------------------------------
# 1. bulk: 100k records, all codecs, keys + headers; tiered; local deleted; read back identical


@dataclass
class Bulk:
    topic: str
    topic_id: str
    partitions: int
    produced: Produced
    local_start: dict[int, int]


@pytest.fixture(scope="module")
def bulk(kc, s3_server) -> Bulk:
    """100k records over 3 partitions. Local retention by size (1.5 MiB), so each partition ends up
    with its oldest segments only in S3 and its newest ones still local: a consumer from offset 0
    crosses from the remote tier into the local log."""
    topic, partitions = "bulk", 3
    kc.create_topic(topic, partitions, config=tiered_config(**{
        "local.retention.ms": -2,  # = retention.ms (7 days): local deletion by size only
        "local.retention.bytes": 1536 * 1024,
    }))
    t0 = time.monotonic()
    produced = produce(kc, topic, 100_000, partitions=partitions, codecs=CODECS)
    print(f"produced 100k records in {time.monotonic() - t0:.1f}s; end offsets {produced.end_offsets()}")
    t0 = time.monotonic()
    starts = wait_local_log_start_beyond(kc, topic, {p: 0 for p in range(partitions)}, timeout=240)
    local_start = {p: min(parts[p] for parts in starts.values()) for p in range(partitions)}
    print(f"tiered in {time.monotonic() - t0:.1f}s; local log starts {starts}")
    return Bulk(topic, kc.topic_id(topic), partitions, produced, local_start)


def test_bulk_segments_land_in_s3_and_leave_local_disk(kc, s3_server, bulk):
    counts = assert_segments_complete(kc, s3_server, bulk.topic, bulk.topic_id, bulk.partitions)
    ends = bulk.produced.end_offsets()
    for p in range(bulk.partitions):
        # the oldest part of the partition is only remote, the newest still local
        assert 0 < bulk.local_start[p] < ends[p], (p, bulk.local_start[p], ends[p])
        assert counts[p] >= 1, counts
    # every replica, not only the leader, deleted its tiered segments
    starts = local_log_starts(kc, bulk.topic, bulk.partitions)
    assert len(starts) == kc.n
    for b, parts in starts.items():
        for p, s in parts.items():
            assert s is not None and s >= bulk.local_start[p], (b, p, s)


def test_bulk_read_back_from_offset_zero_is_identical(kc, bulk):
    t0 = time.monotonic()
    got = consume_all(kc, bulk.topic, bulk.produced.end_offsets(), timeout=300)
    print(f"read {len(got.records)} records back in {time.monotonic() - t0:.1f}s")
    assert not got.errors, got.errors[:5]
    assert got.duplicates == 0
    assert_same(bulk.produced.records, got.records, "bulk topic read from offset 0")
    # copying and reading went without a single plugin warning
    for i in range(kc.n):
        assert not kc.plugin_problems(i), f"broker {i}: {kc.plugin_problems(i)[:5]}"
    # the first offsets really came from the remote tier, the last ones from local segments
    for p in range(bulk.partitions):
        assert got.first_offsets[p] == 0 < bulk.local_start[p] < bulk.produced.end_offsets()[p]


def test_offsets_for_times_into_tiered_data(kc, bulk):
    c = Consumer(kc.client_config(**{"group.id": "e2e-oft", "enable.auto.commit": False}))
    try:
        queries = []  # (partition, timestamp, expected offset)
        for p in range(bulk.partitions):
            pairs = bulk.produced.timestamps(p)
            tiered = [(o, t) for o, t in pairs if o < bulk.local_start[p]]
            assert len(tiered) > 100
            for o, t in (tiered[0], tiered[1], tiered[len(tiered) // 3], tiered[len(tiered) // 2], tiered[-1]):
                queries.append((p, t, o))
                queries.append((p, t - 1, expected_offset_for_time(bulk.produced, p, t - 1)))
            first_ts = pairs[0][1]
            queries.append((p, first_ts - 60_000, 0))  # before everything: the first offset
            # one lookup in the local part, for contrast
            local = [(o, t) for o, t in pairs if o >= bulk.local_start[p]]
            if local:
                queries.append((p, local[0][1], local[0][0]))
        # librdkafka answers one lookup per partition per request: ask them one by one
        wrong = []
        for p, ts, want in queries:
            (tp,) = c.offsets_for_times([TopicPartition(bulk.topic, p, ts)], timeout=60)
            assert tp.error is None, tp.error
            if tp.offset != want:
                wrong.append((p, ts, want, tp.offset))
        assert not wrong, f"offsets_for_times (partition, ts, expected, got): {wrong}"
    finally:
        c.close()


# --------------------------------------------------------------------------------------------------
# 2. transactions with aborts, read back from the slow tier with read_committed


def test_transactions_read_committed_from_slow_tier(kc):
    topic, partitions = "txn", 2
    kc.create_topic(topic, partitions, config=tiered_config())
    plan = [(1500, True), (1200, False), (2000, True), (800, False), (1500, True), (1000, False), (700, True)]
    produced = produce_transactional(kc, topic, plan, partitions=partitions, codec="none")
    interesting_end = {p: max(o for (pp, o) in produced.records if pp == p) + 1 for p in range(partitions)}
    # committed filler so the segments holding the transactions (and their markers) roll and get tiered
    filler = produce_transactional(
        kc, topic, [(10_000, True)], partitions=partitions, start_index=100_000, codec="none"
    )
    produced.merge(filler)
    wait_local_log_start_beyond(kc, topic, interesting_end, timeout=240)

    ends = produced.end_offsets()
    committed = consume_all(kc, topic, ends, isolation_level="read_committed")
    assert not committed.errors, committed.errors[:5]
    n_committed = sum(n for n, c in plan if c) + 10_000
    assert len(produced.only_committed()) == n_committed
    assert_same(produced.only_committed(), committed.records, "read_committed")

    uncommitted = consume_all(kc, topic, ends, isolation_level="read_uncommitted")
    assert not uncommitted.errors, uncommitted.errors[:5]
    assert_same(produced.records, uncommitted.records, "read_uncommitted")


# --------------------------------------------------------------------------------------------------
# 3. retention and topic deletion remove remote objects


def test_retention_deletes_remote_segments(kc, s3_server):
    topic = "retention"
    kc.create_topic(topic, 1, config=tiered_config())
    produced = produce(kc, topic, 25_000, partitions=1, codecs=("none",))
    local_start = wait_all_tiered(kc, topic, 1)
    tid = kc.topic_id(topic)
    before = assert_segments_complete(kc, s3_server, topic, tid, 1)[0]
    assert before >= 4, before

    # size-based: keep about 2 MiB in all (local + remote). Kafka deletes the oldest remote segments
    # only while the whole segment fits in the excess, so between 2 and 3 MiB remain.
    retention_bytes = 2 * SEGMENT_BYTES
    kc.alter_topic_config(topic, {"retention.bytes": retention_bytes})

    def remote_log_bytes() -> int:
        return sum(o["Size"] for o in s3_server.list_objects(kc.prefix)
                   if tid in o["Key"] and o["Key"].endswith(".log"))

    def shrunk():
        kc.check_alive()
        n = len(topic_objects(s3_server, tid, kc.prefix).logs)
        return n if n < before and remote_log_bytes() <= retention_bytes + SEGMENT_BYTES else None

    after = wait_until(
        shrunk, 180, 1.0,
        lambda: f"remote segments of {topic} to shrink to <= {retention_bytes + SEGMENT_BYTES} bytes "
        f"(now {len(topic_objects(s3_server, tid, kc.prefix).logs)} segments, {remote_log_bytes()} bytes)",
    )
    assert remote_log_bytes() >= retention_bytes - SEGMENT_BYTES, "retention.bytes deleted more than it should"
    objs = topic_objects(s3_server, tid, kc.prefix)
    assert len(objs.logs) == len(objs.manifests) == len(objs.indexes), objs.keys
    # the log start offset moved; what is left reads back identical
    c = Consumer(kc.client_config(**{"group.id": "e2e-ret"}))
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    c.close()
    assert 0 < low < local_start[0], (low, local_start)
    got = consume_all(kc, topic, produced.end_offsets(), start_offsets={0: low})
    assert not got.errors, got.errors[:5]
    assert_same({k: v for k, v in produced.records.items() if k[1] >= low}, got.records, "after retention.bytes")
    print(f"retention.bytes: remote segments {before} -> {after}; log start offset 0 -> {low}")

    # time-based: every record is 30 minutes old, so retention.ms=1000 removes every tiered segment
    kc.alter_topic_config(topic, {"retention.ms": 1000, "retention.bytes": None})
    wait_for_no_objects(s3_server, tid, kc.prefix, timeout=180, kc=kc)


def test_topic_deletion_deletes_remote_objects(kc, s3_server):
    topic = "deleted"
    kc.create_topic(topic, 2, config=tiered_config())
    produce(kc, topic, 20_000, partitions=2, codecs=("none",))
    wait_all_tiered(kc, topic, 2)
    tid = kc.topic_id(topic)
    assert len(topic_objects(s3_server, tid, kc.prefix).logs) >= 2
    kc.delete_topic(topic)
    wait_for_no_objects(s3_server, tid, kc.prefix, timeout=180, kc=kc)
    brokers_alive(kc)


def test_large_segment_multipart_upload_reads_back_identical(kc, s3_server):
    """A 24 MiB segment is above the plugin's default multipart threshold (16 MiB): it is uploaded in
    parts, and reads back byte for byte (reads cross part and chunk boundaries)."""
    topic = "large"
    # Local retention by size only: time-based local retention would roll the active segment early
    # (the retention check rolls an active segment whose records are past local.retention.ms).
    kc.create_topic(topic, 1, config=tiered_config(**{
        "segment.bytes": 24 * SEGMENT_BYTES, "local.retention.ms": -2, "local.retention.bytes": SEGMENT_BYTES,
    }))
    produced = produce(kc, topic, 8_000, partitions=1, codecs=("none",), value_size=(2000, 6000), seed=5,
                       ts0=int(time.time() * 1000) - 600_000)
    wait_local_log_start_beyond(kc, topic, {0: 0}, timeout=240)  # the 24 MiB segment is remote only
    tid = kc.topic_id(topic)
    assert_segments_complete(kc, s3_server, topic, tid, 1)
    logs = [o for o in s3_server.list_objects(kc.prefix) if tid in o["Key"] and o["Key"].endswith(".log")]
    big = [o for o in logs if o["Size"] > 16 * SEGMENT_BYTES]
    assert big, f"no .log object above 16 MiB: {[(o['Key'], o['Size']) for o in logs]}"
    # S3 (and MinIO) give a multipart object an ETag "<md5 of part md5s>-<number of parts>"
    assert all(re.search(r"-\d+\"?$", o["ETag"]) for o in big), [(o["Key"], o["ETag"]) for o in big]
    got = consume_all(kc, topic, produced.end_offsets(), timeout=240)
    assert not got.errors, got.errors[:5]
    assert_same(produced.records, got.records, "24 MiB segment read from S3")


# --------------------------------------------------------------------------------------------------
# 4. S3 outage while copying


def test_s3_outage_copies_resume_nothing_lost(kc, s3_server):
    topic, partitions = "outage", 2
    kc.create_topic(topic, partitions, config=tiered_config())
    produced = produce(kc, topic, 10_000, partitions=partitions, codecs=("zstd",))
    wait_for_segments(s3_server, kc.topic_id(topic), 1, kc.prefix, timeout=120, kc=kc)
    tid = kc.topic_id(topic)
    objects_before = len(topic_objects(s3_server, tid, kc.prefix).logs)

    s3_server.kill()  # abrupt: in-flight requests see connection resets, then connection refused
    try:
        outage_start = produced.end_offsets()
        index = 10_000
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:  # keep producing for ~25 s; segments roll, copies fail
            more = produce(kc, topic, 4_000, partitions=partitions, codecs=("none",), start_index=index)
            produced.merge(more)
            index += 4_000
        brokers_alive(kc)
        # still serving: the records written during the outage read back (they are local)
        got = consume_all(kc, topic, produced.end_offsets(), start_offsets=outage_start, timeout=120)
        assert not got.errors, got.errors[:5]
        assert_same(
            {k: v for k, v in produced.records.items() if k[1] >= outage_start[k[0]]},
            got.records,
            "records produced during the S3 outage",
        )
        # nothing was deleted locally that is not in S3: local log start did not pass the pre-outage end
        for b, parts in local_log_starts(kc, topic, partitions).items():
            for p, s in parts.items():
                assert s is not None and s <= outage_start[p], (b, p, s, outage_start)
        failures = sum(len(v) for v in kc.grep_logs(r"ERROR|WARN").values())
        print(f"S3 down: produced {index - 10_000} more records; {failures} WARN/ERROR log lines")
    finally:
        s3_server.start()

    wait_all_tiered(kc, topic, partitions, timeout=300)
    assert len(topic_objects(s3_server, tid, kc.prefix).logs) > objects_before
    assert_segments_complete(kc, s3_server, topic, tid, partitions)
    got = consume_all(kc, topic, produced.end_offsets(), timeout=240)
    assert not got.errors, got.errors[:5]
    assert_same(produced.records, got.records, "after the S3 outage")
    brokers_alive(kc)


def test_leader_killed_during_copy_no_loss_no_orphans(kc, s3_server):
    """SIGKILL the leader while it copies a 24 MiB segment (multipart upload in flight): acks=all records
    are not lost, the new leader copies the segment again, and the crashed attempt's objects do not stay
    behind as a half-written segment (Kafka deletes the dangling COPY_SEGMENT_STARTED attempt through
    deleteLogSegmentData). Everything reads back identical."""
    topic, victim = "killcopy", 2
    kc.create_topic(topic, replica_assignment=[[victim, 0, 1]], config=tiered_config(**{
        "segment.bytes": 24 * SEGMENT_BYTES, "local.retention.ms": -2, "local.retention.bytes": SEGMENT_BYTES,
    }))
    tid = kc.topic_id(topic)
    needle = f"partition={tid}:{topic}-0] Copying 00000000000000000000.log"
    log_path = kc.nodes[victim].log_path
    start = log_path.stat().st_size
    fired: dict = {}

    def watch():  # kill the leader the moment it starts copying the first segment
        deadline = time.monotonic() + 180
        with open(log_path, "rb") as f:
            f.seek(start)
            buf = b""
            while time.monotonic() < deadline and not fired:
                chunk = f.read()
                if chunk:
                    buf = buf[-4096:] + chunk
                    if needle.encode() in buf:
                        kc.nodes[victim].proc._signal_group(9)
                        fired["at"] = time.monotonic()
                        return
                else:
                    time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    produced = produce(kc, topic, 8_000, partitions=1, codecs=("none",), value_size=(2000, 6000), seed=9,
                       ts0=int(time.time() * 1000) - 600_000)
    watcher.join(200)
    assert fired, "the leader never started copying the first segment"
    kc.nodes[victim].proc.wait(30)
    kc.kill_broker(victim)  # reap it
    tail = log_path.read_text("utf-8", "replace")[start:]
    mid_copy = f"partition={tid}:{topic}-0] Copied 00000000000000000000.log" not in tail
    print(f"leader {victim} killed {'during' if mid_copy else 'right after'} the copy of segment 0")

    kc.start_broker(victim)
    kc.wait_for_isr(topic, 3, timeout=180)
    wait_local_log_start_beyond(kc, topic, {0: 0}, timeout=240)

    def no_orphans():
        kc.check_alive()
        po = topic_objects(s3_server, tid, kc.prefix)
        return po if len(po.logs) == len(po.indexes) == len(po.manifests) == po.complete_segments() else None

    objs = wait_until(no_orphans, 180, 2.0, lambda: f"no half-written segment of {topic} in S3: "
                      f"{topic_objects(s3_server, tid, kc.prefix).keys}")
    assert objs.logs
    got = consume_all(kc, topic, produced.end_offsets(), timeout=240)
    assert not got.errors, got.errors[:5]
    assert_same(produced.records, got.records, "after the leader was killed mid-copy")
    brokers_alive(kc)


# --------------------------------------------------------------------------------------------------
# 5. corrupted object: an error naming the key, never wrong data


def _java_consumer_fails_fast(kc, topic: str) -> None:
    """Kafka's own Java console consumer (the broker's kafka-tools jar) on the corrupt topic: it must stop
    with the corrupt-message error well before its 60 s time-out. With UNKNOWN_SERVER_ERROR (before) it only
    logged a WARN per fetch and waited the whole time-out, then exited normally with 0 messages."""
    import subprocess

    from harness.kafka import java_bin, kafka_libs

    argv = [
        java_bin(), "-Xmx256m", "-cp", f"{kafka_libs(kc.version)}/*",
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", kc.bootstrap_servers(),
        "--topic", topic, "--from-beginning", "--timeout-ms", "60000",
    ]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    line = next((ln for ln in out.splitlines() if "Encountered corrupt message" in ln), None)
    assert line, f"Java consumer (exit {r.returncode}, {took:.1f}s) did not report corruption:\n{out[-3000:]}"
    assert took < 40, f"Java consumer took {took:.1f}s to fail"
    print(f"Java consumer: exit {r.returncode} after {took:.1f}s: {line.strip()[:200]}")


@pytest.mark.parametrize("suffix", [".log", ".manifest", ".indexes"])
def test_corrupted_object_is_an_error_not_data(kc, s3_server, bulk, suffix):
    """Flip 64 bytes in the middle of every <suffix> object of a tiered topic: reading it must fail with
    an error (never return different bytes), the broker stays up and its log names the object key."""
    topic = "corrupt" + suffix.replace(".", "-")
    kc.create_topic(topic, 1, config=tiered_config())
    produced = produce(kc, topic, 8_000, partitions=1, codecs=("none",))
    wait_all_tiered(kc, topic, 1)
    tid = kc.topic_id(topic)
    keys = topic_objects(s3_server, tid, kc.prefix).with_suffix(suffix)
    assert len(keys) >= 2, keys
    flipped = {key: s3_server.corrupt(key, length=64) for key in keys}

    log_len = {i: kc.log_mark(i) for i in range(kc.n)}
    t0 = time.monotonic()
    got = consume_all(
        kc, topic, produced.end_offsets(), timeout=40, stop_after_errors=3,
        consumer_config={"fetch.error.backoff.ms": 200},
    )
    waited = time.monotonic() - t0
    # whatever came back is exactly what was written ...
    for k, d in got.records.items():
        assert produced.records.get(k) == d, f"corrupt data served at offset {k}: {d} != {produced.records.get(k)}"
    # ... and the corrupted segments did not come back
    assert len(got.records) < len(produced.records), (
        f"every record was returned although every {suffix} object is corrupt")
    assert got.errors, "the consumer saw no error for a corrupted remote segment"
    # The error is CORRUPT_MESSAGE (Kafka error code 2; librdkafka calls it INVALID_MSG), not
    # UNKNOWN_SERVER_ERROR: the shim throws Kafka's CorruptRecordException, which the broker's remote read
    # path (RemoteLogReader -> DelayedRemoteFetch -> Errors.forException) turns into that code. The Java
    # consumer raises it from poll() ("Encountered corrupt message when fetching offset ..."), while it only
    # logs UNKNOWN_SERVER_ERROR at WARN and retries forever (FetchCollector): a silent wait.
    corrupt_name = KafkaError(KafkaError.INVALID_MSG).name()
    assert all(e.startswith(corrupt_name + ":") for e in got.errors), (corrupt_name, got.errors[:3])
    # ... within a bounded time: three errors well before the consumer's own time-out
    assert waited < 30, f"3 errors took {waited:.1f}s"
    print(f"{suffix}: consumer got {len(got.records)} intact records and 3 errors in {waited:.1f}s: "
          f"{sorted(set(got.errors))[:2]}")
    brokers_alive(kc)
    leader = kc.leader_of(topic, 0)
    new_lines = kc.log_since(leader, log_len[leader])
    named = [ln for ln in new_lines.splitlines() if any(k in ln for k in flipped)]
    assert named, (
        f"broker {leader}'s log does not name any corrupted object key {list(flipped)[:2]}; "
        f"its new ERROR/WARN lines: {[ln for ln in new_lines.splitlines() if ' ERROR ' in ln or ' WARN ' in ln][:10]}"
    )
    print(f"{suffix}: broker {leader} logged: {named[0][:300]}")
    if suffix == ".log":
        _java_consumer_fails_fast(kc, topic)
    # the remote tier still serves intact data of other topics
    first = {k: v for k, v in bulk.produced.records.items() if k[0] == 0 and k[1] < 2000}
    again = consume_all(kc, bulk.topic, {0: 2000}, timeout=60)
    assert not again.errors, again.errors[:5]
    assert_same(first, again.records, "intact topic after reading corrupt objects")


# --------------------------------------------------------------------------------------------------
# 6. a broker with a wiped data disk rejoins through the tiered-storage path, then leads


def test_wiped_broker_rejoins_via_tier_and_serves_as_leader(kc, s3_server):
    topic, partitions = "wipe", 2
    # broker 0 leads, 1 and 2 follow; broker 1 will lose its disk
    kc.create_topic(topic, replica_assignment=[[0, 1, 2]] * partitions, config=tiered_config())
    produced = produce(kc, topic, 30_000, partitions=partitions, codecs=("lz4", "none"))
    local_start = wait_all_tiered(kc, topic, partitions)

    kc.stop_broker(1)
    kc.wipe_broker(1)
    assert not kc.partition_dir(1, topic, 0).exists()
    log_len = kc.log_mark(1)
    kc.start_broker(1)
    ends = produced.end_offsets()
    wait_until(
        lambda: kc.check_alive() or all(1 in s["isr"] for s in kc.partition_state(topic).values()),
        180, 1.0, "broker 1 to rejoin the ISR",
    )
    # it rebuilt its log from the leader's local log start, not from offset 0: the tiered path
    for p in range(partitions):
        segs = kc.local_segments(1, topic, p)
        assert segs and segs[0] >= local_start[p] > 0, (p, segs, local_start)
    new_log = kc.log_since(1, log_len)
    assert ("from remote tier" in new_log or "RemoteLogAuxState" in new_log
            or "remote log aux state" in new_log.lower()), (
        "broker 1's log shows no remote-log aux state build (TierStateMachine)"
    )

    # make broker 1 the leader: stop broker 0 (1 is the next in-sync replica in assignment order)
    kc.stop_broker(0)
    try:
        wait_until(
            lambda: kc.check_alive() or all(s["leader"] == 1 for s in kc.partition_state(topic).values()),
            60, 0.5, "broker 1 to lead every partition",
        )
        got = consume_all(kc.client_config(**{"bootstrap.servers": kc.bootstrap_servers([1, 2])}), topic, ends,
                          timeout=240)
        assert not got.errors, got.errors[:5]
        assert_same(produced.records, got.records, "read from the wiped-and-rejoined leader")
    finally:
        kc.start_broker(0)
    kc.wait_for_isr(topic, 3, timeout=180)
    brokers_alive(kc)
