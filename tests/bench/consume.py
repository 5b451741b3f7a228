"""One benchmark consumer (a process of its own, so several can run in parallel without sharing a GIL).

    python3 tests/bench/consume.py --bootstrap 127.0.0.1:9092 --topic t --end 0:123456,1:120000 \
        [--max-partition-fetch-bytes 16777216] [--fetch-max-bytes 67108864]

Assigns the given partitions at offset 0 and reads (consume() batches of about 1 MiB) until every partition's
position reaches its end offset (exclusive). Prints one JSON line: bytes (keys + values), records, seconds from
assign to the last record, seconds to the first record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--end", required=True, help="partition:end_offset,... (end exclusive)")
    ap.add_argument("--max-partition-fetch-bytes", type=int, default=16 << 20)
    ap.add_argument("--fetch-max-bytes", type=int, default=64 << 20)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--batch-messages", type=int, default=256,
                    help="messages per consume() call; about 1 MiB worth keeps the call from waiting")
    a = ap.parse_args()

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    end = {int(p): int(o) for p, o in (x.split(":") for x in a.end.split(","))}
    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": "read_uncommitted",
        "max.partition.fetch.bytes": a.max_partition_fetch_bytes,
        "fetch.max.bytes": a.fetch_max_bytes,
        "receive.message.max.bytes": a.fetch_max_bytes + (1 << 20),
        # librdkafka's local pre-fetch queue: room for a few large fetches
        "queued.max.messages.kbytes": max(65536, 4 * a.max_partition_fetch_bytes // 1024),
        "check.crcs": False,
        "log_level": 3,
    }
    c = Consumer(conf)
    pos = {p: 0 for p in end}
    done = {p for p, e in end.items() if e <= 0}
    nbytes = 0
    nrec = 0
    errors: list[str] = []
    t0 = time.monotonic()
    c.assign([TopicPartition(a.topic, p, 0) for p in end])
    t_first = None
    t_last = t0
    deadline = t0 + a.timeout
    try:
        while len(done) < len(end) and time.monotonic() < deadline:
            # consume() waits until it has batch-messages or the timeout expired: keep both small, so a
            # call returns as soon as a fetch response is there and never idles for a full batch
            for m in c.consume(a.batch_messages, 0.02):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= end.get(m.partition(), 0):
                            done.add(m.partition())
                        continue
                    if len(errors) < 20:
                        errors.append(f"{err.name()}: {err.str()}")
                    continue
                p, o = m.partition(), m.offset()
                if o >= end[p]:
                    done.add(p)
                    continue
                v, k = m.value(), m.key()
                nbytes += (len(v) if v else 0) + (len(k) if k else 0)
                nrec += 1
                pos[p] = o + 1
                if o + 1 >= end[p]:
                    done.add(p)
                    t_last = time.monotonic()
                if t_first is None:
                    t_first = time.monotonic()
    finally:
        c.close()
    out = {
        "bytes": nbytes,
        "records": nrec,
        "secs": t_last - t0,
        "first_record_secs": (t_first - t0) if t_first else None,
        "complete": len(done) == len(end),
        "positions": pos,
        "errors": errors,
    }
    print(json.dumps(out))
    return 0 if out["complete"] and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
