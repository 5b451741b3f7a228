"""Workloads for end-to-end tests that run while the cluster is disturbed: a continuous acks=all producer that
remembers every acknowledged record, the check that all of them read back identical, and a preferred-leader
election."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from .procs import wait_until


@dataclass
class Acked:
    records: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (partition, offset) -> value
    # acknowledged without an offset: librdkafka's idempotent producer reports a retried batch that the broker
    # answered with DUPLICATE_SEQUENCE_NUMBER (it was written by the earlier attempt) as delivered, offset unknown
    no_offset: list[tuple[int, bytes]] = field(default_factory=list)  # (partition, value)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.records) + len(self.no_offset)


class ContinuousProducer:
    """Produces ~rate records/s of ~value_size bytes, round-robin over partitions, until stopped."""

    def __init__(self, kc, topic: str, partitions: int, codec: str = "none", rate: int = 2000,
                 value_size: int = 300, linger_ms: int = 5) -> None:
        self.topic, self.partitions, self.rate, self.value_size = topic, partitions, rate, value_size
        self.acked = Acked()
        self.producer = Producer(kc.client_config(**{
            "acks": "all", "enable.idempotence": True, "compression.type": codec, "linger.ms": linger_ms,
            "message.timeout.ms": 120000,
        }))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"produce-{topic}", daemon=True)
        self.sent = 0

    def _cb(self, err, msg) -> None:
        if err is not None:
            with self.acked.lock:
                self.acked.errors.append(str(err))
            return
        with self.acked.lock:
            if msg.offset() is None or msg.offset() < 0:
                self.acked.no_offset.append((msg.partition(), msg.value()))
            else:
                self.acked.records[(msg.partition(), msg.offset())] = msg.value()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due and not self._stop.is_set():
                i = self.sent
                value = (f"{self.topic}:{i}:".encode() + os.urandom(8).hex().encode()) * (self.value_size // 24 + 1)
                try:
                    self.producer.produce(self.topic, value=value[: self.value_size], key=str(i).encode(),
                                          partition=i % self.partitions, on_delivery=self._cb)
                    self.sent += 1
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0.01)
            time.sleep(0.005)

    def start(self) -> "ContinuousProducer":
        self._thread.start()
        return self

    def stop(self) -> Acked:
        self._stop.set()
        self._thread.join(30)
        left = self.producer.flush(120)
        assert left == 0, f"{left} records of {self.topic} never acknowledged"
        return self.acked


def high_watermarks(kc, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer(kc.client_config(**{"group.id": f"hw-{time.time_ns()}", "enable.auto.commit": False}))
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        c.close()


def consume_values(kc, topic: str, partitions: int) -> dict[tuple[int, int], bytes]:
    """Every record of the topic (read_committed), by (partition, offset)."""
    hw = high_watermarks(kc, topic, partitions)
    c = Consumer(kc.client_config(**{"group.id": f"check-{time.time_ns()}", "enable.auto.commit": False,
                                     "auto.offset.reset": "earliest", "isolation.level": "read_committed"}))
    out: dict[tuple[int, int], bytes] = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 180
        done: set[int] = {p for p, h in hw.items() if h == 0}
        while len(done) < partitions and time.monotonic() < deadline:
            for m in c.consume(500, 1.0):
                if m.error():
                    raise KafkaException(m.error())
                out[(m.partition(), m.offset())] = m.value()
                if m.offset() >= hw[m.partition()] - 1:
                    done.add(m.partition())
            # control records at the end of a transactional partition are never delivered
            for p in range(partitions):
                pos = c.position([TopicPartition(topic, p)])[0].offset
                if pos >= hw[p]:
                    done.add(p)
        assert len(done) == partitions, f"consumer did not reach the end of {topic}: {sorted(done)} of {hw}"
    finally:
        c.close()
    return out


def assert_nothing_lost(kc, topic: str, partitions: int, acked: Acked) -> None:
    assert not acked.errors, f"produce errors on {topic}: {acked.errors[:5]}"
    got = consume_values(kc, topic, partitions)
    lost = [k for k, v in acked.records.items() if got.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged records of {topic} not read back identical, e.g. {sorted(lost)[:5]}"
    # records acknowledged without an offset: each value (unique per record) in its partition (at least once: the
    # client's duplicate handling during leader moves is not what these tests judge)
    by_value: dict[tuple[int, bytes], int] = {}
    for (p, _), v in got.items():
        by_value[(p, v)] = by_value.get((p, v), 0) + 1
    bad = [(p, v[:40], by_value.get((p, v), 0)) for p, v in acked.no_offset if by_value.get((p, v), 0) < 1]
    assert not bad, (f"{len(bad)} of {len(acked.no_offset)} records of {topic} acknowledged without an offset are "
                     f"not in their partition, e.g. (partition, value, copies) {bad[:3]}")


def elect_preferred(kc, topic: str, partitions: int) -> None:
    r = kc.run_tool("org.apache.kafka.tools.LeaderElectionCommand", [
        "--bootstrap-server", kc.bootstrap_servers(), "--election-type", "preferred",
        "--path-to-json-file", _election_file(kc, topic, partitions)])
    assert r.returncode == 0 or "already" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def _election_file(kc, topic: str, partitions: int) -> str:
    path = kc.base_dir / f"elect-{topic}.json"
    path.write_text(json.dumps({"partitions": [{"topic": topic, "partition": p} for p in range(partitions)]}))
    return str(path)


def kill_leader_and_restart(kc, topic: str, partition: int, down_s: float = 8.0) -> int:
    """kill -9 the leader of the partition, wait for another leader, keep it down `down_s` seconds, restart it
    and wait until the topic's ISR is whole again. Returns the killed broker."""
    from .procs import wait_until

    victim = kc.leader_of(topic, partition)
    kc.kill_broker(victim)
    kc._reset_admin()  # the admin client may have been talking to the killed node (it is also a controller)

    def moved() -> bool:
        try:
            return kc.leader_of(topic, partition) not in (victim, -1)
        except Exception:
            kc._reset_admin()
            return False

    wait_until(moved, 90, 1.0, "a new leader")
    time.sleep(down_s)
    kc.start_broker(victim)
    kc._reset_admin()
    kc.wait_for_isr(topic, size=3, timeout=180)
    return victim


def wait_replicas_identical(kc, topic: str, partitions: int, timeout: float = 90.0) -> dict[int, int]:
    """Waits until the replicas of every partition on all of kc's brokers hold the same record batches
    (KafkaCluster.log_digest, so the topic must keep its segments on local disk). Returns {partition: bytes of
    those batches}: what the leader appended."""
    seen: dict[int, set] = {}

    def identical() -> bool:
        kc.check_alive()
        for p in range(partitions):
            seen[p] = {kc.log_digest(i, topic, p) for i in range(kc.n)}
        return all(len(d) == 1 for d in seen.values())

    wait_until(identical, timeout, 1.0, lambda: f"the replicas of {topic} to be identical: {seen}")
    return {p: next(iter(d))[0] for p, d in seen.items()}
