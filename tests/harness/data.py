"""Producing known data and checking what comes back, record by record.

    produced = produce(kc, "t", 100_000, partitions=3, codecs=("none", "gzip", "snappy", "lz4", "zstd"))
    got = consume_all(kc, "t", produced.end_offsets())
    assert_same(produced.records, got.records)

A record is remembered by (partition, offset) -> Digest(key, value, headers, timestamp) where key/value/
headers are SHA-256 digests of the exact bytes (None kept as None), so 100k records cost a few MB.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from .procs import HarnessError

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

_WORDS = (
    "kafka segment tier object bucket broker leader follower offset index epoch record batch header key "
    "value producer consumer partition replica storage remote local retention manifest checksum crc zstd "
    "lz4 snappy gzip transaction commit abort marker snapshot fetch copy delete log cluster metadata"
).split()


def _h(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else hashlib.sha256(b).hexdigest()[:32]


def headers_digest(headers: Optional[Sequence[tuple[str, Optional[bytes]]]]) -> Optional[str]:
    if not headers:
        return None
    m = hashlib.sha256()
    for k, v in headers:
        kb = k.encode() if isinstance(k, str) else k
        m.update(len(kb).to_bytes(4, "big") + kb)
        if v is None:
            m.update(b"\xff\xff\xff\xff")
        else:
            vb = v.encode() if isinstance(v, str) else v
            m.update(len(vb).to_bytes(4, "big") + vb)
    return m.hexdigest()[:32]


@dataclass(frozen=True)
class Digest:
    key: Optional[str]
    value: Optional[str]
    headers: Optional[str]
    timestamp: int

    @staticmethod
    def of(key, value, headers, timestamp) -> "Digest":
        return Digest(_h(key), _h(value), headers_digest(headers), int(timestamp))


@dataclass
class RecordSpec:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Optional[list[tuple[str, Optional[bytes]]]]
    timestamp: int
    partition: int


def make_record(i: int, partitions: int, ts0: int, rng: random.Random,
                value_size: tuple[int, int] = (80, 400)) -> RecordSpec:
    """Deterministic, compressible-but-not-trivial test record number i."""
    n_words = rng.randint(value_size[0] // 8, value_size[1] // 8)
    text = f"{i:09d}|" + " ".join(rng.choice(_WORDS) for _ in range(n_words))
    value: Optional[bytes] = text.encode()
    if i % 97 == 13:
        value = rng.randbytes(rng.randint(1, 300))  # incompressible
    elif i % 1009 == 7:
        value = b""  # empty value
    elif i % 2003 == 11:
        value = None  # tombstone-like null value
    key: Optional[bytes] = f"key-{i % 1000:04d}".encode()
    if i % 101 == 5:
        key = None
    headers = None
    if i % 3 == 0:
        headers = [("idx", str(i).encode()), ("src", b"fasttier-e2e")]
        if i % 9 == 0:
            headers.append(("dup", b"1"))
            headers.append(("dup", b"2"))
        if i % 27 == 0:
            headers.append(("nullv", None))
    return RecordSpec(key, value, headers, ts0 + i, i % partitions)


@dataclass
class Produced:
    topic: str
    records: dict[tuple[int, int], Digest] = field(default_factory=dict)
    # what each committed/aborted record was, for transactional runs: (partition, offset) -> bool
    committed: dict[tuple[int, int], bool] = field(default_factory=dict)

    def end_offsets(self) -> dict[int, int]:
        """partition -> 1 + highest offset produced (a lower bound for the log end offset)."""
        out: dict[int, int] = {}
        for (p, o) in self.records:
            out[p] = max(out.get(p, 0), o + 1)
        return out

    def timestamps(self, partition: int) -> list[tuple[int, int]]:
        """[(offset, timestamp)] of one partition, by offset."""
        return sorted((o, d.timestamp) for (p, o), d in self.records.items() if p == partition)

    def merge(self, other: "Produced") -> None:
        self.records.update(other.records)
        self.committed.update(other.committed)

    def only_committed(self) -> dict[tuple[int, int], Digest]:
        return {k: v for k, v in self.records.items() if self.committed.get(k, True)}


def produce(
    cluster_or_config: Any,
    topic: str,
    n: int,
    partitions: int = 1,
    codecs: Iterable[str] = ("none",),
    start_index: int = 0,
    ts0: Optional[int] = None,
    seed: int = 42,
    value_size: tuple[int, int] = (80, 400),
    producer_config: Optional[Mapping[str, Any]] = None,
    timeout: float = 300.0,
) -> Produced:
    """Produce n records (indexes start_index..start_index+n-1), split evenly over one producer per codec
    (run one after another, acks=all, idempotent). Returns digests keyed by (partition, offset)."""
    codecs = list(codecs)
    base = _client_config(cluster_or_config)
    if ts0 is None:
        ts0 = int(time.time() * 1000) - 30 * 60 * 1000  # 30 min ago: old enough for time retention tests
    rng = random.Random(seed * 1_000_003 + start_index)
    out = Produced(topic)
    per = (n + len(codecs) - 1) // len(codecs)
    i = start_index
    end = start_index + n
    for codec in codecs:
        if i >= end:
            break
        chunk_end = min(end, i + per)
        from confluent_kafka import Producer

        cfg = dict(base)
        cfg.update(
            {
                "compression.type": codec,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 10,
                "batch.size": 128 * 1024,
                "message.timeout.ms": int(timeout * 1000),
            }
        )
        cfg.update(producer_config or {})
        p = Producer(cfg)
        errors: list[str] = []

        def on_delivery(err, msg, spec):
            if err is not None:
                errors.append(str(err))
                return
            out.records[(msg.partition(), msg.offset())] = Digest.of(spec.key, spec.value, spec.headers, spec.timestamp)

        for j in range(i, chunk_end):
            spec = make_record(j, partitions, ts0, rng, value_size)
            _produce_one(p, topic, spec, lambda err, msg, spec=spec: on_delivery(err, msg, spec))
        remaining = p.flush(timeout)
        if remaining:
            raise HarnessError(f"produce to {topic}: {remaining} records not delivered in {timeout}s")
        if errors:
            raise HarnessError(f"produce to {topic} ({codec}): {len(errors)} delivery errors, first: {errors[0]}")
        i = chunk_end
    if len(out.records) != n:
        raise HarnessError(f"produce to {topic}: expected {n} delivery reports, got {len(out.records)}")
    return out


def _produce_one(p, topic: str, spec: RecordSpec, cb: Callable) -> None:
    while True:
        try:
            p.produce(
                topic,
                value=spec.value,
                key=spec.key,
                partition=spec.partition,
                headers=spec.headers,
                timestamp=spec.timestamp,
                on_delivery=cb,
            )
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)


def produce_transactional(
    cluster_or_config: Any,
    topic: str,
    transactions: Sequence[tuple[int, bool]],
    partitions: int = 1,
    start_index: int = 0,
    ts0: Optional[int] = None,
    seed: int = 7,
    codec: str = "lz4",
    transactional_id: Optional[str] = None,
    timeout: float = 120.0,
) -> Produced:
    """Produce len(transactions) transactions; each (n_records, commit?) commits or aborts.
    Returns every record produced, with .committed telling which were committed."""
    from confluent_kafka import Producer

    cfg = _client_config(cluster_or_config)
    cfg.update(
        {
            "transactional.id": transactional_id or f"e2e-txn-{uuid.uuid4().hex[:8]}",
            "compression.type": codec,
            "linger.ms": 10,
            "transaction.timeout.ms": 60000,
        }
    )
    if ts0 is None:
        ts0 = int(time.time() * 1000) - 30 * 60 * 1000
    rng = random.Random(seed)
    p = Producer(cfg)
    p.init_transactions(timeout)
    out = Produced(topic)
    i = start_index
    for n, commit in transactions:
        p.begin_transaction()
        pending: list[tuple[RecordSpec, Any]] = []
        errors: list[str] = []

        def on_delivery(err, msg, spec):
            if err is not None:
                errors.append(str(err))
            else:
                pending.append((spec, (msg.partition(), msg.offset())))

        for j in range(i, i + n):
            spec = make_record(j, partitions, ts0, rng)
            _produce_one(p, topic, spec, lambda err, msg, spec=spec: on_delivery(err, msg, spec))
        p.flush(timeout)
        if errors:
            raise HarnessError(f"transactional produce: {errors[0]}")
        if commit:
            p.commit_transaction(timeout)
        else:
            p.abort_transaction(timeout)
        for spec, key in pending:
            out.records[key] = Digest.of(spec.key, spec.value, spec.headers, spec.timestamp)
            out.committed[key] = commit
        i += n
    return out


def _client_config(cluster_or_config: Any) -> dict[str, Any]:
    if isinstance(cluster_or_config, Mapping):
        return dict(cluster_or_config)
    return cluster_or_config.client_config()


@dataclass
class Consumed:
    records: dict[tuple[int, int], Digest] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    first_offsets: dict[int, int] = field(default_factory=dict)


def consume_all(
    cluster_or_config: Any,
    topic: str,
    end_offsets: Mapping[int, int],
    start_offsets: Optional[Mapping[int, int]] = None,
    isolation_level: str = "read_committed",
    timeout: float = 180.0,
    consumer_config: Optional[Mapping[str, Any]] = None,
    stop_on_error: bool = False,
    max_errors: int = 1000,
    stop_after_errors: Optional[int] = None,
) -> Consumed:
    """Read each partition from start_offsets (default 0) until its position reaches end_offsets[p]
    (or timeout). Consumer errors are collected (not raised) in .errors; stop_on_error returns at the
    first one, stop_after_errors=n after n of them."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    cfg = _client_config(cluster_or_config)
    cfg.update(
        {
            "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation_level,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
            "check.crcs": False,  # a corrupt batch must be caught by the broker side, not here
        }
    )
    cfg.update(consumer_config or {})
    c = Consumer(cfg)
    out = Consumed()
    try:
        starts = {p: (start_offsets or {}).get(p, 0) for p in end_offsets}
        c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        pos = dict(starts)
        done = {p for p, e in end_offsets.items() if pos[p] >= e}
        deadline = time.monotonic() + timeout
        check_alive = getattr(cluster_or_config, "check_alive", None)
        while len(done) < len(end_offsets) and time.monotonic() < deadline:
            if check_alive is not None:
                check_alive()
            msgs = c.consume(1000, 0.5)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        p = m.partition()
                        if p in end_offsets and m.offset() >= end_offsets[p]:
                            done.add(p)
                        pos[p] = max(pos.get(p, 0), m.offset())
                        continue
                    if len(out.errors) < max_errors:
                        out.errors.append(f"{err.name()}: {err.str()} (p={m.partition()}, off={m.offset()})")
                    if stop_on_error or (stop_after_errors is not None and len(out.errors) >= stop_after_errors):
                        out.positions = pos
                        return out
                    continue
                p, o = m.partition(), m.offset()
                k = (p, o)
                if k in out.records:
                    out.duplicates += 1
                ts = m.timestamp()[1]
                out.records[k] = Digest.of(m.key(), m.value(), m.headers(), ts)
                out.first_offsets.setdefault(p, o)
                pos[p] = o + 1
                if o + 1 >= end_offsets.get(p, 0):
                    done.add(p)
        out.positions = pos
        return out
    finally:
        c.close()


def assert_same(
    expected: Mapping[tuple[int, int], Digest],
    actual: Mapping[tuple[int, int], Digest],
    what: str = "records",
    allow_missing_below: Optional[Mapping[int, int]] = None,
) -> None:
    """Every expected record is present at its (partition, offset) with identical key/value/headers/
    timestamp, and nothing else was returned. allow_missing_below[p]: records below that offset of p
    may be absent (deleted by retention)."""
    missing, wrong, extra = [], [], []
    for k, d in expected.items():
        a = actual.get(k)
        if a is None:
            if allow_missing_below and k[1] < allow_missing_below.get(k[0], 0):
                continue
            missing.append(k)
        elif a != d:
            wrong.append((k, d, a))
    for k in actual:
        if k not in expected:
            extra.append(k)
    if missing or wrong or extra:
        lines = [
            f"{what}: {len(expected)} expected, {len(actual)} returned; "
            f"{len(missing)} missing, {len(wrong)} differ, {len(extra)} unexpected"
        ]
        if missing:
            lines.append(f"  missing (first 10): {sorted(missing)[:10]}")
        for k, d, a in sorted(wrong)[:10]:
            lines.append(f"  differs at {k}: expected {d}, got {a}")
        if extra:
            lines.append(f"  unexpected (first 10): {sorted(extra)[:10]}")
        raise AssertionError("\n".join(lines))


def expected_offset_for_time(produced: Produced, partition: int, ts: int) -> int:
    """Kafka's ListOffsets(timestamp) answer: the first offset whose timestamp >= ts (the log end if none)."""
    pairs = produced.timestamps(partition)
    for o, t in pairs:
        if t >= ts:
            return o
    return pairs[-1][0] + 1 if pairs else 0
