"""fasttier fast-tier benchmark: prints figures, asserts nothing about speed. Entry point: make bench-fast.
What each figure means: docs/benchmarks.md, "Fast tier".

    python3 tests/bench/fast_tier.py [--only native,kafka] [--rates 1,10,50] [--secs 45] [--out build/bench-fast]

Sections
  native  (no broker) fasttier-bench-fast: process CPU of the uploader tailing 1,000 idle partitions, against
          the same process without the fast tier (baseline), then with a trickle of appends; on the
          in-memory store and on MinIO.
  kafka   3 brokers (KRaft, combined nodes) with the plugin (RSM + RLMM, fast tier on, WAL objects in a bucket
          of their own) on MinIO; a topic with RF=3, min.insync.replicas=2, remote storage on; a rate-limited
          producer (acks=all) at each target rate for --secs seconds. Per rate, from every broker's plugin
          metrics over JMX: upload lag (gauges and histogram), WAL PUTs/s, bytes per PUT, objects/s; from
          MinIO: the requests and bytes the WAL bucket received; the projected S3 Express One Zone cost per
          GB produced; CPU of brokers, MinIO and producer.
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

from bench import _md, load_note, machine, proc_cpu, target_dir  # noqa: E402
from harness import KafkaCluster, S3Server  # noqa: E402
from harness.jmx import Jmx  # noqa: E402
from plugin_pin import pin_plugin  # noqa: E402
from ratelimited import produce_at_rate  # noqa: E402
from s3costs import PRICES, bucket_delta, minio_buckets  # noqa: E402

MIB = 1 << 20
SLOW_BUCKET = "fbench-slow"
WAL_BUCKET = "fbench-wal"
TOPIC = "fast"
PARTITIONS = 6
VALUE_BYTES = 4096
UPLOAD_INTERVAL_MS = 250  # the plugin's default wal.upload.interval.ms (stated, not set)
LAG_BUCKETS = [100, 250, 500, 1000, 2500, 5000, 10000]  # wal-upload-lag-le-<N>ms



def log(msg: str) -> None:
    print(f"[bench-fast {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------- producer

def produce_main(a) -> int:
    """A child process: produce at --rate MB/s (of record values) for --secs, acks=all; JSON on stdout."""
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1 << 20,
        "compression.type": "none",
        "queue.buffering.max.kbytes": 128 * 1024,
        "log_level": 3,
    })
    print(json.dumps(produce_at_rate(p, TOPIC, a.partitions, a.rate, a.secs, a.value_bytes)))
    return 0


# ---------------------------------------------------------------------------------------------- native

def bench_fast_bin() -> str:
    p = target_dir() / "release" / "fasttier-bench-fast"
    if not p.exists():
        raise SystemExit(f"{p} not found: cargo build --release -p fasttier-bench --bin fasttier-bench-fast")
    return str(p)


def run_native(s3: S3Server, work: Path, results: dict, measure_secs: float) -> None:
    s3_sets = {
        "storage.backend": "s3",
        "s3.bucket": WAL_BUCKET,
        "s3.endpoint": s3.endpoint,
        "s3.region": s3.region,
        "s3.path.style": "true",
        "s3.access.key.id": s3.access_key,
        "s3.secret.access.key": s3.secret_key,
        "prefix": f"native-{uuid.uuid4().hex[:6]}/",
    }
    out = {}
    for label, sets in (("memory", {}), ("minio", s3_sets)):
        argv = [bench_fast_bin(), "--partitions", "1000", "--measure-secs", str(measure_secs), "--dir", str(work)]
        for k, v in sets.items():
            argv += ["--set", f"{k}={v}"]
        log(f"native ({label}): 1,000 partitions, baseline / idle / trickle, {measure_secs:.0f} s each")
        m0 = proc_cpu(s3._proc.pid)
        load = load_note()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"fasttier-bench-fast failed ({r.returncode}): {r.stderr[-2000:]}")
        lines = r.stdout.strip().splitlines()
        for line in lines[:-1]:
            log(f"  {line}")
        res = json.loads(lines[-1])
        res["minio_cpu_secs"] = round(proc_cpu(s3._proc.pid) - m0, 2)
        res["load_before"] = load
        out[label] = res
    results["native"] = out


# ---------------------------------------------------------------------------------------------- kafka

def snapshot(kc: KafkaCluster, jmxs: list[Jmx], s3: S3Server) -> dict:
    """Plugin metrics of every broker (JmxTool JVMs in parallel), MinIO's WAL-bucket metrics, CPU times."""
    res: list[dict] = [{} for _ in jmxs]

    def read(i):
        res[i] = jmxs[i].plugin()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(jmxs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "t": time.monotonic(),
        "plugin": res,
        "minio": minio_buckets(s3),
        "broker_cpu": [proc_cpu(n.proc.pid) for n in kc.nodes],
        "minio_cpu": proc_cpu(s3._proc.pid),
    }


def m(snap: dict, broker: int, name: str) -> float:
    return snap["plugin"][broker].get(name, math.nan)


def lag_bound(counts: dict[int, float], total: float, q: float):
    """The smallest histogram bound holding at least q of the batches (None: beyond the last bucket)."""
    for b in LAG_BUCKETS:
        if total > 0 and counts[b] >= q * total:
            return b
    return None


def cost(put_class: float, get_class: float, upload_bytes: float, gb_produced: float) -> dict:
    if gb_produced <= 0:
        return {}
    put = put_class / 1000 * PRICES["express_put_per_1000"] / gb_produced
    get = get_class / 1000 * PRICES["express_get_per_1000"] / gb_produced
    upload = upload_bytes / 2**30 * PRICES["express_upload_per_gb"] / gb_produced
    return {"put_per_gb": put, "get_per_gb": get, "upload_per_gb": upload, "total_per_gb": put + get + upload}


def phase(kc: KafkaCluster, jmxs: list[Jmx], s3: S3Server, rate: float, secs: float, leaders: dict) -> dict:
    before = snapshot(kc, jmxs, s3)
    load = load_note({n.proc.pid for n in kc.nodes})
    argv = [sys.executable, str(Path(__file__).resolve()), "--produce", "--bootstrap", kc.bootstrap_servers(),
            "--rate", str(rate), "--secs", str(secs), "--partitions", str(PARTITIONS),
            "--value-bytes", str(VALUE_BYTES)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 300)
    if r.returncode != 0:
        raise RuntimeError(f"producer failed ({r.returncode}): {r.stderr[-2000:]}")
    prod = json.loads(r.stdout.strip().splitlines()[-1])
    # per-second figures over the producer's own window (first send to last ack); the WAL is idle outside it
    window = prod["secs"]
    # everything read is uploaded within one interval; the plugin's metrics snapshot is cached for 1 s
    time.sleep(2.5)
    after = snapshot(kc, jmxs, s3)
    kc.check_alive()

    def d(name, b):
        return m(after, b, name) - m(before, b, name)

    cpu_secs = after["t"] - before["t"]  # CPU shares over the whole span between the snapshots

    brokers = []
    hist = {b: 0.0 for b in LAG_BUCKETS}
    lag_count = lag_sum = 0.0
    for b in range(kc.n):
        objs, puts = d("wal-objects-total", b), d("wal-put-requests-total", b)
        count = d("wal-upload-lag-count", b)
        lag_count += count
        lag_sum += d("wal-upload-lag-sum-ms", b)
        for bound in LAG_BUCKETS:
            hist[bound] += d(f"wal-upload-lag-le-{bound}ms", b)
        brokers.append({
            "broker": b,
            "leads": leaders.get(b, []),
            "wal_put_requests_per_sec": round(puts / window, 2),
            "wal_objects_per_sec": round(objs / window, 2),
            "bytes_per_put": round(d("wal-bytes-total", b) / objs) if objs else 0,
            "record_mbps": round(d("wal-record-bytes-total", b) / 1e6 / window, 2),
            "lag_batches": count,
            "lag_p50_ms": m(after, b, "wal-upload-lag-p50-ms"),
            "lag_p99_ms": m(after, b, "wal-upload-lag-p99-ms"),
            "lag_max_ms": m(after, b, "wal-upload-lag-max-ms"),
            "wal_errors": d("wal-errors-total", b),
            "wal_behind_ms_after": m(after, b, "wal-behind-ms"),
            "cpu_core_pct": round(100 * (after["broker_cpu"][b] - before["broker_cpu"][b]) / cpu_secs, 1),
        })
    wal = bucket_delta(before["minio"], after["minio"], WAL_BUCKET)
    reqs, put_class, get_class = wal["requests"], wal["put_class"], wal["get_class"]
    record_bytes = sum(d("wal-record-bytes-total", b) for b in range(kc.n))
    wal_bytes = sum(d("wal-bytes-total", b) for b in range(kc.n))
    upload_bytes = wal["received_bytes"] or wal_bytes
    gb = record_bytes / 2**30
    res = {
        "target_mbps": rate,
        "window_secs": round(window, 1),
        "producer": prod,
        "brokers": brokers,
        "lag": {
            "batches": lag_count,
            "mean_ms": round(lag_sum / lag_count, 1) if lag_count else math.nan,
            "fraction_le": {b: round(hist[b] / lag_count, 4) if lag_count else math.nan for b in LAG_BUCKETS},
            "p50_le_ms": lag_bound(hist, lag_count, 0.50),
            "p99_le_ms": lag_bound(hist, lag_count, 0.99),
            "gauge_p99_ms_max_over_brokers": max(x["lag_p99_ms"] for x in brokers),
            "gauge_p50_ms_max_over_brokers": max(x["lag_p50_ms"] for x in brokers),
        },
        "wal_bucket_requests": reqs,
        "wal_bucket_requests_per_sec": round(sum(reqs.values()) / window, 2),
        "wal_bucket_put_class_per_sec": round(put_class / window, 2),
        "wal_bucket_get_class_per_sec": round(get_class / window, 2),
        "wal_bucket_received_bytes": upload_bytes,
        "record_bytes_uploaded": record_bytes,
        "wal_bytes": wal_bytes,
        "cost": cost(put_class, get_class, upload_bytes, gb),
        "minio_cpu_core_pct": round(100 * (after["minio_cpu"] - before["minio_cpu"]) / cpu_secs, 1),
        "cpu_span_secs": round(cpu_secs, 1),
        "load_before": load,
    }
    return res


def idle_phase(kc: KafkaCluster, jmxs: list[Jmx], s3: S3Server, secs: float) -> dict:
    """No producer: what the brokers (fast tier on, partitions led, nothing new) and the WAL bucket see."""
    before = snapshot(kc, jmxs, s3)
    time.sleep(secs)
    after = snapshot(kc, jmxs, s3)
    span = after["t"] - before["t"]
    reqs = {k.split(":", 1)[1]: v - before["minio"].get(k, 0.0) for k, v in after["minio"].items()
            if k.startswith("requests:") and v - before["minio"].get(k, 0.0) > 0}
    return {
        "secs": round(span, 1),
        "broker_cpu_core_pct": [round(100 * (a - b) / span, 1)
                                for a, b in zip(after["broker_cpu"], before["broker_cpu"])],
        "minio_cpu_core_pct": round(100 * (after["minio_cpu"] - before["minio_cpu"]) / span, 1),
        "wal_put_requests": [m(after, i, "wal-put-requests-total") - m(before, i, "wal-put-requests-total")
                             for i in range(kc.n)],
        "wal_bucket_requests_per_sec": {k: round(v / span, 2) for k, v in reqs.items()},
    }


def describe(res: dict) -> None:
    p = res["producer"]
    lag = res["lag"]
    log(f"  load before: {res['load_before']}")
    log(f"  target {res['target_mbps']} MB/s: achieved {p['achieved_mbps']} MB/s over {p['secs']} s "
        f"(producer ack latency p50 {p['ack_latency_p50_ms']} ms, p99 {p['ack_latency_p99_ms']} ms, "
        f"buffer full {p['buffer_full']}x, errors {p['errors']}, producer CPU {p['cpu_secs']} s)")
    for b in res["brokers"]:
        log(f"  broker {b['broker']} (leads {b['leads']}): {b['wal_put_requests_per_sec']} WAL PUTs/s, "
            f"{b['wal_objects_per_sec']} objects/s, {b['bytes_per_put']} B/object, {b['record_mbps']} MB/s of log; "
            f"lag gauges p50 {b['lag_p50_ms']} / p99 {b['lag_p99_ms']} / max {b['lag_max_ms']} ms; "
            f"CPU {b['cpu_core_pct']} % of a core")
    log(f"  lag histogram ({lag['batches']:.0f} batches): p50 <= {lag['p50_le_ms']} ms, p99 <= {lag['p99_le_ms']} ms, "
        f"mean {lag['mean_ms']} ms; fraction <= bound {lag['fraction_le']}")
    c = res["cost"]
    if c:
        log(f"  WAL bucket: {res['wal_bucket_requests']} ({res['wal_bucket_requests_per_sec']} requests/s); "
            f"S3 Express One Zone per GB produced: requests ${c['put_per_gb'] + c['get_per_gb']:.4f} "
            f"+ upload ${c['upload_per_gb']:.4f} = ${c['total_per_gb']:.4f}")


def run_kafka(s3: S3Server, work: Path, results: dict, rates: list[float], secs: float) -> None:
    kc = KafkaCluster(
        3, plugin=True, s3=s3, jmx=True, name="fbench", base_dir=work / "kafka",
        prefix=f"fbench-{uuid.uuid4().hex[:6]}/",
        rsm_config={"wal.bucket": WAL_BUCKET},
    )
    try:
        log(f"kafka: starting 3 brokers (Kafka {kc.version}, -Xmx{kc.heap}) with the plugin, fast tier on, "
            f"WAL objects in bucket {WAL_BUCKET}")
        kc.start()
        jmxs = [Jmx(kc, i) for i in range(kc.n)]
        kc.create_topic(TOPIC, PARTITIONS, replication_factor=3,
                        config={"remote.storage.enable": "true", "min.insync.replicas": 2})
        kc.wait_for_isr(TOPIC, 3)
        leaders: dict[int, list[int]] = {}
        for p in range(PARTITIONS):
            leaders.setdefault(kc.leader_of(TOPIC, p), []).append(p)
        log(f"topic {TOPIC}: {PARTITIONS} partitions, RF=3, min.insync.replicas=2; leaders {leaders}")
        # warm-up (not reported): every leader's uploader has its partitions and its stream open
        log("warm-up: 10 s at 1 MB/s (not reported)")
        phase(kc, jmxs, s3, 1, 10, leaders)
        time.sleep(5)
        idle = idle_phase(kc, jmxs, s3, 20)
        log(f"idle (no producer, 20 s): broker CPU {idle['broker_cpu_core_pct']} % of a core, MinIO "
            f"{idle['minio_cpu_core_pct']} %, WAL PUTs {idle['wal_put_requests']}, WAL bucket requests/s "
            f"{idle['wal_bucket_requests_per_sec']}")
        out = []
        for rate in rates:
            log(f"rate {rate} MB/s for {secs:.0f} s")
            res = phase(kc, jmxs, s3, rate, secs, leaders)
            describe(res)
            out.append(res)
            time.sleep(3)
        problems = {i: kc.plugin_problems(i) for i in range(kc.n)}
        results["kafka"] = {
            "brokers": kc.n, "kafka": kc.version, "heap": kc.heap, "partitions": PARTITIONS,
            "value_bytes": VALUE_BYTES, "leaders": leaders, "idle": idle, "phases": out,
            "plugin_problems": {i: v[:5] for i, v in problems.items() if v},
        }
    finally:
        kc.close(keep_dir=bool(os.environ.get("FASTTIER_KEEP_TMP")))


# ---------------------------------------------------------------------------------------------- report

def table(results: dict) -> str:
    parts = []
    nat = results.get("native")
    if nat:
        rows = []
        for label, r in nat.items():
            a = r.get("active") or {}
            w = a.get("window", {})
            lag = a.get("lag", {})
            rows.append([
                label, r["partitions"], f"{r['baseline']['core_pct']:.1f} %", f"{r['idle']['core_pct']:.1f} %",
                f"{r['idle_minus_baseline_core_pct']:+.1f}", f"{r['idle']['store_requests_per_sec']}",
                f"{w.get('core_pct', math.nan):.1f} %", f"{a.get('wal_record_bytes_per_sec', 0) / 1e3:.0f} kB/s",
                f"{a.get('wal_objects_per_sec')}",
                f"p50 <= {lag.get('p50_le_ms')} ms, p99 <= {lag.get('p99_le_ms')} ms",
            ])
        parts.append("Tailing 1,000 partitions, no broker (CPU = % of one core, utime+stime of the process):\n\n" + _md(
            ["store", "partitions", "baseline", "idle", "idle - baseline", "idle store req/s", "trickle",
             "trickle log rate", "objects/s", "trickle lag (histogram)"], rows))
    k = results.get("kafka")
    if k:
        rows = []
        for ph in k["phases"]:
            p, lag, c = ph["producer"], ph["lag"], ph["cost"]
            b = ph["brokers"]
            rows.append([
                f"{ph['target_mbps']}", f"{p['achieved_mbps']}",
                f"{lag['gauge_p50_ms_max_over_brokers']:.0f} / {lag['gauge_p99_ms_max_over_brokers']:.0f}",
                f"<= {lag['p50_le_ms']} / <= {lag['p99_le_ms']}",
                ", ".join(f"{x['wal_put_requests_per_sec']:.1f}" for x in b),
                ", ".join(f"{x['bytes_per_put'] / 1e3:.0f}" for x in b),
                ", ".join(f"{x['wal_objects_per_sec']:.1f}" for x in b),
                f"{ph['wal_bucket_put_class_per_sec']} / {ph['wal_bucket_get_class_per_sec']}",
                f"${c.get('total_per_gb', math.nan):.4f}",
                ", ".join(f"{x['cpu_core_pct']:.0f}" for x in b) + f" (MinIO {ph['minio_cpu_core_pct']:.0f})",
            ])
        parts.append(
            f"3 brokers, RF=3, acks=all, {k['partitions']} partitions, {k['value_bytes']} B values, "
            f"wal.upload.interval.ms={UPLOAD_INTERVAL_MS} (per-broker columns: broker 0, 1, 2):\n\n" + _md(
                ["target MB/s", "achieved MB/s", "lag p50 / p99 ms (gauges, worst broker)",
                 "lag p50 / p99 ms (histogram, all)", "WAL PUTs/s", "kB per PUT", "objects/s",
                 "WAL bucket PUT-class / GET-class req/s", "S3 Express $/GB produced", "CPU % of a core"], rows))
        idle = k.get("idle")
        if idle:
            parts.append(f"Idle (no producer, {idle['secs']} s): broker CPU {idle['broker_cpu_core_pct']} % of a core, "
                         f"MinIO {idle['minio_cpu_core_pct']} %, WAL bucket requests/s "
                         f"{idle['wal_bucket_requests_per_sec']}.")
        ten = [ph for ph in k["phases"] if ph["target_mbps"] == 10]
        if ten:
            ph = ten[0]
            target = UPLOAD_INTERVAL_MS + 1000
            g = ph["lag"]["gauge_p99_ms_max_over_brokers"]
            parts.append(f"Target at 10 MB/s: lag p99 <= wal.upload.interval.ms + 1 s = {target} ms; measured "
                         f"{g:.0f} ms (worst broker's gauge), histogram p99 <= {ph['lag']['p99_le_ms']} ms: "
                         f"{'met' if g <= target else 'NOT met'} (achieved {ph['producer']['achieved_mbps']} MB/s).")
        parts.append("Prices: " + ", ".join(f"{k}={v}" for k, v in PRICES.items()))
    return "\n\n".join(parts)


def report(results: dict, out: Path) -> None:
    """Writes results-<stamp>.json and figures-<stamp>.md to `out` and prints the figures."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))
    figures = table(results)
    (out / f"figures-{stamp}.md").write_text(figures + "\n")
    m = results["machine"]
    print(f"\nfasttier fast-tier benchmark ({m['cpus']} CPUs, git {m['git']}, {results['total_secs']} s); "
          f"results in {out}/results-{stamp}.json")
    print(figures)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="native,kafka")
    ap.add_argument("--rates", default="1,10,50", help="target produce rates, MB/s")
    ap.add_argument("--secs", type=float, default=45, help="seconds per rate")
    ap.add_argument("--native-secs", type=float, default=10, help="measured window of the native bench")
    ap.add_argument("--out", default=str(REPO / "build" / "bench-fast"))
    # producer child mode
    ap.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--partitions", type=int, default=PARTITIONS, help=argparse.SUPPRESS)
    ap.add_argument("--value-bytes", type=int, default=VALUE_BYTES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.produce:
        return produce_main(a)
    only = set(a.only.split(","))
    rates = [float(r) if "." in r else int(r) for r in a.rates.split(",")]
    results: dict = {"machine": machine(), "prices": PRICES,
                     "settings": {"rates": rates, "secs": a.secs, "value_bytes": VALUE_BYTES,
                                  "partitions": PARTITIONS, "upload_interval_ms": UPLOAD_INTERVAL_MS}}
    log(f"machine {results['machine']}  load {load_note()}")
    # not /tmp/fasttier-*: other sessions' clean-ups of test clusters must not take the benchmark's with them
    work = Path(tempfile.mkdtemp(prefix="ftbench-fast-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    os.environ["MINIO_PROMETHEUS_AUTH_TYPE"] = "public"  # MinIO inherits it: bucket request counts without a token
    if "kafka" in only:
        results["plugin"] = pin_plugin(work)
        log(f"plugin: {results['plugin']}")
    started = time.monotonic()
    try:
        with S3Server(buckets=[SLOW_BUCKET, WAL_BUCKET], data_dir=work / "s3") as s3:
            if "native" in only:
                run_native(s3, work, results, a.native_secs)
            if "kafka" in only:
                run_kafka(s3, work, results, rates, a.secs)
    finally:
        if not os.environ.get("FASTTIER_KEEP_TMP"):
            shutil.rmtree(work, ignore_errors=True)
        results["total_secs"] = round(time.monotonic() - started)
        report(results, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
