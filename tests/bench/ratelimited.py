"""A rate-limited producer for benchmark child processes (tests/bench/fast_tier.py, tests/bench/zones.py):
produces `rate_mbps` MB/s (10^6 bytes) of record values round-robin over the partitions for `secs`, then
flushes; returns what it achieved as a dict (printed as JSON by the child)."""

from __future__ import annotations

import math
import os
import time


def percentile_ms(latencies_s: list[float], q: float) -> float:
    v = sorted(latencies_s)
    return round(1000 * v[min(len(v) - 1, int(q * len(v)))], 1) if v else math.nan


def produce_at_rate(producer, topic: str, partitions: int, rate_mbps: float, secs: float, value_bytes: int,
                    sample_every: int = 4, flush_secs: float = 120) -> dict:
    pool = [os.urandom(value_bytes) for _ in range(256)]  # incompressible values
    rate = rate_mbps * 1e6
    delivered = [0, 0]  # messages, bytes
    errors: list[str] = []
    lat: list[float] = []  # seconds, librdkafka's produce() -> acknowledgement, every sample_every-th record

    def cb(err, msg):
        if err is not None:
            if len(errors) < 5:
                errors.append(str(err))
            return
        delivered[0] += 1
        delivered[1] += len(msg.value())
        if delivered[0] % sample_every == 0:
            lat.append(msg.latency())

    sent = i = buffer_full = 0
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        if now - t0 >= secs:
            break
        due = rate * (now - t0)
        while sent < due:
            try:
                producer.produce(topic, value=pool[i % len(pool)], partition=i % partitions, on_delivery=cb)
            except BufferError:
                buffer_full += 1
                producer.poll(0.01)
                break
            sent += value_bytes
            i += 1
        producer.poll(0)
        time.sleep(0.002)
    produce_secs = time.monotonic() - t0
    left = producer.flush(flush_secs)
    total = time.monotonic() - t0
    return {
        "target_mbps": rate_mbps, "produce_secs": round(produce_secs, 2), "secs": round(total, 2),
        "sent_bytes": sent, "delivered_msgs": delivered[0], "delivered_bytes": delivered[1],
        "achieved_mbps": round(delivered[1] / 1e6 / total, 2), "undelivered": left, "errors": errors,
        "buffer_full": buffer_full, "ack_latency_p50_ms": percentile_ms(lat, 0.5),
        "ack_latency_p99_ms": percentile_ms(lat, 0.99),
        "ack_latency_max_ms": round(1000 * max(lat), 1) if lat else math.nan,
        "ack_latency_mean_ms": round(1000 * sum(lat) / len(lat), 1) if lat else math.nan,
        "ack_latency_n": len(lat), "cpu_secs": round(time.process_time(), 2),
    }
