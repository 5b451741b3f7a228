"""fasttier replication benchmark in the three-zone test bed: prints figures, asserts nothing about speed.
Entry point: make bench-zones. What the figures mean: docs/benchmarks.md, "Replication through the fast tier".

    python3 tests/bench/zones.py                  # everything, about 30 minutes
    python3 tests/bench/zones.py [--store-profiles none,express,standard] [--setups stock,fastrepl]
        [--upload-intervals 10,25,50,100] [--knob-profile express]
        [--tuned-producer-props "batch.size=1048576 linger.ms=20"]
        [--secs 30] [--perf-secs 20] [--rate 2] [--out build/bench-zones] [--docs]
    python3 tests/bench/zones.py --quick          # a smoke run (about 5 minutes): figures not meaningful
    (--docs writes the charts to docs/img/bench-zones.png and docs/img/bench-zones-latency.png)

In the bed of tests/harness/zones.py (one broker per zone, MinIO in a namespace of its own, a veth pair with
byte counters per link) the same workload runs on several clusters, one after the other, in one run.

Store profiles (--store-profiles): how fast the object store answers, as the brokers see it. "none": MinIO on
the bed; "express": S3-Express-like, +5 ms to the first byte of every request; "standard": S3-Standard-like,
+30 ms on PUT (and POST: multipart create/complete), +15 ms on GET, HEAD and everything else. The brokers reach
MinIO through `fasttier-bench delay-relay` in the S3 namespace (store_link.DelayRelay; the relay follows the
HTTP/1.1 requests and delays each by its method, see tests/bench/native/src/delay_relay.rs).

Setups (--setups), each run per store profile:

  stock     stock replication, slow tier only: the plugin loaded as RSM + RLMM, rsm.config.wal.enable=false
  fasttier  slow tier + fast tier (the leaders upload their active segments), stock replication (optional)
  fastrepl  replication through the fast tier: every follower's replica fetches go to fasttier's proxy inside
            it (KafkaCluster(fast_replication=True)): record bytes from the leaders' fast-tier streams, only
            offsets to the leaders; with --notify-port auto (and a plugin build that has the setting) the
            followers learn of new objects from rsm.config.replication.fast.notify.port instead of polling

Workload per cluster: topic `bulk` (12 partitions, 4 led by each broker, RF=3, min.insync.replicas=2,
remote.storage.enable=true, 8 MiB segments) written by a rate-limited, throughput-oriented producer (acks=all,
batch.size --batch-bytes, linger.ms 20, incompressible 1 KiB values) for --secs; topic `probe` (3 partitions,
one per leader, same settings) written by two latency probes (acks=1 and acks=all, linger.ms 0, 100 B values,
--probe-rate records/s each) and read by a consumer (end-to-end latency: record CreateTime -> poll returns it);
topics `perf-az1..3` (4 partitions each, all led by that zone's broker, same settings) written by Kafka's own
producer perf tool (org.apache.kafka.tools.ProducerPerformance from the cluster's Kafka jars, one JVM per zone
inside the zone's namespace, to its own zone's leader: --throughput -1, --record-size 1024, every producer
setting at Kafka's default (acks=all, idempotence, batch.size 16 KiB, linger.ms 5), then again with
--tuned-producer-props, the documented settings).
Phases: warm-up (not reported); idle (nothing produced: the cross-zone background, the store's requests at
rest); probe alone; bulk + probe (the measured window runs from the start of the bulk producer until every
replica of every partition holds the same bytes); perf test at Kafka's defaults; perf test with the documented
settings. Per run: cross-zone bytes per produced byte (gross; net of the idle background), bytes on the S3
links, MinIO's requests and bytes per bucket (slow tier bucket, fast tier bucket), latencies, CPU, the
plugin's replication metrics, the breakdown of the acks=all round trip from the plugin's counters
(<stage>-ms-total / <stage>-count; n/a while a plugin build does not export them), and the cost per GB
produced at the prices of s3costs.py.

The cost knob (--upload-intervals): one more fastrepl cluster per value of rsm.config.wal.upload.interval.ms,
in --knob-profile, with idle, probe alone and the perf test at Kafka's defaults; its $/GB at 10 MB/s per broker
(see cost_at_rate) against the probe's acks=all latency is the second chart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
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
from s3costs import PRICES, bucket_delta  # noqa: E402
from s3costs import minio_buckets as _minio_buckets  # noqa: E402

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

PERF = "perf"
PERF_PARTITIONS = 4
COST_MBPS_PER_BROKER = 10.0

# The store's latency as the brokers see it (delay relay in front of MinIO, tests/bench/native/src/delay_relay.rs):
# ms added to the first byte of every request; "methods" overrides the default per HTTP method.
PROFILES = {
    "none": {"label": "MinIO on the bed", "short": "MinIO", "default_ms": 0, "methods": {}},
    "express": {"label": "S3-Express-like: +5 ms on every request", "short": "Express-like", "default_ms": 5,
                "methods": {}},
    "standard": {"label": "S3-Standard-like: +30 ms on PUT and POST, +15 ms on GET, HEAD and others",
                 "short": "Standard-like", "default_ms": 15, "methods": {"PUT": 30, "POST": 30}},
}

# One acks=all round trip through the fast tier, as the plugin times it: (stage, what, where). Each stage is a
# pair of counters <stage>-ms-total and <stage>-count; missing ones are shown as n/a.
STAGES = [
    ("roundtrip-upload-wait", "data appended -> its upload starts", "leader"),
    ("roundtrip-upload-put", "PUT", "leader"),
    ("roundtrip-learn", "upload start -> follower knows the object (PUT + notification)", "follower"),
    ("roundtrip-get", "GET + verification", "follower"),
    ("roundtrip-serve", "object in cache -> held replica fetch answered", "follower"),
    ("roundtrip-append", "answer -> follower's next fetch (its append)", "follower"),
    ("roundtrip-report", "that fetch -> offsets written to the leader", "follower"),
]
ROUND_TRIP = ["roundtrip-upload-wait", "roundtrip-learn", "roundtrip-get", "roundtrip-serve", "roundtrip-append",
              "roundtrip-report"]

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
            pr.produce(PROBE, key=kind.encode(), value=value, partition=n % len(PROBE_ASSIGNMENT),
                       on_delivery=cbs[kind])
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
        "secs": a.secs, "rate_per_producer": a.probe_rate, "watermark_retries": watermark_retries, "sent": sent,
        "consumed": seen, "errors": errors,
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


# MinIO answers its metrics from a cache refreshed on the first read 10 s after the last
MINIO_METRICS_CACHE_SECS = 10.5
_minio_read = [-1e9]


def minio_buckets(s3) -> dict:
    """s3costs.minio_buckets, always fresh: MinIO computes its bucket metrics on a read at least 10 s after the
    previous computation and answers from that cache in between, so a read sooner than that waits."""
    wait = _minio_read[0] + MINIO_METRICS_CACHE_SECS - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    out = _minio_buckets(s3)
    _minio_read[0] = time.monotonic()
    return out


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


# ---------------------------------------------------------------------------------------------- store profiles

def start_relay(z, s3, profile: str, work: Path):
    """The delay relay of a store profile in the S3 namespace in front of MinIO (store_link.DelayRelay),
    or None for "none" (the brokers reach MinIO directly)."""
    from store_link import DelayRelay

    p = PROFILES[profile]
    if not p["default_ms"] and not p["methods"]:
        return None
    extra = tuple(x for m, ms in p["methods"].items() for x in ("--method-delay", f"{m}={ms}"))
    log_path = work / f"delay-relay-{profile}.log"
    relay = DelayRelay(tuple(z.exec_prefix("s3")), z.s3_addr, f"{z.s3_addr}:{s3.port}", p["default_ms"], log_path,
                       extra)
    relay.log_path = log_path
    return relay


def relay_stats(relay) -> dict | None:
    """The relay's last request counts (it prints them every 10 s when they changed)."""
    if relay is None:
        return None
    last = None
    for line in relay.log_path.read_text().splitlines():
        if line.startswith('{"stats"'):
            last = json.loads(line)["stats"]
    return last


def plugin_knows(key: str) -> bool:
    """Whether the pinned plugin build has the setting `key` (its name is in the native library): a key the
    plugin does not know in its own namespace stops the broker."""
    lib = Path(os.environ.get("FASTTIER_PLUGIN_DIR", str(REPO / "build" / "plugin"))) / "libfasttier_jni.so"
    try:
        return key.encode() in lib.read_bytes()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- round trip

def breakdown(before: list[dict], after: list[dict]) -> dict:
    """{stage: {"ms_total", "count", "mean_ms"} or None when the plugin does not export the stage}: the
    deltas of <stage>-ms-total and <stage>-count summed over all brokers (leader stages are counted on the
    leaders, follower stages on the followers)."""
    out: dict = {}
    for stage, _, _ in STAGES:
        tk, ck = f"{stage}-ms-total", f"{stage}-count"
        if not any(tk in m and ck in m for m in after):
            out[stage] = None
            continue
        dt = sum(m.get(tk, 0.0) - b.get(tk, 0.0) for b, m in zip(before, after))
        dc = sum(m.get(ck, 0.0) - b.get(ck, 0.0) for b, m in zip(before, after))
        out[stage] = {"ms_total": dt, "count": dc, "mean_ms": round(dt / dc, 2) if dc > 0 else None}
    return out


def stage_mean(b: dict | None, stage: str) -> float | None:
    v = (b or {}).get(stage)
    return v["mean_ms"] if v else None


def round_trip_sum(b: dict | None) -> float | None:
    """wait for upload + follower learns (the PUT included) + GET + serve + append + report."""
    vals = [stage_mean(b, st) for st in ROUND_TRIP]
    return None if any(v is None for v in vals) else round(sum(vals), 1)


def fmt_ms(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def describe_breakdown(key: str, what: str, b: dict) -> None:
    log(f"[{key}]   round trip ({what}), mean ms: " + ", ".join(
        f"{stage.removeprefix('roundtrip-')} {fmt_ms(stage_mean(b, stage))}" for stage, _, _ in STAGES)
        + f"; sum {fmt_ms(round_trip_sum(b))}")


# ---------------------------------------------------------------------------------------------- perf test

def perf_topics(kc) -> dict[str, list[list[int]]]:
    """One topic per zone, all of its partitions led by that zone's broker: each zone's producer writes to
    leaders in its own zone, so its own bytes cross no zone and the cross-zone counters see replication
    only."""
    n = kc.n
    return {f"{PERF}-az{i + 1}": [[i, (i + 1) % n, (i + 2) % n], [i, (i + 2) % n, (i + 1) % n]] * (PERF_PARTITIONS // 2)
            for i in range(n)}


_PERF_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                        r"([\d.]+) ms max latency")


def perf_phase(kc, z, s3, a, key: str, variant: str, props: dict, m_before: list[dict]) -> tuple[dict, list[dict]]:
    """Kafka's own producer perf tool (org.apache.kafka.tools.ProducerPerformance from the cluster's Kafka
    jars), one per zone, run inside the zone's namespace (`ip netns exec`) against its zone's broker (BROKER
    listener, names from set_hosts), --throughput -1, --record-size a.perf_record_size, every producer
    setting at Kafka's default but `props`, for a.perf_secs from the moment every one of them has appended
    something (JVM start and metadata not counted); then until every replica is equal. MB/s = bytes appended
    to the leaders' logs over the steady part (after the first third of a.perf_secs, at most 5 s)."""
    from bench import load_note
    from harness import wait_until
    from harness.kafka import LOG4J2_CONFIG, java_bin, kafka_libs

    topics = perf_topics(kc)
    tsizes = {t: len(v) for t, v in topics.items()}
    leader = {t: v[0][0] for t, v in topics.items()}
    secs = a.perf_secs
    warm = min(5.0, secs / 3)
    shown = " ".join(f"{k}={v}" for k, v in props.items()) or "Kafka defaults"
    log(f"[{key}] producer perf test ({variant}: {shown}), "
        f"--throughput -1, one per zone: {secs:.0f} s")

    def appended(sizes) -> int:
        return sum(v[leader[t]] for (t, _), v in sizes.items())

    load0 = load_note({n.proc.pid for n in kc.nodes})
    before = log_bytes(kc, tsizes)
    sizes0 = appended(before)
    wb = minio_buckets(s3)
    z.reset_counters()
    cp = ":".join(str(j) for j in sorted(kafka_libs(kc.version).glob("*.jar")))
    procs, outs = [], []
    t_start = time.monotonic()
    for i, node in enumerate(kc.nodes):
        out = kc.base_dir / f"perf-{variant}-{i}.out"
        outs.append(out)
        argv = z.exec_prefix(i) + [
            java_bin(), "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dfasttier.test.log.file={kc.base_dir}/perf-{variant}-{i}.log", "-cp", cp,
            "org.apache.kafka.tools.ProducerPerformance", "--topic", f"{PERF}-az{i + 1}",
            "--num-records", str(10 ** 12),
            "--record-size", str(a.perf_record_size), "--throughput", "-1",
            "--producer-props", f"bootstrap.servers={node.name}:{node.broker_port}",
            *[f"{k}={v}" for k, v in props.items()]]
        with open(out, "w") as f:
            procs.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT))
    try:
        # the clock starts when every producer has appended something (JVM start and metadata not counted)
        def writing() -> bool:
            sizes = log_bytes(kc, tsizes)
            grown = {t for (t, p), v in sizes.items() if v[leader[t]] > before[(t, p)][leader[t]]}
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("perf tool exited: " + " | ".join(o.read_text()[-1500:] for o in outs))
            return grown == set(topics)

        wait_until(writing, 120, 0.25, "every perf tool to write")
        t0 = time.monotonic()
        time.sleep(max(0.0, t0 + warm - time.monotonic()))
        b_w = minio_buckets(s3)
        s_w, t_w = appended(log_bytes(kc, tsizes)), time.monotonic()
        time.sleep(max(0.0, t0 + secs - time.monotonic()))
        b_e = minio_buckets(s3)
        s_e, t_e = appended(log_bytes(kc, tsizes)), time.monotonic()
        dead = [(i, p.returncode) for i, p in enumerate(procs) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"perf tool exited early {dead}: " + " | ".join(
                outs[i].read_text()[-1500:] for i, _ in dead))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    kc.check_alive()
    catch_up, sizes1 = wait_same_size(kc, tsizes, stable=a.stable_secs)
    wa = minio_buckets(s3)
    c = z.counters()
    elapsed = time.monotonic() - t_start
    m_after = plugin_metrics(kc) if kc.fast_tier else [{} for _ in kc.nodes]
    produced = appended(sizes1) - sizes0
    steady = t_e - t_w
    busy = bucket_delta(b_w, b_e, WAL_BUCKET)
    windows = []
    for out in outs:
        for line in out.read_text().splitlines():
            m = _PERF_LINE.search(line)
            if m:
                windows.append({"records_per_sec": float(m.group(2)), "mbps": float(m.group(3)),
                                "avg_ms": float(m.group(4)), "max_ms": float(m.group(5))})
    cross = z.cross_zone_bytes(c)
    res = {
        "props": props, "secs": round(t_e - t0, 1), "start_secs": round(t0 - t_start, 1),
        "steady_secs": round(steady, 1),
        "mbps": round((s_e - s_w) / steady / MB, 2) if steady > 0 else math.nan,
        "tool_windows": len(windows),
        "tool_avg_latency_ms": round(sum(w["avg_ms"] for w in windows) / len(windows), 1) if windows else math.nan,
        "tool_max_latency_ms": max((w["max_ms"] for w in windows), default=math.nan),
        "produced_bytes": produced, "window_secs": round(elapsed, 1), "catch_up_secs": round(catch_up, 1),
        "cross_zone_bytes": cross, "cross_per_produced": cross / produced if produced else math.nan,
        "s3_link_bytes": z.s3_bytes(c),
        "wal_busy": {"put_per_sec": round(busy["put_class"] / steady, 2),
                     "get_per_sec": round(busy["get_class"] / steady, 2),
                     "requests": busy["requests"]},
        "wal_bucket": bucket_delta(wb, wa, WAL_BUCKET),
        "slow_bucket": bucket_delta(wb, wa, SLOW_BUCKET),
        "breakdown": breakdown(m_before, m_after),
        "load_before": load0,
    }
    log(f"[{key}]   {variant}: {res['mbps']} MB/s appended (steady {res['steady_secs']} s; the tool's windows: avg "
        f"latency {res['tool_avg_latency_ms']} ms, max {res['tool_max_latency_ms']} ms); "
        f"produced {produced / MB:.1f} MB, "
        f"cross-zone {res['cross_per_produced']:.4f} x produced; fast-tier bucket busy PUT/GET per s "
        f"{res['wal_busy']['put_per_sec']} / {res['wal_busy']['get_per_sec']}")
    describe_breakdown(key, f"perf {variant}", res["breakdown"])
    return res, m_after


def cost_at_rate(run: dict, mbps_per_broker: float) -> dict:
    """$ per GB produced when every broker leads `mbps_per_broker` MB/s, from a run's perf test at Kafka's
    defaults (data always waiting, as at that rate):
      fast-tier PUTs per broker per s = max(1000 / max(upload interval, mean PUT ms), measured per broker):
        the knob bounds PUTs when data is always waiting; never below what was measured;
      fast-tier GET-class requests = PUTs x the GET-per-PUT ratio measured in the busy window;
      per-byte terms (S3 Express upload/retrieval, cross-zone transfer, S3 Standard requests of the slow
        tier) as measured per produced byte over the perf test (its catch-up included)."""
    perf = run["perf"]["default"]
    produced = perf["produced_bytes"]
    busy = perf["wal_busy"]
    if produced <= 0:
        return {}
    measured = busy["put_per_sec"] / 3
    put_ms = stage_mean(perf["breakdown"], "roundtrip-upload-put") or 0.0
    interval = run.get("upload_interval_ms")
    bound = 1000.0 / max(interval, put_ms, 1.0) if interval is not None else 0.0
    puts = max(bound, measured)
    gets = puts * (busy["get_per_sec"] / busy["put_per_sec"]) if busy["put_per_sec"] else 0.0
    gb_per_sec = mbps_per_broker * MB / GB
    w, s = perf["wal_bucket"], perf["slow_bucket"]
    gb = produced / GB
    c = {
        "puts_per_broker_per_sec": round(puts, 2), "gets_per_broker_per_sec": round(gets, 2),
        "express_requests": (puts * PRICES["express_put_per_1000"] + gets * PRICES["express_get_per_1000"]) / 1000
        / gb_per_sec,
        "express_transfer": (w["received_bytes"] * PRICES["express_upload_per_gb"]
                             + w["sent_bytes"] * PRICES["express_retrieval_per_gb"]) / GB / gb,
        "cross_zone": perf["cross_per_produced"] * PRICES["cross_zone_per_gb"],
        "standard_requests": (s["put_class"] * PRICES["standard_put_per_1000"]
                              + s["get_class"] * PRICES["standard_get_per_1000"]) / 1000 / gb,
    }
    c["total"] = c["express_requests"] + c["express_transfer"] + c["cross_zone"] + c["standard_requests"]
    return c


# ---------------------------------------------------------------------------------------------- one setup

def run_setup(key: str, z, s3, work: Path, a, profile: str = "none", endpoint: str | None = None,
              relay=None, upload_interval_ms: int | None = None, knob: bool = False) -> dict:
    """One cluster of setup `key` with the store reached at `endpoint` (the delay relay of `profile`, or
    MinIO itself). knob=False: every phase (warm-up, idle, probe alone, bulk + probe, producer perf test at
    Kafka's defaults and at the documented settings). knob=True (a run of the cost-knob sweep): idle, probe
    alone, perf test at Kafka's defaults."""
    from bench import load_note
    from harness import KafkaCluster
    from harness.zones import Zones

    setup = SETUPS[key]
    interval = upload_interval_ms if upload_interval_ms is not None else a.upload_interval_ms
    rsm = {"wal.bucket": WAL_BUCKET}
    if interval is not None:
        rsm["wal.upload.interval.ms"] = interval
    if a.poll_ms is not None:
        rsm["replication.fast.poll.ms"] = a.poll_ms
    if endpoint:
        rsm["s3.endpoint"] = endpoint
    run_name = f"{key}-{profile}" + (f"-knob{interval}" if knob else "")
    tag = f"{key}/{profile}" + (f"/interval {interval}" if knob else "")
    kc = KafkaCluster(3, version=a.version, plugin=True, s3=s3, zones=z, name=f"bzones-{run_name}",
                      base_dir=work / run_name, rsm_config=rsm, fast_tier=setup["fast_tier"],
                      fast_replication=setup["fast_replication"], jmx=True)
    if setup["fast_replication"]:
        # the notification channel: a plugin build without the setting stops on it, so it is removed there
        # (and for --notify-port 0); "auto" keeps the harness's port, or picks one if the harness sets none
        if not a.notify_known or a.notify_port == "0":
            kc.update_rsm_config(**{"replication.fast.notify.port": None})
        elif a.notify_port != "auto":
            kc.update_rsm_config(**{"replication.fast.notify.port": int(a.notify_port)})
        elif getattr(kc, "notify_port", None) is None:
            from harness import free_port

            kc.update_rsm_config(**{"replication.fast.notify.port": free_port()})
        rsm["replication.fast.notify.port"] = kc.rsm_properties().get("rsm.config.replication.fast.notify.port")
    r: dict = {"setup": key, "profile": profile, "upload_interval_ms": interval, "knob": knob,
               "label": f"{setup['label']} [{PROFILES[profile]['short']}]", "rsm_config": rsm}
    keep = bool(os.environ.get("FASTTIER_KEEP_TMP"))
    key = tag  # log prefix
    try:
        log(f"[{key}] {setup['label']}, store {PROFILES[profile]['label']}: starting 3 brokers (Kafka {kc.version}, "
            f"-Xmx{kc.heap})")
        kc.start()
        topic_config = {"remote.storage.enable": "true", "min.insync.replicas": 2, "segment.bytes": 8 << 20}
        if not knob:
            kc.create_topic(BULK, config=topic_config, replica_assignment=ASSIGNMENT)
        kc.create_topic(PROBE, config=topic_config, replica_assignment=PROBE_ASSIGNMENT)
        for t, assignment in perf_topics(kc).items():
            kc.create_topic(t, config=topic_config, replica_assignment=assignment)
        for t in ([] if knob else [BULK]) + [PROBE] + list(perf_topics(kc)):
            kc.wait_for_isr(t, 3)
        topics = {PROBE: len(PROBE_ASSIGNMENT), **({} if knob else {BULK: PARTITIONS})}
        own = {n.proc.pid for n in kc.nodes}
        for i, node in enumerate(kc.nodes):  # names for the perf tool inside the zones (BROKER listener)
            z.set_hosts(i, {n.name: n.host for n in kc.nodes})

        if not knob:
            log(f"[{key}] warm-up: {a.warmup_secs:.0f} s of bulk + probe (not reported)")
            probe = child("probe", kc, a.warmup_secs, a)
            bulk = child("bulk", kc, a.warmup_secs, a)
            result_of(bulk, "warm-up producer", a.warmup_secs + 400)
            result_of(probe, "warm-up probe", a.warmup_secs + 200)
        else:
            log(f"[{key}] warm-up: {a.warmup_secs:.0f} s of probe (not reported)")
            result_of(child("probe", kc, a.warmup_secs, a), "warm-up probe", a.warmup_secs + 200)
        wait_same_size(kc, topics, stable=a.stable_secs)
        time.sleep(2 if a.quick else 5)

        log(f"[{key}] idle: {a.idle_secs:.0f} s, nothing produced")
        r["load_before_idle"] = load_note(own)
        wb, cb = minio_buckets(s3), cpu_now(kc, s3)
        z.reset_counters()
        t0 = time.monotonic()
        time.sleep(a.idle_secs)
        wa = minio_buckets(s3)  # first: it may wait for MinIO's metrics cache, and the window includes that
        c = z.counters()
        idle_secs = time.monotonic() - t0
        ca = cpu_now(kc, s3)
        r["idle"] = {
            "secs": round(idle_secs, 1),
            "cross_zone_bytes_per_sec": round(z.cross_zone_bytes(c) / idle_secs, 1),
            "s3_bytes_per_sec": round(z.s3_bytes(c) / idle_secs, 1),
            "links": {f"{x}-{y}": v for (x, y), v in c.items()},
            "wal_bucket": bucket_delta(wb, wa, WAL_BUCKET),
            "slow_bucket": bucket_delta(wb, wa, SLOW_BUCKET),
            "cpu_pct": cpu_pct(cb, ca),
        }
        w = r["idle"]["wal_bucket"]
        r["idle"]["wal_requests_per_sec"] = round((w["put_class"] + w["get_class"]) / idle_secs, 2)
        log(f"[{key}]   cross-zone {r['idle']['cross_zone_bytes_per_sec'] / 1e3:.1f} kB/s, S3 links "
            f"{r['idle']['s3_bytes_per_sec'] / 1e3:.1f} kB/s, "
            f"WAL bucket requests {r['idle']['wal_bucket']['requests']}, "
            f"CPU {r['idle']['cpu_pct']}")

        log(f"[{key}] probe alone: {a.probe_alone_secs:.0f} s")
        r["load_before_probe_alone"] = load_note(own)
        # the plugin's counters (JMX: a JVM per broker and read) only where the plugin has any to show
        jmx = (lambda: plugin_metrics(kc)) if setup["fast_tier"] else (lambda: [{} for _ in kc.nodes])
        m_idle = jmx()
        r["probe_alone"] = result_of(child("probe", kc, a.probe_alone_secs, a), "probe", a.probe_alone_secs + 200)
        m_probe = jmx()
        r["breakdown_alone"] = breakdown(m_idle, m_probe)
        describe_probe(key, r["probe_alone"])
        describe_breakdown(key, "probe alone", r["breakdown_alone"])

        m_last = m_probe
        if not knob:
            log(f"[{key}] bulk {a.rate} MB/s + probe: {a.secs:.0f} s")
            m_before = m_probe
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
            catch_up, sizes1 = wait_same_size(kc, topics, stable=a.stable_secs)
            wa = minio_buckets(s3)  # first: it may wait for MinIO's metrics cache
            cd = z.counters(directed=True)
            c = {(x, y): cd.get((x, y), 0) + cd.get((y, x), 0) for x, y in z.links}
            elapsed = time.monotonic() - t0
            ca = cpu_now(kc, s3)
            r["load_after_bulk"] = load_note(own)
            m_after = jmx()
            r["breakdown_bulk"] = breakdown(m_before, m_after)
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
                        segments = [kc.local_segments(i, t, p) for i in range(kc.n)]
                        differ[f"{t}-{p}"] = {"digests": d, "segments": segments}
            r["replicas_identical"] = not differ
            if differ:
                r["replicas_differ"] = differ
                keep = True
                log(f"[{key}]   REPLICAS DIFFER (sizes were equal): {differ}")
            keys = sorted({k for m in m_after for k in m
                           if k.startswith(("replication-", "wal-")) and k.endswith("-total")})
            r["plugin_deltas"] = {k: sum(m_after[i].get(k, 0) - m_before[i].get(k, 0) for i in range(kc.n))
                                  for k in keys}
            r["plugin_problems"] = {i: kc.plugin_problems(i)[:5] for i in range(kc.n) if kc.plugin_problems(i)}
            # the proxy's own account of partitions leaving and returning to the fast tier (whole run)
            r["fallback_log"] = {i: [line[:300] for line in lines[:20]] for i, lines in
                                 kc.grep_logs(r"fast replication: partition (falls back|back on the fast tier)").items()
                                 if lines}
            r["cost"] = cost(r)
            describe(r)
            describe_breakdown(key, "bulk + probe", r["breakdown_bulk"])
            m_last = m_after
        r["perf"] = {}
        for variant in (["default"] if knob else ["default", "tuned"]):
            props = {} if variant == "default" else a.tuned_props
            r["perf"][variant], m_last = perf_phase(kc, z, s3, a, key, variant, props, m_last)
        if knob or not r.get("plugin_deltas"):
            keys = sorted({k for m in m_last for k in m
                           if k.startswith(("replication-", "wal-")) and k.endswith("-total")})
            r["plugin_deltas"] = {k: sum(m_last[i].get(k, 0) - m_idle[i].get(k, 0) for i in range(kc.n)) for k in keys}
        r["relay"] = relay_stats(relay)
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
        f"undelivered {p['undelivered']}, errors {p['errors']}, "
        f"ack p50/p99 {p['ack_latency']['p50_ms']}/{p['ack_latency']['p99_ms']} ms); "
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


def ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}" if y and not math.isnan(x) and not math.isnan(y) else "n/a"


def round_trip_tables(results: dict) -> list[str]:
    """The acks=all round trip per store profile, its breakdown, and the cost knob (issue 13, "Measured")."""
    rs, ks = results["setups"], results.get("knob", [])
    parts = []
    rows = []
    for r in rs:
        stock = next((x for x in rs if x["setup"] == "stock" and x["profile"] == r["profile"]), None)
        pa, pb = r["probe_alone"]["delivery"]["acksall"], r["probe_bulk"]["delivery"]["acksall"]
        pd, pt = r["perf"]["default"], r["perf"]["tuned"]
        idle = r["idle"]
        rows.append([
            PROFILES[r["profile"]]["short"], SETUPS[r["setup"]]["label"],
            f"{pa['p50_ms']:.0f} / {pa['p99_ms']:.0f}", f"{pb['p50_ms']:.0f} / {pb['p99_ms']:.0f}",
            f"{pd['mbps']:.2f}", ratio(pd["mbps"], stock["perf"]["default"]["mbps"]) if stock else "n/a",
            f"{pt['mbps']:.2f}", ratio(pt["mbps"], stock["perf"]["tuned"]["mbps"]) if stock else "n/a",
            f"{r['cross_per_produced']:.3f} / {pd['cross_per_produced']:.3f}",
            f"{idle['wal_requests_per_sec']:.1f} ({idle['wal_requests_per_sec'] / 6:.2f})",
            f"{pd['wal_busy']['put_per_sec']:.1f} / {pd['wal_busy']['get_per_sec']:.1f}",
        ])
    parts.append(
        "acks=all through the fast tier, per store profile (probe: librdkafka, 100 B records, linger.ms 0; perf: "
        "Kafka's ProducerPerformance, --throughput -1, --record-size "
        f"{results['args']['perf_record_size']}, one per zone writing to its zone's leaders, at Kafka's defaults "
        f"and with {' '.join(f'{k}={v}' for k, v in results['args']['tuned_props'].items())}; MB/s appended to the "
        "leaders' logs; cross-zone bytes per produced byte in the bulk window / the default perf test; fast-tier "
        "requests in its bucket, idle per s (per follower-leader pair: 6 pairs) and busy PUT / GET per s during the "
        "default perf test):\n\n" + _md(
            ["store", "setup", "probe alone acks=all p50 / p99 ms", "probe + bulk acks=all p50 / p99 ms",
             "perf defaults MB/s", "/ stock", "perf documented MB/s", "/ stock", "cross-zone / produced",
             "fast-tier req/s idle (per pair)", "fast-tier PUT / GET per s busy"], rows))
    rows = []
    for r in rs + ks:
        if r["setup"] != "fastrepl":
            continue
        name = PROFILES[r["profile"]]["short"] + (f", interval {r['upload_interval_ms']} ms" if r["knob"] else "")
        windows = [("probe alone", r["breakdown_alone"])]
        if not r["knob"]:
            windows.append(("probe + bulk", r["breakdown_bulk"]))
        windows += [(f"perf {v}", p["breakdown"]) for v, p in r["perf"].items()]
        for what, b in windows:
            rows.append([name, what] + [fmt_ms(stage_mean(b, st)) for st, _, _ in STAGES] + [fmt_ms(round_trip_sum(b))])
    if rows:
        parts.append("One acks=all round trip through the fast tier, mean ms per stage from the plugin's counters "
                     "(<stage>-ms-total / <stage>-count, deltas over the window, summed over all brokers; n/a: not "
                     "exported by this plugin build); sum = wait + learn (PUT included) + GET + serve + append + "
                     "report:\n\n" + _md(["store", "window"] + [st.removeprefix("roundtrip-") for st, _, _ in STAGES]
                                        + ["sum"], rows))
    rows = []
    for r in ks:
        c, pd, pa = r["cost10"], r["perf"]["default"], r["probe_alone"]["delivery"]["acksall"]
        if not c:  # nothing produced: no per-byte terms
            rows.append([PROFILES[r["profile"]]["short"], r["upload_interval_ms"],
                         f"{pa['p50_ms']:.0f} / {pa['p99_ms']:.0f}", f"{pd['mbps']:.2f}"] + ["n/a"] * 9)
            continue
        rows.append([
            PROFILES[r["profile"]]["short"], r["upload_interval_ms"], f"{pa['p50_ms']:.0f} / {pa['p99_ms']:.0f}",
            f"{pd['mbps']:.2f}", f"{pd['wal_busy']['put_per_sec'] / 3:.1f} / {pd['wal_busy']['get_per_sec'] / 3:.1f}",
            f"{r['idle']['wal_requests_per_sec']:.1f} ({r['idle']['wal_requests_per_sec'] / 6:.2f})",
            f"{pd['cross_per_produced']:.4f}",
            f"{c['puts_per_broker_per_sec']:.0f} / {c['gets_per_broker_per_sec']:.0f}",
            f"{c['express_requests']:.4f}", f"{c['express_transfer']:.4f}", f"{c['cross_zone']:.4f}",
            f"{c['standard_requests']:.4f}", f"**{c['total']:.4f}**",
        ])
    if rows:
        parts.append(
            f"The cost knob (rsm.config.wal.upload.interval.ms), replication through the fast tier, a run per value: "
            f"probe alone and the perf test at Kafka's defaults; $/GB at {COST_MBPS_PER_BROKER:g} MB/s per broker = "
            "fast-tier requests at max(1000 / max(interval, mean PUT), measured) PUTs per broker per s and the busy "
            "GET-per-PUT ratio, plus the per-byte terms measured in the perf test:\n\n" + _md(
                ["store", "interval ms", "probe alone acks=all p50 / p99 ms", "perf defaults MB/s",
                 "measured PUT / GET per broker per s", "req/s idle (per pair)", "cross-zone / produced",
                 f"at {COST_MBPS_PER_BROKER:g} MB/s: PUT / GET per broker per s", "S3 Express requests $/GB",
                 "S3 Express transfer $/GB", "cross-zone $/GB", "S3 Standard requests $/GB", "total $/GB"], rows))
    relays = {r["profile"]: r["relay"] for r in rs + ks if r.get("relay")}
    if relays:
        parts.append("Requests the delay relay held (last count per profile, whole run): " + "; ".join(
            f"{PROFILES[k]['short']} {v}" for k, v in relays.items()) + ".")
    return parts


def tables(results: dict) -> str:
    rs = results["setups"]
    parts = round_trip_tables(results)
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


def pyplot():
    """matplotlib.pyplot; matplotlib is a bench-only dependency: installed with pip into
    $FASTTIER_CACHE/bench-python on first use."""
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
    return plt


def latency_chart(results: dict, path: Path) -> bool:
    """acks=all probe latency (alone, p50 and p99) against $ per GB at COST_MBPS_PER_BROKER MB/s per broker, one
    point per value of the cost knob; stock's probe latency of the same store profile as reference lines."""
    ks = sorted((r for r in results.get("knob", []) if r.get("cost10")), key=lambda r: r["cost10"]["total"])
    if not ks:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    x = [r["cost10"]["total"] for r in ks]
    for q, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        y = [r["probe_alone"]["delivery"]["acksall"][q] for r in ks]
        ax.plot(x, y, style, label=f"replication through the fast tier, {q[:3]}")
        for xi, yi, r in zip(x, y, ks):
            ax.annotate(f"{r['upload_interval_ms']} ms", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    prof = ks[0]["profile"]
    stock = next((r for r in results["setups"] if r["setup"] == "stock" and r["profile"] == prof), None)
    if stock:
        d = stock["probe_alone"]["delivery"]["acksall"]
        ax.axhline(d["p50_ms"], color="#7f7f7f", lw=1, label=f"stock replication p50 ({d['p50_ms']:.0f} ms)")
        ax.axhline(d["p99_ms"], color="#7f7f7f", lw=1, ls="--", label=f"stock replication p99 ({d['p99_ms']:.0f} ms)")
    ax.set_yscale("log")
    ax.set_xlabel(f"$ per GB produced at {COST_MBPS_PER_BROKER:g} MB/s per broker (labels: wal.upload.interval.ms)")
    ax.set_ylabel("acks=all probe latency alone, ms (log scale)")
    ax.set_title(f"acks=all latency against cost, store {PROFILES[prof]['label']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, f"2-core box, git {results['machine']['git']}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def chart(results: dict, path: Path) -> None:
    """Three panels (cross-zone bytes per produced byte, latency, $/GB) as a PNG."""
    plt = pyplot()

    rs = results["setups"]
    names = {"stock": "stock\n(slow tier)", "fasttier": "slow + fast tier,\nstock replication",
             "fastrepl": "replication\nthrough fast tier"}
    labels = [names[r["setup"]] + f"\n{PROFILES[r['profile']]['short']}" for r in rs]
    palette = {"stock": "#7f7f7f", "fasttier": "#1f77b4", "fastrepl": "#2ca02c"}
    colors = [palette[r["setup"]] for r in rs]
    fig, ax = plt.subplots(1, 3, figsize=(max(16, 2.2 * len(rs) * 3 / 2), 5.2))
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
                 f"wal.upload.interval.ms={a['upload_interval_ms'] or 'default'}, "
                 f"replication.fast.poll.ms={a['poll_ms'] or 'default'} "
                 f"(2-core box, git {results['machine']['git']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="stock,fastrepl", help=f"per store profile, of {','.join(SETUPS)}")
    ap.add_argument("--store-profiles", default=None,
                    help=f"of {','.join(PROFILES)} (default: all; --quick: express)")
    ap.add_argument("--upload-intervals", default=None,
                    help="values of the cost knob rsm.config.wal.upload.interval.ms, a fastrepl run each "
                         "(default 10,25,50,100; --quick: 50; empty: none)")
    ap.add_argument("--knob-profile", default="express", help="the store profile of the cost-knob runs")
    ap.add_argument("--tuned-producer-props", default="batch.size=1048576 linger.ms=20",
                    help="the documented producer settings for the second perf test (space-separated KEY=VALUE)")
    ap.add_argument("--perf-secs", type=float, default=None, help="seconds of each producer perf test (default 15)")
    ap.add_argument("--perf-record-size", type=int, default=1024)
    ap.add_argument("--notify-port", default="auto",
                    help="rsm.config.replication.fast.notify.port for fastrepl: auto (the harness's port, or a free "
                         "one; not set if the plugin build does not know the setting), 0 (not set: followers poll) "
                         "or a port")
    ap.add_argument("--rate", type=float, default=2.0, help="bulk producer MB/s of record values")
    ap.add_argument("--secs", type=float, default=None, help="seconds of bulk produce (default 20)")
    ap.add_argument("--batch-bytes", type=int, default=1000000, help="bulk producer batch.size")
    ap.add_argument("--probe-rate", type=float, default=10.0, help="records/s of each latency probe")
    ap.add_argument("--max-in-flight", type=int, default=1,
                    help="max.in.flight.requests.per.connection of the bulk producer and the probes")
    ap.add_argument("--idle-secs", type=float, default=None, help="default 12")
    ap.add_argument("--probe-alone-secs", type=float, default=None, help="default 15")
    ap.add_argument("--warmup-secs", type=float, default=None, help="default 5")
    ap.add_argument("--stable-secs", type=float, default=None,
                    help="replicas count as caught up when equal and unchanged this long (default 5)")
    ap.add_argument("--upload-interval-ms", type=int, default=None,
                    help="rsm.config.wal.upload.interval.ms of the runs per profile (default: the plugin's)")
    ap.add_argument("--poll-ms", type=int, default=None,
                    help="rsm.config.replication.fast.poll.ms (default: the plugin's)")
    ap.add_argument("--version", default=os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0"))
    ap.add_argument("--quick", action="store_true", help="smoke run (about 5 minutes): short phases, one store "
                                                         "profile, one knob value")
    ap.add_argument("--chart", default=str(REPO / "build" / "bench-zones" / "bench-zones.png"))
    ap.add_argument("--latency-chart", default=str(REPO / "build" / "bench-zones" / "bench-zones-latency.png"),
                    help="acks=all latency against cost per GB, one point per knob value")
    ap.add_argument("--docs", action="store_true",
                    help="write the charts to docs/img/bench-zones.png and docs/img/bench-zones-latency.png")
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
    quick = {"secs": 6, "idle_secs": 4, "probe_alone_secs": 5, "warmup_secs": 2, "perf_secs": 6, "stable_secs": 2,
             "store_profiles": "express", "upload_intervals": "50"}
    full = {"secs": 20, "idle_secs": 12, "probe_alone_secs": 15, "warmup_secs": 5, "perf_secs": 15, "stable_secs": 5,
            "store_profiles": ",".join(PROFILES), "upload_intervals": "10,25,50,100"}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.docs:
        a.chart, a.latency_chart = str(REPO / "docs" / "img" / "bench-zones.png"), str(
            REPO / "docs" / "img" / "bench-zones-latency.png")
    a.tuned_props = dict(kv.split("=", 1) for kv in a.tuned_producer_props.split())

    from bench import load_note, machine
    from harness import S3Server
    from harness.zones import Zones, bed_support, netem_support
    from plugin_pin import pin_plugin

    ok, why = bed_support()
    if not ok:
        raise SystemExit(f"the zones test bed is unavailable here: {why}")
    keys = [k for k in a.setups.split(",") if k]
    for k in keys:
        if k not in SETUPS:
            raise SystemExit(f"unknown setup {k!r} (have {', '.join(SETUPS)})")
    profiles = [p for p in a.store_profiles.split(",") if p]
    intervals = [int(x) for x in a.upload_intervals.split(",") if x]
    for p in profiles + ([a.knob_profile] if intervals else []):
        if p not in PROFILES:
            raise SystemExit(f"unknown store profile {p!r} (have {', '.join(PROFILES)})")
    results: dict = {"machine": machine(), "args": vars(a), "prices": PRICES, "netem": netem_support(),
                     "profiles": {p: PROFILES[p] for p in profiles}, "setups": [], "knob": []}
    log(f"machine {results['machine']}; load {load_note()}; netem: {results['netem']}")
    os.environ["MINIO_PROMETHEUS_AUTH_TYPE"] = "public"  # MinIO inherits it: bucket metrics without a token
    work = Path(tempfile.mkdtemp(prefix="ftbench-zones-", dir="/var/tmp"))
    results["plugin"] = pin_plugin(work)
    log(f"plugin: {results['plugin']}")
    a.notify_known = plugin_knows("replication.fast.notify.port")
    if not a.notify_known:
        log("this plugin build has no replication.fast.notify.port: followers poll")
    started = time.monotonic()
    planned = len(profiles) * len(keys) + len(intervals)
    order = profiles + ([a.knob_profile] if intervals and a.knob_profile not in profiles else [])
    try:
        with Zones(n=3, s3=True) as z, S3Server(buckets=[SLOW_BUCKET, WAL_BUCKET], data_dir=work / "s3",
                                               netns=z.s3_ns, host=z.s3_addr) as s3:
            for prof in order:
                relay = start_relay(z, s3, prof, work)
                endpoint = relay.endpoint if relay else None
                log(f"store profile {prof}: {PROFILES[prof]['label']}"
                    + (f" (delay relay {relay.address})" if relay else ""))
                try:
                    if prof in profiles:
                        for k in keys:
                            results["setups"].append(run_setup(k, z, s3, work, a, prof, endpoint, relay))
                    if prof == a.knob_profile:
                        for iv in intervals:
                            r = run_setup("fastrepl", z, s3, work, a, prof, endpoint, relay, upload_interval_ms=iv,
                                          knob=True)
                            r["cost10"] = cost_at_rate(r, COST_MBPS_PER_BROKER)
                            results["knob"].append(r)
                finally:
                    if relay:
                        relay.close()
    finally:
        results["total_secs"] = round(time.monotonic() - started)
        done = len(results["setups"]) + len(results["knob"])
        if os.environ.get("FASTTIER_KEEP_TMP") or done < planned:
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
            print(f"\nfasttier replication benchmark ({results['machine']['cpus']} CPUs, "
                  f"git {results['machine']['git']}, "
                  f"{results['total_secs']} s); results in {out}/results-{stamp}.json\n")
            print(text)
            if done == planned:
                for fn, path in ((chart, a.chart), (latency_chart, a.latency_chart)):
                    try:
                        if fn(results, Path(path)) is False:
                            log(f"no chart {path}: no cost-knob run with a cost")
                        else:
                            log(f"chart: {path}")
                    except Exception as e:  # noqa: BLE001 - the figures above stand without it
                        log(f"no chart {path}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
