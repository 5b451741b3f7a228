"""fasttier replication benchmark in the three-zone test bed: prints figures, asserts nothing about speed.
Entry point: make bench-zones. What the figures mean: docs/benchmarks.md, "Replication through the fast tier".

    python3 tests/bench/zones.py [--rate 3] [--secs 60] [--setups stock,fasttier,fastrepl] [--out build/bench-zones]
    python3 tests/bench/zones.py --quick          # a smoke run: figures not meaningful

In the bed of tests/harness/zones.py (one broker per zone, MinIO in a namespace of its own, a veth pair with
byte counters per link) the same workload runs on three clusters, one after the other, in one run:

  stock     stock replication, slow tier only: the plugin loaded as RSM + RLMM, rsm.config.wal.enable=false
  fasttier  slow tier + fast tier (the leaders upload their active segments), stock replication
  fastrepl  replication through the fast tier: every follower's replica fetches go to fasttier's proxy inside
            it (KafkaCluster(fast_replication=True)): record bytes from the leaders' fast-tier streams, only
            offsets to the leaders

Workload per cluster: topic `bulk` (12 partitions, 4 led by each broker, RF=3, min.insync.replicas=2,
remote.storage.enable=true, 8 MiB segments) written by a rate-limited, throughput-oriented producer (acks=all,
batch.size --batch-bytes, linger.ms 20, incompressible 1 KiB values) for --secs; topic `probe` (3 partitions,
one per leader, same settings) written by two latency probes (acks=1 and acks=all, linger.ms 0, 100 B values,
--probe-rate records/s each) and read by a consumer (end-to-end latency: record CreateTime -> poll returns it).
Phases: warm-up (not reported); idle (nothing produced: the cross-zone background); probe alone; bulk + probe
(the measured window runs from the start of the bulk producer until every replica of every partition holds
the same bytes). Per setup: cross-zone bytes per produced byte (gross; net of the idle background), bytes on
the S3 links, MinIO's requests and bytes per bucket (slow tier bucket, fast tier bucket), latencies, CPU, the
plugin's replication metrics, and the cost per GB produced at the prices below.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

from ratelimited import produce_at_rate  # noqa: E402
from s3costs import PRICES, bucket_delta, minio_buckets  # noqa: E402

MB = 1_000_000
GB = 1 << 30  # AWS bills per GB of 2^30 bytes
BULK = "bulk"
PROBE = "probe"
PARTITIONS = 12
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]] * 4  # partition p led by node p % 3, in zone p % 3
PROBE_ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
VALUE_BYTES = 1024
PROBE_VALUE_BYTES = 100
SLOW_BUCKET = "bzones-slow"
WAL_BUCKET = "bzones-wal"

SETUPS = {
    "stock": {"label": "stock replication, slow tier only", "fast_tier": False, "fast_replication": False},
    "fasttier": {"label": "slow + fast tier, stock replication", "fast_tier": True, "fast_replication": False},
    "fastrepl": {"label": "replication through the fast tier", "fast_tier": True, "fast_replication": True},
}



def log(msg: str) -> None:
    print(f"[bench-zones {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def lat_summary(values_ms: list[float]) -> dict:
    return {"n": len(values_ms), "p50_ms": round(pct(values_ms, 0.50), 1), "p99_ms": round(pct(values_ms, 0.99), 1),
            "max_ms": round(max(values_ms), 1) if values_ms else math.nan,
            "mean_ms": round(sum(values_ms) / len(values_ms), 1) if values_ms else math.nan}


# ---------------------------------------------------------------------------------------------- child: bulk

def bulk_main(a) -> int:
    """A child process: produce --rate MB/s of record values for --secs, acks=all; JSON on stdout."""
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": a.batch_bytes,
        "message.max.bytes": max(1_000_000, 4 * a.batch_bytes),
        "compression.type": "none",
        "queue.buffering.max.kbytes": 256 * 1024,
        "max.in.flight.requests.per.connection": a.max_in_flight,
        "log_level": 3,
    })
    r = produce_at_rate(p, BULK, PARTITIONS, a.rate, a.secs, VALUE_BYTES, sample_every=8, flush_secs=300)
    r["ack_latency"] = {"n": r["ack_latency_n"], "p50_ms": r["ack_latency_p50_ms"], "p99_ms": r["ack_latency_p99_ms"],
                        "max_ms": r["ack_latency_max_ms"], "mean_ms": r["ack_latency_mean_ms"]}
    print(json.dumps(r))
    return 0


# ---------------------------------------------------------------------------------------------- child: probe

def probe_main(a) -> int:
    """A child process: two latency probes (acks=1, acks=all) and a consumer of the probe topic for --secs;
    JSON on stdout. Delivery latency is librdkafka's own (produce() -> acknowledgement); end-to-end latency is
    the consumer's wall clock at poll() minus the record's CreateTime (set by librdkafka at produce())."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    common = {"bootstrap.servers": a.bootstrap, "log_level": 3}
    consumer = Consumer({**common, "group.id": f"probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 500, "fetch.min.bytes": 1})
    parts = []
    watermark_retries = 0
    for p in range(len(PROBE_ASSIGNMENT)):
        tp = TopicPartition(PROBE, p)
        deadline = time.monotonic() + 60
        while True:
            try:
                _, hi = consumer.get_watermark_offsets(tp, timeout=30)
                break
            except Exception:  # noqa: BLE001 - e.g. UNKNOWN_TOPIC_OR_PART while metadata propagates
                if time.monotonic() > deadline:
                    raise
                watermark_retries += 1
                time.sleep(0.5)
        parts.append(TopicPartition(PROBE, p, hi))
    consumer.assign(parts)
    pcfg = {**common, "linger.ms": 0, "max.in.flight.requests.per.connection": a.max_in_flight}
    producers = {"acks1": Producer({**pcfg, "acks": "1"}), "acksall": Producer({**pcfg, "acks": "all"})}
    for pr in producers.values():  # metadata and connections before the clock starts
        pr.list_topics(PROBE, timeout=30)
    delivery: dict[str, list[float]] = {k: [] for k in producers}
    e2e: dict[str, list[float]] = {k: [] for k in producers}
    errors: list[str] = []
    sent = {k: 0 for k in producers}
    seen = {k: 0 for k in producers}
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            msg = consumer.poll(0.1)
            now_ms = time.time() * 1000
            if msg is None:
                continue
            if msg.error():
                if len(errors) < 5:
                    errors.append(str(msg.error()))
                continue
            kind = (msg.key() or b"").decode()
            if kind in e2e:
                e2e[kind].append(now_ms - msg.timestamp()[1])
                seen[kind] += 1

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()

    def cb_for(kind):
        def cb(err, msg):
            if err is not None:
                if len(errors) < 5:
                    errors.append(str(err))
                return
            delivery[kind].append(1000 * msg.latency())
        return cb

    cbs = {k: cb_for(k) for k in producers}
    value = b"p" * PROBE_VALUE_BYTES
    period = 1.0 / a.probe_rate
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < a.secs:
        for kind, pr in producers.items():
            pr.produce(PROBE, key=kind.encode(), value=value, partition=n % len(PROBE_ASSIGNMENT), on_delivery=cbs[kind])
            sent[kind] += 1
            pr.poll(0)
        n += 1
        nxt = t0 + n * period
        while True:
            for pr in producers.values():
                pr.poll(0)
            left = nxt - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.005))
    for pr in producers.values():
        pr.flush(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(seen[k] < sent[k] for k in sent):
        time.sleep(0.1)
    stop.set()
    reader.join(5)
    consumer.close()
    print(json.dumps({
        "secs": a.secs, "rate_per_producer": a.probe_rate, "watermark_retries": watermark_retries, "sent": sent, "consumed": seen, "errors": errors,
        "delivery": {k: lat_summary(v) for k, v in delivery.items()},
        "e2e": {**{k: lat_summary(v) for k, v in e2e.items()}, "all": lat_summary(e2e["acks1"] + e2e["acksall"])},
    }))
    return 0


# ---------------------------------------------------------------------------------------------- measuring

def log_bytes(kc, topics: dict[str, int]) -> dict[tuple[str, int], list[int]]:
    """{(topic, partition): [local .log bytes of node 0, 1, 2]}."""
    return {(t, p): [kc.local_log_bytes(i, t, p) for i in range(kc.n)] for t, n in topics.items() for p in range(n)}


def wait_same_size(kc, topics: dict[str, int], timeout: float = 600, stable: float = 5.0) -> tuple[float, dict]:
    """Waits until the replicas of every partition hold the same number of bytes and nothing changed for
    `stable` seconds (produce requests a producer pipelined can still be appended after it exited: a broker
    reads one request per connection at a time); (seconds until the last change, sizes)."""
    t0 = time.monotonic()
    last, changed = None, t0
    while True:
        kc.check_alive()
        sizes = log_bytes(kc, topics)
        now = time.monotonic()
        if sizes != last:
            last, changed = sizes, now
        elif all(len(set(v)) == 1 for v in sizes.values()) and now - changed >= stable:
            return changed - t0, sizes
        if now - t0 > timeout:
            raise RuntimeError(f"replicas not the same size after {timeout}s: "
                               f"{ {k: v for k, v in sizes.items() if len(set(v)) > 1} }")
        time.sleep(0.25)


def cpu_now(kc, s3) -> dict:
    from bench import proc_cpu

    t = os.times()
    return {"t": time.monotonic(), "brokers": [proc_cpu(n.proc.pid) for n in kc.nodes], "minio": proc_cpu(s3._proc.pid),
            "bench": t.user + t.system}


def cpu_pct(a: dict, b: dict) -> dict:
    span = b["t"] - a["t"]
    return {"brokers": [round(100 * (y - x) / span, 1) for x, y in zip(a["brokers"], b["brokers"])],
            "minio": round(100 * (b["minio"] - a["minio"]) / span, 1),
            "bench_forwarders": round(100 * (b["bench"] - a["bench"]) / span, 1)}


def plugin_metrics(kc) -> list[dict[str, float]]:
    from harness.jmx import Jmx

    res: list[dict] = [{} for _ in range(kc.n)]

    def read(i):
        try:
            res[i] = Jmx(kc, i).plugin()
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            res[i] = {"error": str(e)}

    ts = [threading.Thread(target=read, args=(i,)) for i in range(kc.n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


def child(mode: str, kc, secs: float, a) -> subprocess.Popen:
    argv = [sys.executable, str(Path(__file__).resolve()), f"--{mode}", "--bootstrap", kc.bootstrap_servers(),
            "--secs", str(secs), "--rate", str(a.rate), "--batch-bytes", str(a.batch_bytes),
            "--probe-rate", str(a.probe_rate), "--max-in-flight", str(a.max_in_flight)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen, what: str, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def cost(r: dict) -> dict:
    """$ per GB produced from the measured window's bytes and requests."""
    gb = r["produced_bytes"] / GB
    if gb <= 0:
        return {}
    w, s = r["wal_bucket"], r["slow_bucket"]
    c = {
        "cross_zone": r["cross_zone_bytes"] / GB * PRICES["cross_zone_per_gb"],
        "cross_zone_net": r["cross_zone_net_bytes"] / GB * PRICES["cross_zone_per_gb"],
        "express_requests": (w["put_class"] * PRICES["express_put_per_1000"]
                             + w["get_class"] * PRICES["express_get_per_1000"]) / 1000,
        "express_transfer": (w["received_bytes"] * PRICES["express_upload_per_gb"]
                             + w["sent_bytes"] * PRICES["express_retrieval_per_gb"]) / GB,
        "standard_requests": (s["put_class"] * PRICES["standard_put_per_1000"]
                              + s["get_class"] * PRICES["standard_get_per_1000"]) / 1000,
    }
    c = {k: v / gb for k, v in c.items()}
    c["total"] = c["cross_zone"] + c["express_requests"] + c["express_transfer"] + c["standard_requests"]
    c["total_net"] = c["total"] - c["cross_zone"] + c["cross_zone_net"]
    return c


# ---------------------------------------------------------------------------------------------- one setup

def run_setup(key: str, z, s3, work: Path, a) -> dict:
    from bench import load_note
    from harness import KafkaCluster
    from harness.zones import Zones

    setup = SETUPS[key]
    rsm = {"wal.bucket": WAL_BUCKET, "wal.upload.interval.ms": a.upload_interval_ms,
           "replication.fast.poll.ms": a.poll_ms}
    kc = KafkaCluster(3, version=a.version, plugin=True, s3=s3, zones=z, name=f"bzones-{key}",
                      base_dir=work / key, rsm_config=rsm, fast_tier=setup["fast_tier"],
                      fast_replication=setup["fast_replication"], jmx=True)
    r: dict = {"setup": key, "label": setup["label"], "rsm_config": rsm}
    keep = bool(os.environ.get("FASTTIER_KEEP_TMP"))
    try:
        log(f"[{key}] {setup['label']}: starting 3 brokers (Kafka {kc.version}, -Xmx{kc.heap})")
        kc.start()
        topic_config = {"remote.storage.enable": "true", "min.insync.replicas": 2, "segment.bytes": 8 << 20}
        kc.create_topic(BULK, config=topic_config, replica_assignment=ASSIGNMENT)
        kc.create_topic(PROBE, config=topic_config, replica_assignment=PROBE_ASSIGNMENT)
        kc.wait_for_isr(BULK, 3)
        kc.wait_for_isr(PROBE, 3)
        topics = {BULK: PARTITIONS, PROBE: len(PROBE_ASSIGNMENT)}
        own = {n.proc.pid for n in kc.nodes}

        log(f"[{key}] warm-up: {a.warmup_secs:.0f} s of bulk + probe (not reported)")
        probe = child("probe", kc, a.warmup_secs, a)
        bulk = child("bulk", kc, a.warmup_secs, a)
        result_of(bulk, "warm-up producer", a.warmup_secs + 400)
        result_of(probe, "warm-up probe", a.warmup_secs + 200)
        wait_same_size(kc, topics)
        time.sleep(5)

        log(f"[{key}] idle: {a.idle_secs:.0f} s, nothing produced")
        r["load_before_idle"] = load_note(own)
        wb, cb = minio_buckets(s3), cpu_now(kc, s3)
        z.reset_counters()
        t0 = time.monotonic()
        time.sleep(a.idle_secs)
        c = z.counters()
        idle_secs = time.monotonic() - t0
        wa, ca = minio_buckets(s3), cpu_now(kc, s3)
        r["idle"] = {
            "secs": round(idle_secs, 1),
            "cross_zone_bytes_per_sec": round(z.cross_zone_bytes(c) / idle_secs, 1),
            "s3_bytes_per_sec": round(z.s3_bytes(c) / idle_secs, 1),
            "links": {f"{x}-{y}": v for (x, y), v in c.items()},
            "wal_bucket": bucket_delta(wb, wa, WAL_BUCKET),
            "slow_bucket": bucket_delta(wb, wa, SLOW_BUCKET),
            "cpu_pct": cpu_pct(cb, ca),
        }
        log(f"[{key}]   cross-zone {r['idle']['cross_zone_bytes_per_sec'] / 1e3:.1f} kB/s, S3 links "
            f"{r['idle']['s3_bytes_per_sec'] / 1e3:.1f} kB/s, WAL bucket requests {r['idle']['wal_bucket']['requests']}, "
            f"CPU {r['idle']['cpu_pct']}")

        log(f"[{key}] probe alone: {a.probe_alone_secs:.0f} s")
        r["load_before_probe_alone"] = load_note(own)
        r["probe_alone"] = result_of(child("probe", kc, a.probe_alone_secs, a), "probe", a.probe_alone_secs + 200)
        describe_probe(key, r["probe_alone"])

        log(f"[{key}] bulk {a.rate} MB/s + probe: {a.secs:.0f} s")
        m_before = plugin_metrics(kc)
        r["load_before_bulk"] = load_note(own)
        sizes0 = log_bytes(kc, topics)
        wb, cb = minio_buckets(s3), cpu_now(kc, s3)
        z.reset_counters()
        t0 = time.monotonic()
        probe = child("probe", kc, a.secs, a)
        bulk = child("bulk", kc, a.secs, a)
        r["producer"] = result_of(bulk, "bulk producer", a.secs + 400)
        produce_done = time.monotonic() - t0
        r["probe_bulk"] = result_of(probe, "probe", a.secs + 200)
        catch_up, sizes1 = wait_same_size(kc, topics)
        cd = z.counters(directed=True)
        c = {(x, y): cd.get((x, y), 0) + cd.get((y, x), 0) for x, y in z.links}
        elapsed = time.monotonic() - t0
        wa, ca = minio_buckets(s3), cpu_now(kc, s3)
        r["load_after_bulk"] = load_note(own)
        m_after = plugin_metrics(kc)
        produced = sum(sizes1[k][0] - sizes0[k][0] for k in sizes1)
        cross = z.cross_zone_bytes(c)
        net = max(0.0, cross - r["idle"]["cross_zone_bytes_per_sec"] * elapsed)
        s3_up = sum(v for (x, y), v in cd.items() if y == "s3")
        s3_down = sum(v for (x, y), v in cd.items() if x == "s3")
        r.update({
            "window_secs": round(elapsed, 1),
            "produce_secs": round(produce_done, 1),
            "catch_up_secs": round(catch_up, 1),
            "produced_bytes": produced,
            "bulk_bytes": sum(sizes1[k][0] - sizes0[k][0] for k in sizes1 if k[0] == BULK),
            "cross_zone_bytes": cross,
            "cross_zone_net_bytes": net,
            "cross_per_produced": cross / produced if produced else math.nan,
            "net_per_produced": net / produced if produced else math.nan,
            "s3_link_bytes": z.s3_bytes(c),
            "s3_up_bytes": s3_up,
            "s3_down_bytes": s3_down,
            "links": {f"{x}-{y}": v for (x, y), v in c.items()},
            "links_text": Zones.format_counters(c),
            "wal_bucket": bucket_delta(wb, wa, WAL_BUCKET),
            "slow_bucket": bucket_delta(wb, wa, SLOW_BUCKET),
            "cpu_pct": cpu_pct(cb, ca),
            "isr": {p: s["isr"] for p, s in kc.partition_state(BULK).items()},
        })
        # byte-identical replicas (sizes were equal; now the bytes)
        differ = {}
        for t, n in topics.items():
            for p in range(n):
                d = [kc.log_digest(i, t, p) for i in range(kc.n)]
                if len(set(d)) != 1:
                    differ[f"{t}-{p}"] = {"digests": d, "segments": [kc.local_segments(i, t, p) for i in range(kc.n)]}
        r["replicas_identical"] = not differ
        if differ:
            r["replicas_differ"] = differ
            keep = True
            log(f"[{key}]   REPLICAS DIFFER (sizes were equal): {differ}")
        keys = sorted({k for m in m_after for k in m if k.startswith(("replication-", "wal-")) and k.endswith("-total")})
        r["plugin_deltas"] = {k: sum(m_after[i].get(k, 0) - m_before[i].get(k, 0) for i in range(kc.n)) for k in keys}
        r["plugin_problems"] = {i: kc.plugin_problems(i)[:5] for i in range(kc.n) if kc.plugin_problems(i)}
        # the proxy's own account of partitions leaving and returning to the fast tier (whole run)
        r["fallback_log"] = {i: [line[:300] for line in lines[:20]] for i, lines in
                             kc.grep_logs(r"fast replication: partition (falls back|back on the fast tier)").items()
                             if lines}
        r["cost"] = cost(r)
        describe(r)
        return r
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            log(f"[{key}] kept {kc.base_dir}")
        kc.close(keep_dir=keep)


def describe_probe(key: str, p: dict) -> None:
    d, e = p["delivery"], p["e2e"]
    log(f"[{key}]   produce latency acks=1 p50/p99 {d['acks1']['p50_ms']}/{d['acks1']['p99_ms']} ms, acks=all "
        f"{d['acksall']['p50_ms']}/{d['acksall']['p99_ms']} ms; end-to-end p50/p99 {e['all']['p50_ms']}/"
        f"{e['all']['p99_ms']} ms (sent {p['sent']}, consumed {p['consumed']}, errors {p['errors']})")


def describe(r: dict) -> None:
    key, p = r["setup"], r["producer"]
    log(f"[{key}]   producer: {p['achieved_mbps']} MB/s of {p['target_mbps']} (buffer full {p['buffer_full']}x, "
        f"undelivered {p['undelivered']}, errors {p['errors']}, ack p50/p99 {p['ack_latency']['p50_ms']}/{p['ack_latency']['p99_ms']} ms); "
        f"window {r['window_secs']} s (produce {r['produce_secs']} s, replicas equal {r['catch_up_secs']} s later)")
    log(f"[{key}]   produced {r['produced_bytes'] / MB:.1f} MB; cross-zone {r['cross_zone_bytes'] / MB:.2f} MB = "
        f"{r['cross_per_produced']:.4f} x produced (net of idle {r['cross_zone_net_bytes'] / MB:.2f} MB = "
        f"{r['net_per_produced']:.4f} x); S3 links {r['s3_link_bytes'] / MB:.1f} MB (up {r['s3_up_bytes'] / MB:.1f}, "
        f"down {r['s3_down_bytes'] / MB:.1f}); replicas identical {r['replicas_identical']}")
    log(f"[{key}]   links: {r['links_text']}")
    log(f"[{key}]   WAL bucket {r['wal_bucket']['requests']}, slow bucket {r['slow_bucket']['requests']}; "
        f"CPU {r['cpu_pct']}")
    describe_probe(key, r["probe_bulk"])
    c = r["cost"]
    if c:
        log(f"[{key}]   $/GB produced: cross-zone {c['cross_zone']:.4f} (net {c['cross_zone_net']:.4f}), S3 Express "
            f"requests {c['express_requests']:.4f} + transfer {c['express_transfer']:.4f}, S3 Standard requests "
            f"{c['standard_requests']:.4f}; total {c['total']:.4f} (net {c['total_net']:.4f})")
    if r["plugin_deltas"]:
        log(f"[{key}]   plugin: " + ", ".join(f"{k}={v:.0f}" for k, v in r["plugin_deltas"].items() if v))
    for i, lines in r.get("fallback_log", {}).items():
        for line in lines:
            log(f"[{key}]   node {i}: {line}")


# ---------------------------------------------------------------------------------------------- report

def _md(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def tables(results: dict) -> str:
    rs = results["setups"]
    parts = []
    rows = []
    for r in rs:
        rows.append([
            r["label"], f"{r['producer']['achieved_mbps']}", f"{r['produced_bytes'] / MB:.0f}",
            f"{r['cross_zone_bytes'] / MB:.1f}", f"{r['cross_per_produced']:.3f}",
            f"{r['idle']['cross_zone_bytes_per_sec'] / 1e3:.1f}", f"{r['cross_zone_net_bytes'] / MB:.2f}",
            f"{r['net_per_produced']:.4f}",
            f"{r['s3_up_bytes'] / MB:.0f} / {r['s3_down_bytes'] / MB:.0f}",
            f"{r['window_secs']:.0f} ({r['catch_up_secs']:.1f})",
        ])
    parts.append("Bytes (measured window: bulk start until all replicas are equal):\n\n" + _md(
        ["setup", "produced MB/s", "produced MB", "cross-zone MB", "cross-zone / produced", "idle cross-zone kB/s",
         "net cross-zone MB", "net / produced", "S3 links up / down MB", "window s (catch-up)"], rows))
    stock = next((r for r in rs if r["setup"] == "stock"), None)
    if stock:
        parts.append("Net cross-zone bytes relative to stock: " + ", ".join(
            f"{r['label']} {r['cross_zone_net_bytes'] / stock['cross_zone_net_bytes']:.2%}" for r in rs
            if stock["cross_zone_net_bytes"]) + "; gross: " + ", ".join(
            f"{r['label']} {r['cross_zone_bytes'] / stock['cross_zone_bytes']:.2%}" for r in rs
            if stock["cross_zone_bytes"]) + ".")
    rows = []
    for r in rs:
        for phase, p in (("alone", r["probe_alone"]), ("with bulk", r["probe_bulk"])):
            d, e = p["delivery"], p["e2e"]
            rows.append([r["label"], phase, f"{d['acks1']['p50_ms']:.1f} / {d['acks1']['p99_ms']:.1f}",
                         f"{d['acksall']['p50_ms']:.1f} / {d['acksall']['p99_ms']:.1f}",
                         f"{e['all']['p50_ms']:.0f} / {e['all']['p99_ms']:.0f}",
                         f"{sum(p['sent'].values())} / {sum(p['consumed'].values())}"])
        al = r["producer"]["ack_latency"]
        rows.append([r["label"], "bulk producer (acks=all, batches)", "", f"{al['p50_ms']:.0f} / {al['p99_ms']:.0f}",
                     "", ""])
    parts.append("Latency, ms p50 / p99 (probe: 100 B records, linger.ms 0, "
                 f"{results['args']['probe_rate']} records/s per producer):\n\n" + _md(
                     ["setup", "probe", "produce acks=1", "produce acks=all", "end-to-end", "sent / consumed"], rows))
    rows = []
    for r in rs:
        c, w, s = r["cost"], r["wal_bucket"], r["slow_bucket"]
        win = r["window_secs"]
        rows.append([
            r["label"], f"{w['put_class'] / win:.1f} / {w['get_class'] / win:.1f}",
            f"{w['received_bytes'] / MB:.0f} / {w['sent_bytes'] / MB:.0f}",
            f"{s['put_class'] / win:.2f} / {s['get_class'] / win:.2f}",
            f"{c['cross_zone']:.4f} ({c['cross_zone_net']:.4f})", f"{c['express_requests']:.4f}",
            f"{c['express_transfer']:.4f}", f"{c['standard_requests']:.4f}",
            f"**{c['total']:.4f}** ({c['total_net']:.4f})",
        ])
    parts.append("Requests and cost per GB produced (cross-zone $0.02 per GB crossing; S3 Express and S3 Standard "
                 "list prices of landscape.md; net = cross-zone net of the idle background):\n\n" + _md(
                     ["setup", "fast-tier bucket PUT / GET per s", "fast-tier bucket in / out MB",
                      "slow-tier bucket PUT / GET per s", "cross-zone $/GB (net)", "S3 Express requests $/GB",
                      "S3 Express transfer $/GB", "S3 Standard requests $/GB", "total $/GB (net)"], rows))
    rows = []
    for r in rs:
        rows.append([r["label"], ", ".join(f"{x:.0f}" for x in r["cpu_pct"]["brokers"]), f"{r['cpu_pct']['minio']:.0f}",
                     f"{r['cpu_pct']['bench_forwarders']:.0f}", f"{r['load_before_bulk']['loadavg1']:.1f} -> "
                     f"{r['load_after_bulk']['loadavg1']:.1f}", r["load_before_bulk"]["busy_other_jvms"],
                     ", ".join(f"{x:.0f}" for x in r["idle"]["cpu_pct"]["brokers"])])
    parts.append("CPU (% of one core over the measured window; the box has 2 cores):\n\n" + _md(
        ["setup", "brokers", "MinIO", "bench process (forwarders)", "load avg before -> after", "busy other JVMs",
         "brokers idle"], rows))
    fr = next((r for r in rs if r["setup"] == "fastrepl"), None)
    if fr:
        parts.append("Replication through the fast tier, plugin counters over the window (all brokers): " + ", ".join(
            f"{k}={v:.0f}" for k, v in fr["plugin_deltas"].items() if k.startswith("replication-") and v) + ".")
    parts.append("Prices: " + ", ".join(f"{k}={v}" for k, v in PRICES.items()))
    return "\n\n".join(parts)


def chart(results: dict, path: Path) -> None:
    """Three panels (cross-zone bytes per produced byte, latency, $/GB) as a PNG. matplotlib is a bench-only
    dependency: installed with pip into $FASTTIER_CACHE/bench-python on first use."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        target = Path(os.environ.get("FASTTIER_CACHE", str(Path.home() / ".cache" / "fasttier"))) / "bench-python"
        if not (target / "matplotlib").is_dir():
            log(f"installing matplotlib into {target} (bench only)")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--root-user-action=ignore", "--target", str(target), "matplotlib"], check=True)
        sys.path.insert(0, str(target))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = results["setups"]
    names = {"stock": "stock\n(slow tier)", "fasttier": "slow + fast tier,\nstock replication",
             "fastrepl": "replication\nthrough fast tier"}
    labels = [names[r["setup"]] for r in rs]
    colors = ["#7f7f7f", "#1f77b4", "#2ca02c"][: len(rs)]
    fig, ax = plt.subplots(1, 3, figsize=(16, 5.2))
    x = range(len(rs))

    gross = [r["cross_per_produced"] for r in rs]
    net = [r["net_per_produced"] for r in rs]
    w = 0.38
    b1 = ax[0].bar([i - w / 2 for i in x], gross, w, label="gross", color=colors, alpha=0.55)
    b2 = ax[0].bar([i + w / 2 for i in x], net, w, label="net of idle background", color=colors)
    for bars in (b1, b2):
        for bar in bars:
            v = bar.get_height()
            ax[0].annotate(f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax[0].set_yscale("log")
    ax[0].set_ylim(0.005, 5)
    ax[0].set_xticks(list(x), labels, fontsize=8)
    ax[0].set_ylabel("cross-zone bytes per produced byte (log scale)")
    ax[0].set_title("Cross-zone traffic (RF=3, acks=all)")
    ax[0].legend(fontsize=8)

    kinds = [("probe_bulk", "delivery", "acks1", "acks=1"), ("probe_bulk", "delivery", "acksall", "acks=all"),
             ("probe_bulk", "e2e", "all", "end-to-end")]
    w = 0.26
    for j, (ph, what, k, name) in enumerate(kinds):
        p50 = [r[ph][what][k]["p50_ms"] for r in rs]
        p99 = [r[ph][what][k]["p99_ms"] for r in rs]
        pos = [i + (j - 1) * w for i in x]
        ax[1].bar(pos, p99, w, color=f"C{j}", alpha=0.35)
        ax[1].bar(pos, p50, w, color=f"C{j}", label=f"{name} (p50 solid, p99 light)")
        for px, v in zip(pos, p99):
            ax[1].annotate(f"{v:.0f}", (px, v), ha="center", va="bottom", fontsize=7)
    ax[1].set_yscale("log")
    ax[1].set_xticks(list(x), labels, fontsize=8)
    ax[1].set_ylabel("ms (log scale)")
    ax[1].set_title("Probe latency during the bulk load")
    ax[1].legend(fontsize=7, loc="upper left")

    parts = [("cross_zone", "cross-zone transfer"), ("express_requests", "S3 Express requests"),
             ("express_transfer", "S3 Express transfer"), ("standard_requests", "S3 Standard requests")]
    bottom = [0.0] * len(rs)
    for j, (k, name) in enumerate(parts):
        vals = [r["cost"][k] for r in rs]
        ax[2].bar(list(x), vals, 0.6, bottom=bottom, label=name, color=f"C{j + 4}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, v in enumerate(bottom):
        ax[2].annotate(f"${v:.4f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax[2].set_xticks(list(x), labels, fontsize=8)
    ax[2].set_ylabel("$ per GB produced")
    ax[2].set_title("Cost per GB produced (measured bytes and requests)")
    ax[2].legend(fontsize=7)
    a = results["args"]
    fig.suptitle(f"fasttier in the three-zone bed: {a['rate']} MB/s target, {a['secs']:.0f} s, 12 partitions, "
                 f"wal.upload.interval.ms={a['upload_interval_ms']}, replication.fast.poll.ms={a['poll_ms']} "
                 f"(2-core box, git {results['machine']['git']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="stock,fasttier,fastrepl")
    ap.add_argument("--rate", type=float, default=2.0, help="bulk producer MB/s of record values")
    ap.add_argument("--secs", type=float, default=90.0, help="seconds of bulk produce")
    ap.add_argument("--batch-bytes", type=int, default=1000000, help="bulk producer batch.size")
    ap.add_argument("--probe-rate", type=float, default=10.0, help="records/s of each latency probe")
    ap.add_argument("--max-in-flight", type=int, default=1,
                    help="max.in.flight.requests.per.connection of the bulk producer and the probes")
    ap.add_argument("--idle-secs", type=float, default=30.0)
    ap.add_argument("--probe-alone-secs", type=float, default=30.0)
    ap.add_argument("--warmup-secs", type=float, default=10.0)
    ap.add_argument("--upload-interval-ms", type=int, default=250, help="rsm.config.wal.upload.interval.ms")
    ap.add_argument("--poll-ms", type=int, default=50, help="rsm.config.replication.fast.poll.ms")
    ap.add_argument("--version", default=os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0"))
    ap.add_argument("--quick", action="store_true", help="smoke run: short phases")
    ap.add_argument("--chart", default=str(REPO / "build" / "bench-zones" / "bench-zones.png"))
    ap.add_argument("--out", default=str(REPO / "build" / "bench-zones"))
    # child modes
    ap.add_argument("--bulk", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.bulk:
        return bulk_main(a)
    if a.probe:
        return probe_main(a)
    if a.quick:
        a.secs, a.idle_secs, a.probe_alone_secs, a.warmup_secs = 15, 10, 10, 5

    from bench import load_note, machine
    from harness import S3Server
    from plugin_pin import pin_plugin
    from harness.zones import Zones, bed_support, netem_support

    ok, why = bed_support()
    if not ok:
        raise SystemExit(f"the zones test bed is unavailable here: {why}")
    keys = [k for k in a.setups.split(",") if k]
    for k in keys:
        if k not in SETUPS:
            raise SystemExit(f"unknown setup {k!r} (have {', '.join(SETUPS)})")
    results: dict = {"machine": machine(), "args": vars(a), "prices": PRICES, "netem": netem_support(), "setups": []}
    log(f"machine {results['machine']}; load {load_note()}; netem: {results['netem']}")
    os.environ["MINIO_PROMETHEUS_AUTH_TYPE"] = "public"  # MinIO inherits it: bucket metrics without a token
    work = Path(tempfile.mkdtemp(prefix="ftbench-zones-", dir="/var/tmp"))
    results["plugin"] = pin_plugin(work)
    log(f"plugin: {results['plugin']}")
    started = time.monotonic()
    try:
        with Zones(n=3, s3=True) as z, S3Server(buckets=[SLOW_BUCKET, WAL_BUCKET], data_dir=work / "s3",
                                               netns=z.s3_ns, host=z.s3_addr) as s3:
            for k in keys:
                results["setups"].append(run_setup(k, z, s3, work, a))
    finally:
        results["total_secs"] = round(time.monotonic() - started)
        if os.environ.get("FASTTIER_KEEP_TMP") or len(results["setups"]) < len(keys):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"results-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
        if results["setups"]:
            text = tables(results)
            (out / f"figures-{stamp}.md").write_text(text + "\n")
            print(f"\nfasttier replication benchmark ({results['machine']['cpus']} CPUs, git {results['machine']['git']}, "
                  f"{results['total_secs']} s); results in {out}/results-{stamp}.json\n")
            print(text)
            if len(results["setups"]) == len(keys):
                try:
                    chart(results, Path(a.chart))
                    log(f"chart: {a.chart}")
                except Exception as e:  # noqa: BLE001 - the figures above stand without it
                    log(f"no chart: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
