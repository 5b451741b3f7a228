"""fasttier benchmarks: prints figures (ratios against baselines measured in the same run), asserts nothing
about speed. Entry point: tests/bench/run.sh (make bench). What each figure means: docs/benchmarks.md.

    python3 tests/bench/bench.py [--only native,kafka,aiven] [--quick] [--out build/bench] [--wait-quiet 0]

Sections
  native  (no broker running) fasttier-bench: segment copy through the engine vs raw multipart PUT (same
          client, same part size and concurrency); peak RSS of a 1 GiB copy; RSS per open stream.
  kafka   one broker (RF=1) with the plugin on MinIO; a 1-partition and a 4-partition topic produced
          (a few hundred MB each), fully tiered; consumers read from offset 0 to the local log start
          (every byte served by the plugin), while the broker's RSS and heap are sampled; in between,
          raw GET baselines of the very same .log objects by the plugin's S3 client (fasttier-bench get).
  aiven   side by side with Aiven's tiered-storage plugin (tests/bench/aiven.py; skipped with a message
          when its build in ../shared/baselines/ is absent): cold remote reads on Kafka 4.1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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

from harness import KafkaCluster, S3Server, free_ports, wait_until  # noqa: E402
from harness.tiering import topic_objects, wait_all_tiered  # noqa: E402

MIB = 1 << 20
BUCKET = "fasttier-bench"

# The plugin's read settings are its defaults (stated here so the figures say what they were run with).
RSM = {
    "chunk.bytes": 4 * MIB,
    "read.ahead.chunks": 4,
    "cache.bytes": 128 * MIB,
    "upload.part.bytes": 8 * MIB,
    "upload.concurrency": 4,
}
SEGMENT_BYTES = 64 * MIB
VALUE_BYTES = 32768  # large records: the Python consumer must not be what limits the read (see docs)
BROKER_HEAP = "1g"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def target_dir() -> Path:
    cache = Path(os.environ.get("FASTTIER_CACHE", str(Path.home() / ".cache" / "fasttier")))
    return Path(os.environ.get("CARGO_TARGET_DIR", str(cache / "target")))


def bench_bin() -> str:
    p = target_dir() / "release" / "fasttier-bench"
    if not p.exists():
        raise SystemExit(f"{p} not found: cargo build --release -p fasttier-bench")
    return str(p)


# ---------------------------------------------------------------------------------------------- machine

def _jvm_cpu(own: set[int]) -> dict[int, float]:
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in own:
            continue
        try:
            if not os.readlink(d / "exe").endswith("/java"):
                continue
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d.name)] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def other_jvms(own: set[int], sample: float = 0.5) -> tuple[int, int]:
    """(JVMs running that are not ours, of which busy: used >= 10% of a CPU during `sample` seconds). An idle
    Gradle daemon counts as running, not as busy."""
    a = _jvm_cpu(own)
    time.sleep(sample)
    b = _jvm_cpu(own)
    busy = sum(1 for pid, t in b.items() if t - a.get(pid, t) >= 0.1 * sample)
    return len(b), busy


def load_note(own: set[int] = frozenset()) -> dict:
    n, busy = other_jvms(set(own))
    return {"other_jvms": n, "busy_other_jvms": busy, "loadavg1": round(os.getloadavg()[0], 2)}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def java_thread_names(pid: int) -> dict[int, str]:
    """{native thread id: Java thread name} from `jcmd <pid> Thread.print` (Linux truncates the names in
    /proc to 15 characters, which makes Kafka's network and request-handler threads indistinguishable)."""
    r = subprocess.run(["jcmd", str(pid), "Thread.print"], capture_output=True, text=True, timeout=60)
    out = {}
    for m in re.finditer(r'^"(.+?)" .*? nid=(0x[0-9a-fA-F]+|[0-9]+) ', r.stdout, re.M):
        out[int(m.group(2), 0)] = m.group(1)
    return out


def thread_cpu(pid: int, names: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds (user+system) of each thread group of a process, by thread name with digits dropped
    (e.g. "data-plane-kafka-network-thread-N-ListenerName(BROKER)-PLAINTEXT-N", "fasttier-rt-N"); Java
    names from `names` where known."""
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            stat = (t / "stat").read_text()
        except OSError:
            continue
        name = (names or {}).get(int(t.name)) or stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        secs = (int(fields[11]) + int(fields[12])) / CLK_TCK
        key = re.sub(r"[0-9]+", "N", name)
        out[key] = out.get(key, 0.0) + secs
    return out


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    d = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in after}
    return {k: v for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v > 0}


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
    except (OSError, AttributeError):
        pass
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_mib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git": rev.stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# ---------------------------------------------------------------------------------------------- native

def native(s3: S3Server, prefix: str, *extra: str, sets: dict | None = None, endpoint: str | None = None,
           argv_prefix: tuple[str, ...] = ()) -> dict:
    """Runs fasttier-bench (under argv_prefix, e.g. `ip netns exec <ns>`, against endpoint if given)."""
    cfg = {
        "s3.bucket": BUCKET,
        "s3.endpoint": endpoint or s3.endpoint,
        "s3.region": s3.region,
        "s3.path.style": "true",
        "s3.access.key.id": s3.access_key,
        "s3.secret.access.key": s3.secret_key,
        "prefix": prefix,
        **{k: str(v) for k, v in RSM.items()},
        **{k: str(v) for k, v in (sets or {}).items()},
    }
    argv = list(argv_prefix) + [bench_bin()]
    for k, v in cfg.items():
        argv += ["--set", f"{k}={v}"]
    argv += list(extra)
    m0, c0, t0 = proc_cpu(s3._proc.pid), children_cpu(), time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    m1, c1, t1 = proc_cpu(s3._proc.pid), children_cpu(), time.monotonic()
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(extra)} failed ({r.returncode}):\n{r.stderr}\n{r.stdout}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["cpu"] = {"wall_secs": t1 - t0, "minio_secs": m1 - m0, "client_secs": c1 - c0}
    return out


def run_native(s3: S3Server, work: Path, results: dict, quick: bool) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:6]}/"
    seg = work / "00000000000000000000.log"
    mib = 256 if quick else 1024
    log(f"native: writing a {mib} MiB stand-in segment")
    native(s3, prefix, "mkfile", "--file", str(seg), "--mib", str(mib))
    results["load_native"] = load_note()
    log(f"native: segment copy, engine vs raw PUT ({mib} MiB, 3 runs each, alternating)  load={results['load_native']}")
    results["copy"] = native(s3, prefix, "copy", "--file", str(seg), "--reps", "3")
    log(f"  engine {fmt_list(results['copy']['engine_mbps'])} MB/s, "
        f"raw PUT {fmt_list(results['copy']['raw_put_mbps'])} MB/s")
    log(f"native: peak RSS of copying {mib} MiB through the engine")
    results["mem_copy"] = native(s3, prefix, "mem-copy", "--file", str(seg), "--keep")
    log(f"  peak delta {results['mem_copy']['peak_delta_mib']:.1f} MiB")
    log("native: RSS per open stream")
    results["mem_streams"] = native(s3, prefix, "mem-streams", "--n", "4,16" if quick else "16,40")
    for r in results["mem_streams"]["runs"]:
        log(f"  N={r['n']}: {r['per_stream_mib']:.2f} MiB/stream = {r['per_stream_chunks']:.2f} chunks")
    # The read path against a distant store, modelled by 20 ms before every GET (fasttier-bench
    # --get-latency-ms): does the engine keep 1 + read.ahead.chunks GETs in flight, like the raw reader?
    log("native: engine read vs raw GETs with 20 ms per GET (model of a distant store), first 256 MiB")
    results["latency_model"] = []
    tm = ["--topic", "bench-mem", "--topic-id", "QmVuY2hNZW1Ub3BpY0lkMQ", "--limit-bytes", str(256 * MIB)]
    for ra in (1, 4):
        for mode, extra in (("engine", ["--fetch-bytes", str(16 * MIB)]), ("seq", [])):
            r = native(s3, prefix, "--get-latency-ms", "20", "get", *tm, "--mode", mode, *extra,
                       sets={"read.ahead.chunks": ra})
            r["read_ahead_chunks"] = ra
            results["latency_model"].append(r)
            log(f"  read-ahead {ra}: {mode} {r['mbps']:.0f} MB/s")
    for f in work.glob("00000000000000000000.*"):
        f.unlink()
    delete_prefix(s3, prefix)


def delete_prefix(s3: S3Server, prefix: str) -> None:
    keys = s3.keys(prefix)
    for i in range(0, len(keys), 1000):
        s3.client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def fmt_list(v) -> str:
    return "/".join(f"{x:.0f}" for x in v)


# ---------------------------------------------------------------------------------------------- kafka

def produce(kc: KafkaCluster, topic: str, partitions: int, bytes_per_partition: int, seed: int | None = None) -> int:
    """Incompressible VALUE_BYTES values, no keys, round-robin over partitions. Returns records produced.
    With seed, the values are the same bytes on every call (the same data for two clusters compared)."""
    from confluent_kafka import Producer

    p = Producer(kc.client_config(**{
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1 << 20,
        "compression.type": "none",
        "queue.buffering.max.kbytes": 256 * 1024,
        "message.max.bytes": 2 << 20,
    }))
    rnd = random.Random(seed) if seed is not None else None
    pool = [rnd.randbytes(VALUE_BYTES) if rnd else os.urandom(VALUE_BYTES) for _ in range(512)]
    per = bytes_per_partition // VALUE_BYTES + 1
    errors: list[str] = []

    def cb(err, msg):
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    n = 0
    for i in range(per):
        v = pool[i % len(pool)]
        for part in range(partitions):
            while True:
                try:
                    p.produce(topic, value=i.to_bytes(8, "big") + v[8:], partition=part, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(300)
    if left or errors:
        raise RuntimeError(f"produce {topic}: {left} undelivered, errors {errors}")
    return n


class BrokerSampler:
    """Samples the broker JVM's VmRSS (/proc) every 100 ms and its heap (jstat -gc) every 250 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[int] = []
        self.heap_used: list[float] = []
        self.heap_committed: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._jstat = None

    @staticmethod
    def rss_kib(pid: int) -> int:
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        return int(m.group(1)) if m else 0

    @staticmethod
    def heap_kib(pid: int) -> tuple[float, float]:
        r = subprocess.run(["jstat", "-gc", str(pid)], capture_output=True, text=True)
        return BrokerSampler._parse_jstat(r.stdout)

    @staticmethod
    def _parse_jstat(text: str) -> tuple[float, float]:
        lines = [ln.split() for ln in text.strip().splitlines() if ln.strip()]
        if len(lines) < 2:
            return (0.0, 0.0)
        head, vals = lines[0], lines[-1]
        d = dict(zip(head, vals))
        f = lambda k: float(d.get(k, 0) or 0)  # noqa: E731
        used = f("S0U") + f("S1U") + f("EU") + f("OU")
        committed = f("S0C") + f("S1C") + f("EC") + f("OC")
        return used, committed

    def start(self) -> "BrokerSampler":
        self._jstat = subprocess.Popen(["jstat", "-gc", str(self.pid), "250"], stdout=subprocess.PIPE, text=True)
        self._t.start()
        threading.Thread(target=self._read_jstat, daemon=True).start()
        return self

    def _read_jstat(self) -> None:
        head = None
        for line in self._jstat.stdout:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "S0C":
                head = parts
                continue
            if head:
                used, committed = self._parse_jstat(" ".join(head) + "\n" + line)
                self.heap_used.append(used)
                self.heap_committed.append(committed)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss.append(self.rss_kib(self.pid))
            except OSError:
                break
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)
        if self._jstat:
            self._jstat.terminate()
            self._jstat.wait(5)


def nmt(pid: int) -> dict[str, float]:
    """Committed MiB per category from `jcmd <pid> VM.native_memory summary` (plus "Total")."""
    r = subprocess.run(["jcmd", str(pid), "VM.native_memory", "summary", "scale=MB"], capture_output=True,
                       text=True, timeout=60)
    out: dict[str, float] = {}
    m = re.search(r"Total: reserved=(\d+)MB, committed=(\d+)MB", r.stdout)
    if m:
        out["Total"] = float(m.group(2))
    for m in re.finditer(r"^-\s+(.+?) \(reserved=(\d+)MB, committed=(\d+)MB\)", r.stdout, re.M):
        out[m.group(1).strip()] = float(m.group(3))
    return out


class Jmx:
    """Reads broker and plugin metrics over JMX with Kafka's own JmxTool (one JVM per call)."""

    def __init__(self, kc: KafkaCluster, port: int) -> None:
        self.kc = kc
        self.url = f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{port}/jmxrmi"

    def read(self, names: list[str]) -> dict[str, float]:
        args = ["--jmx-url", self.url, "--one-time", "true", "--report-format", "properties"]
        for n in names:
            args += ["--object-name", n]
        r = self.kc.run_tool("org.apache.kafka.tools.JmxTool", args, timeout=120)
        out: dict[str, float] = {}
        for line in r.stdout.splitlines():
            if "=" not in line:
                continue
            k, _, v = line.rpartition("=")
            try:
                out[k.strip()] = float(v)
            except ValueError:
                continue
        if not out:
            log(f"JmxTool gave nothing (rc={r.returncode}): {r.stderr[-500:]}")
        return out


def plugin_metric(snapshot: dict[str, float], name: str) -> float:
    for k, v in snapshot.items():
        if "plugins" in k and k.endswith(f":{name}") or ("plugins" in k and k.endswith(f"name={name}:Value")):
            return v
    # JmxTool property format: <objectname>:<attribute>=value; plugin metrics are attributes of one MBean
    for k, v in snapshot.items():
        if "plugins" in k and k.rsplit(":", 1)[-1] == name:
            return v
    return float("nan")


def topic_metric(snapshot: dict[str, float], name: str, topic: str) -> float:
    """A BrokerTopicMetrics count; 0 before Kafka registered it (it does on first use)."""
    for k, v in snapshot.items():
        if f"name={name}" in k and f"topic={topic}" in k and k.endswith(":Count"):
            return v
    return 0.0


PLUGIN_METRICS = [
    "fetch-streams-total", "fetch-bytes-total", "cache-hits-total", "cache-misses-total",
    "store-get-requests-total", "store-get-bytes-total", "index-fetches-total", "cache-bytes", "open-streams",
    "fetch-errors-total",
]


def metrics_delta(before: dict, after: dict, topic: str) -> dict:
    d = {m: plugin_metric(after, m) - plugin_metric(before, m) for m in PLUGIN_METRICS}
    d["cache-bytes"] = plugin_metric(after, "cache-bytes")
    for name in ("RemoteFetchRequestsPerSec", "RemoteFetchBytesPerSec", "TotalFetchRequestsPerSec"):
        d[name] = topic_metric(after, name, topic) - topic_metric(before, name, topic)
    return d


def consume(kc: KafkaCluster, topic: str, groups: list[dict[int, int]], max_partition_fetch_bytes: int,
            bootstrap: str | None = None, argv_prefix: tuple[str, ...] = (),
            fetch_max_bytes: int | None = None) -> dict:
    """One consumer process per group ({partition: end}), all started at once; returns the slowest.
    argv_prefix (e.g. `ip netns exec <ns>`) runs the consumers elsewhere, bootstrap is what they connect to.
    fetch_max_bytes: the consumers' fetch.max.bytes (default: consume.py's 64 MiB)."""
    procs = []
    errs = []
    for g in groups:
        errs.append(tempfile.TemporaryFile())
        end = ",".join(f"{p}:{e}" for p, e in sorted(g.items()))
        procs.append(subprocess.Popen(
            list(argv_prefix) + [
             sys.executable, str(HERE / "consume.py"), "--bootstrap", bootstrap or kc.bootstrap_servers(),
             "--topic", topic,
             "--end", end, "--max-partition-fetch-bytes", str(max_partition_fetch_bytes),
             "--batch-messages", str(max(1, MIB // VALUE_BYTES))]
            + (["--fetch-max-bytes", str(fetch_max_bytes)] if fetch_max_bytes else []),
            stdout=subprocess.PIPE, stderr=errs[-1], text=True))
    t0 = time.monotonic()
    outs = []
    try:
        for p, err in zip(procs, errs):
            while p.poll() is None:
                # a broker that died (or was killed from outside) must fail the run, not hang it
                kc.check_alive()
                if time.monotonic() - t0 > 900:
                    raise RuntimeError("consumers did not finish in 900 s")
                time.sleep(0.05)
            o, _ = p.communicate()
            if not o.strip():
                err.seek(0)
                raise RuntimeError(f"consumer failed: {err.read()[-2000:].decode(errors='replace')}")
            outs.append(json.loads(o.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for err in errs:
            err.close()
    wall = time.monotonic() - t0
    for o in outs:
        if not o["complete"] or o["errors"]:
            raise RuntimeError(f"consumer incomplete: {o}")
    return {
        "consumers": len(groups),
        "bytes": sum(o["bytes"] for o in outs),
        "records": sum(o["records"] for o in outs),
        "secs": max(o["secs"] for o in outs),
        "wall_secs": wall,
        "first_record_secs": max(o["first_record_secs"] or 0 for o in outs),
    }


def read_pass(kc, jmx, topic, groups, seg_bytes, mpfb, label, **consume_kw) -> dict:
    pid = kc.nodes[0].proc.pid
    names = ["kafka.server:type=plugins,*", f"kafka.server:type=BrokerTopicMetrics,topic={topic},*",
             "kafka.log.remote:type=RemoteLogManager,name=RemoteLogReaderFetchRateAndTimeMs"]
    before = jmx.read(names)
    time.sleep(1.5)  # NativeMetrics caches a snapshot for 1 s
    rss0 = BrokerSampler.rss_kib(pid)
    heap0 = BrokerSampler.heap_kib(pid)
    load = load_note({pid})
    sampler = BrokerSampler(pid).start()
    minio_pid = kc.s3._proc.pid
    tnames = java_thread_names(pid)
    cpu0 = (thread_cpu(pid, tnames), proc_cpu(minio_pid), children_cpu(), time.monotonic())
    c = consume(kc, topic, groups, mpfb, **consume_kw)
    cpu1 = (thread_cpu(pid, tnames), proc_cpu(minio_pid), children_cpu(), time.monotonic())
    sampler.stop()
    # threads started during the pass (e.g. remote-log-reader) were counted under their short names
    tnames.update(java_thread_names(pid))
    cpu1 = (thread_cpu(pid, tnames),) + cpu1[1:]
    time.sleep(2.0)
    rss1 = BrokerSampler.rss_kib(pid)
    heap1 = BrokerSampler.heap_kib(pid)
    nmt1 = nmt(pid)
    after = jmx.read(names)
    m = metrics_delta(before, after, topic)
    # Kafka's own timer of RemoteLogManager.read (index lookup, plugin stream, reading max bytes)
    k = "kafka.log.remote:type=RemoteLogManager,name=RemoteLogReaderFetchRateAndTimeMs"
    n0, n1 = before.get(k + ":Count", 0.0), after.get(k + ":Count", 0.0)
    s0, s1 = n0 * before.get(k + ":Mean", 0.0), n1 * after.get(k + ":Mean", 0.0)
    m["remote_reads"] = n1 - n0
    m["remote_read_ms_mean"] = (s1 - s0) / (n1 - n0) if n1 > n0 else float("nan")
    m["remote_read_secs_total"] = (s1 - s0) / 1000
    out = {
        "label": label,
        "topic": topic,
        "max_partition_fetch_bytes": mpfb,
        "segment_bytes": seg_bytes,
        "mbps": seg_bytes / 1e6 / c["secs"],
        "payload_mbps": c["bytes"] / 1e6 / c["secs"],
        **c,
        "load": load,
        "broker": {
            "rss_before_mib": rss0 / 1024,
            "rss_peak_mib": max(sampler.rss or [rss0]) / 1024,
            "rss_after_mib": rss1 / 1024,
            "heap_used_before_mib": heap0[0] / 1024,
            "heap_used_peak_mib": max(sampler.heap_used or [heap0[0]]) / 1024,
            "heap_used_after_mib": heap1[0] / 1024,
            "heap_committed_before_mib": heap0[1] / 1024,
            "heap_committed_peak_mib": max(sampler.heap_committed or [heap0[1]]) / 1024,
            "heap_committed_after_mib": heap1[1] / 1024,
            "xmx": BROKER_HEAP,
            "nmt_after_mib": nmt1,
            "rss_minus_nmt_after_mib": rss1 / 1024 - nmt1.get("Total", 0.0),
        },
        "metrics": m,
        "cpu": {
            "wall_secs": cpu1[3] - cpu0[3],
            "broker_secs": sum(cpu_delta(cpu0[0], cpu1[0]).values()),
            "broker_threads": cpu_delta(cpu0[0], cpu1[0]),
            "minio_secs": cpu1[1] - cpu0[1],
            "consumer_secs": cpu1[2] - cpu0[2],
        },
    }
    streams = m.get("fetch-streams-total") or float("nan")
    log(f"  {label}: {out['mbps']:.1f} MB/s ({seg_bytes / 1e6:.0f} MB in {c['secs']:.2f}s, first record after "
        f"{c['first_record_secs']:.2f}s) load={load}")
    log(f"    plugin: streams={m['fetch-streams-total']:.0f} "
        f"bytes/stream={m['fetch-bytes-total'] / streams / MIB:.2f}MiB "
        f"GETs={m['store-get-requests-total']:.0f} hits={m['cache-hits-total']:.0f} "
        f"misses={m['cache-misses-total']:.0f} "
        f"remote fetches={m['RemoteFetchRequestsPerSec']:.0f}, RemoteLogManager.read {m['remote_read_ms_mean']:.1f} ms "
        f"mean ({m['remote_read_secs_total']:.2f}s in all)")
    cpu = out["cpu"]
    top = ", ".join(f"{k[:40]} {v:.2f}" for k, v in list(cpu["broker_threads"].items())[:6])
    log(f"    CPU seconds: broker {cpu['broker_secs']:.2f} (top threads: {top}), MinIO {cpu['minio_secs']:.2f}, "
        f"consumer {cpu['consumer_secs']:.2f}, in {cpu['wall_secs']:.2f}s on {os.cpu_count()} CPUs")
    b = out["broker"]
    log(f"    NMT after (MiB committed): {nmt1}; RSS - NMT total = {b['rss_minus_nmt_after_mib']:.0f} MiB")
    log(f"    broker RSS {b['rss_before_mib']:.0f} -> peak {b['rss_peak_mib']:.0f} -> {b['rss_after_mib']:.0f} MiB; "
        f"heap used {b['heap_used_before_mib']:.0f} -> peak {b['heap_used_peak_mib']:.0f} MiB, committed "
        f"{b['heap_committed_before_mib']:.0f} -> {b['heap_committed_peak_mib']:.0f} MiB (-Xmx{BROKER_HEAP})")
    return out


def segment_info(s3, kc, topic, topic_id, partitions) -> tuple[int, dict[int, int]]:
    objs = topic_objects(s3, topic_id, kc.prefix)
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects(kc.prefix)}
    total = 0
    counts = {}
    for p in range(partitions):
        po = objs.for_partition(topic, topic_id, p)
        stems = {k[: -len(".manifest")] for k in po.manifests}
        logs = [k for k in po.logs if k[: -len(".log")] in stems]
        counts[p] = len(logs)
        total += sum(sizes[k] for k in logs)
    return total, counts


def run_kafka(s3: S3Server, work: Path, results: dict, quick: bool, sweep: bool, tuned: bool) -> None:
    jmx_port = free_ports(1)[0]
    jvm = [
        "-Dcom.sun.management.jmxremote",
        f"-Dcom.sun.management.jmxremote.port={jmx_port}",
        f"-Dcom.sun.management.jmxremote.rmi.port={jmx_port}",
        "-Dcom.sun.management.jmxremote.host=127.0.0.1",
        "-Djava.rmi.server.hostname=127.0.0.1",
        "-Dcom.sun.management.jmxremote.authenticate=false",
        "-Dcom.sun.management.jmxremote.ssl=false",
        # JVM-side native memory by category (heap, threads, NIO direct buffers under "Other", ...); the
        # plugin's Rust allocations are not tracked, so RSS minus NMT's total is roughly the plugin's share
        "-XX:NativeMemoryTracking=summary",
    ]
    kc = KafkaCluster(
        1, plugin=True, s3=s3, heap=BROKER_HEAP, rsm_config=dict(RSM), jvm_args=jvm, name="bench",
        base_dir=work / "kafka", prefix=f"bench-{uuid.uuid4().hex[:6]}/",
    )
    try:
        log(f"kafka: starting 1 broker (Kafka {kc.version}, -Xmx{BROKER_HEAP}) with the plugin")
        kc.start()
        jmx = Jmx(kc, jmx_port)
        topics = {"r1": 1, "r4": 4}
        segs = {"r1": 3 if quick else 6, "r4": 1 if quick else 2}  # rolled segments per partition
        cfg = {
            "remote.storage.enable": "true",
            "segment.bytes": SEGMENT_BYTES,
            "local.retention.ms": 1000,
            "retention.ms": -1,
            "file.delete.delay.ms": 1000,
        }
        for t, n in topics.items():
            kc.create_topic(t, n, replication_factor=1, config=cfg)
        local_topic = "l1"
        kc.create_topic(local_topic, 1, replication_factor=1,
                        config={"segment.bytes": SEGMENT_BYTES, "retention.ms": -1})
        t0 = time.monotonic()
        for t, n in topics.items():
            produce(kc, t, n, int((segs[t] + 0.5) * SEGMENT_BYTES))
        produce(kc, local_topic, 1, int((segs["r1"] + 0.5) * SEGMENT_BYTES))
        log(f"kafka: produced in {time.monotonic() - t0:.0f}s; waiting until every rolled segment is tiered "
            "and deleted locally")
        info = {}
        for t, n in topics.items():
            starts = wait_all_tiered(kc, t, n, timeout=600)
            tid = kc.topic_id(t)
            seg_bytes, counts = segment_info(s3, kc, t, tid, n)
            info[t] = {"topic_id": tid, "local_start": starts, "segment_bytes": seg_bytes, "segments": counts}
            log(f"  {t}: tiered segments per partition {counts}, {seg_bytes / 1e6:.0f} MB, local log starts {starts}")
            assert all(c >= segs[t] for c in counts.values()), (t, counts)
        log(f"kafka: tiered after {time.monotonic() - t0:.0f}s")
        results["kafka"] = {"version": kc.version, "topics": info, "passes": [], "baselines": []}
        passes = results["kafka"]["passes"]
        base = results["kafka"]["baselines"]
        mpfb = 16 * MIB

        def baseline(topic, mode, label, *extra, sets=None):
            i = info[topic]
            b = native(s3, kc.prefix, "get", "--topic", topic, "--topic-id", i["topic_id"], "--mode", mode, *extra,
                       sets=sets)
            b["label"] = label
            b["topic"] = topic
            b["load"] = load_note({kc.nodes[0].proc.pid})
            base.append(b)
            log(f"  baseline {label}: {b['mbps']:.1f} MB/s ({b['bytes'] / 1e6:.0f} MB) load={b['load']} "
                f"CPU s: client {b['cpu']['client_secs']:.2f} MinIO {b['cpu']['minio_secs']:.2f}")
            return b

        # local-read ceiling of this consumer and broker (same data size, never tiered, page cache)
        # the same records as r1's tiered part (both topics got the same record sizes in the same order)
        lend = {0: info["r1"]["local_start"][0]}
        log("kafka: reads (offset 0 to the local log start: every byte from the plugin)")
        r1 = info["r1"]
        r1_groups = [{0: r1["local_start"][0]}]
        for rep in (1, 2):
            passes.append(read_pass(kc, jmx, "r1", r1_groups, r1["segment_bytes"], mpfb, f"r1 #{rep}"))
            baseline("r1", "seq", f"r1 raw seq #{rep}")
        baseline("r1", "engine", "r1 engine, 1 stream per segment")
        baseline("r1", "engine", "r1 engine, 1 stream per 16 MiB", "--fetch-bytes", str(mpfb))
        baseline("r1", "par", "r1 raw par16", "--parallel", "16")
        if sweep:
            for f in (1 * MIB, 4 * MIB, 32 * MIB):
                passes.append(read_pass(kc, jmx, "r1", r1_groups, r1["segment_bytes"], f, f"r1 fetch {f // MIB} MiB"))
        r4 = info["r4"]
        passes.append(read_pass(kc, jmx, "r4", [dict(r4["local_start"])], r4["segment_bytes"], mpfb, "r4 1 consumer"))
        baseline("r4", "seq", "r4 raw seq, one partition after another")
        passes.append(read_pass(kc, jmx, "r4", [{p: e} for p, e in r4["local_start"].items()], r4["segment_bytes"],
                                mpfb, "r4 4 consumers"))
        baseline("r4", "seq", "r4 raw seq, 4 partitions at once", "--concurrent-partitions")
        baseline("r4", "par", "r4 raw par16", "--parallel", "16")
        # the same consumer on never-tiered data of the same size (page cache, sendfile): the ceiling of this
        # consumer and broker on this machine without any remote read
        lp = read_pass(kc, jmx, local_topic, [lend], r1["segment_bytes"], mpfb, "l1 local")
        lp["note"] = "size taken from r1 (same records)"
        passes.append(lp)
        if tuned:
            # What the analysis in docs/benchmarks.md points at on the broker side: its socket send buffer
            # (Kafka copies the whole remaining heap buffer of a remote fetch response into a temporary direct
            # buffer on every socket write, so the default 100 KiB SO_SNDBUF makes that quadratic). The plugin
            # stays at its defaults.
            log("kafka: restarting the broker with socket.send.buffer.bytes=-1 (OS autotuning)")
            kc.broker_overrides["socket.send.buffer.bytes"] = -1
            kc.restart_broker(0)
            read_pass(kc, jmx, "r1", r1_groups, r1["segment_bytes"], mpfb, "warm-up after restart (not reported)")
            for f in (mpfb, 4 * MIB):
                passes.append(read_pass(kc, jmx, "r1", r1_groups, r1["segment_bytes"], f,
                                        f"r1 tuned fetch {f // MIB} MiB"))
            passes.append(read_pass(kc, jmx, "r4", [dict(r4["local_start"])], r4["segment_bytes"], mpfb,
                                    "r4 tuned 1 consumer"))
            passes.append(read_pass(kc, jmx, "r4", [{p: e} for p, e in r4["local_start"].items()], r4["segment_bytes"],
                                    mpfb, "r4 tuned 4 consumers"))
    finally:
        kc.close(keep_dir=bool(os.environ.get("FASTTIER_KEEP_TMP")))


# ---------------------------------------------------------------------------------------------- report

def _md(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(lines)


def _load(x) -> str:
    ld = x["load"]
    return f"busy other JVMs {ld.get('busy_other_jvms', '?')}/{ld['other_jvms']}, load {ld['loadavg1']:.1f}"


def table(results: dict) -> str:
    rows = []

    def row(bench, figure, value, baseline="", ratio="", target="", note=""):
        rows.append((bench, figure, value, baseline, ratio, target, note))

    k = results.get("kafka")
    if k and not any(b["label"].startswith("r1 raw seq #") for b in k["baselines"]):
        k = None  # an interrupted run: nothing to compare with
    if k:
        base = {b["label"]: b for b in k["baselines"]}
        passes = {p["label"]: p for p in k["passes"]}
        seq = max((b for b in k["baselines"] if b["label"].startswith("r1 raw seq #")), key=lambda b: b["mbps"])

        def vs(p, b, what, target=">= 80%"):
            row("1 remote read", what, f"{p['mbps']:.0f} MB/s",
                f"{b['mbps']:.0f} MB/s {b['label'][3:]} (window {b['window']})", f"{p['mbps'] / b['mbps']:.0%}",
                target, _load(p))

        for lab in ("r1 #1", "r1 #2"):
            if lab in passes:
                vs(passes[lab], seq, f"1 partition, fetch 16 MiB ({lab[3:]})")
        for f in (1, 4, 32):
            lab = f"r1 fetch {f} MiB"
            if lab in passes:
                vs(passes[lab], seq, f"1 partition, fetch {f} MiB" + (" (client default)" if f == 1 else ""))
        if "r4 1 consumer" in passes:
            vs(passes["r4 1 consumer"], base["r4 raw seq, one partition after another"], "4 partitions, 1 consumer")
        if "r4 4 consumers" in passes:
            vs(passes["r4 4 consumers"], base["r4 raw seq, 4 partitions at once"], "4 partitions, 4 consumers")
        tuned = "broker socket.send.buffer.bytes=-1: "
        for lab, b, what in (("r1 tuned fetch 16 MiB", seq, "1 partition, fetch 16 MiB"),
                             ("r1 tuned fetch 4 MiB", seq, "1 partition, fetch 4 MiB"),
                             ("r4 tuned 1 consumer", base.get("r4 raw seq, one partition after another"),
                              "4 partitions, 1 consumer"),
                             ("r4 tuned 4 consumers", base.get("r4 raw seq, 4 partitions at once"),
                              "4 partitions, 4 consumers")):
            if lab in passes and b:
                vs(passes[lab], b, tuned + what)
        if "l1 local" in passes:
            p = passes["l1 local"]
            row("1 reference", "same consumer, local (never tiered) data, fetch 16 MiB", f"{p['mbps']:.0f} MB/s",
                f"{seq['mbps']:.0f} MB/s raw seq", f"{p['mbps'] / seq['mbps']:.0%}", "", "ceiling of consumer + broker")
        for lab, what in (("r1 raw par16", "raw GET, 16 in flight, 1 partition"),
                          ("r4 raw par16", "raw GET, 16 in flight, 4 partitions")):
            if lab in base:
                row("1 reference", what + " (server ceiling)", f"{base[lab]['mbps']:.0f} MB/s", "", "", "",
                    _load(base[lab]))
        for lab, ref in (("r1 engine, 1 stream per segment", seq), ("r1 engine, 1 stream per 16 MiB", seq)):
            if lab in base and ref:
                row("1 reference", lab.replace("r1 engine", "engine alone (no Kafka, no JNI)"),
                    f"{base[lab]['mbps']:.0f} MB/s", f"{ref['mbps']:.0f} MB/s {ref['label'][3:]}",
                    f"{base[lab]['mbps'] / ref['mbps']:.0%}", "", _load(base[lab]))
    lm = results.get("latency_model") or []
    for ra in (1, 4):
        e = [r for r in lm if r["read_ahead_chunks"] == ra and r["mode"] == "engine"]
        q = [r for r in lm if r["read_ahead_chunks"] == ra and r["mode"] == "seq"]
        if e and q:
            row("1 model", f"engine alone, 20 ms per GET, read-ahead {ra}", f"{e[0]['mbps']:.0f} MB/s",
                f"{q[0]['mbps']:.0f} MB/s raw seq window {q[0]['window']}", f"{e[0]['mbps'] / q[0]['mbps']:.0%}", "",
                "distant store modelled by a fixed delay per GET; CPU-insensitive")
    c = results.get("copy")
    if c:
        import statistics

        e, r = statistics.median(c["engine_mbps"]), statistics.median(c["raw_put_mbps"])
        row("2 segment copy", f"engine copy of a {c['bytes'] // MIB} MiB segment (median of {len(c['engine_mbps'])})",
            f"{e:.0f} MB/s", f"{r:.0f} MB/s raw multipart PUT", f"{e / r:.0%}", "",
            f"runs {fmt_list(c['engine_mbps'])} vs {fmt_list(c['raw_put_mbps'])} MB/s; "
            f"{_load({'load': results['load_native']})}")
    m = results.get("mem_copy")
    if m:
        row("3a memory", f"peak RSS added by copying {m['bytes'] // MIB} MiB", f"{m['peak_delta_mib']:.0f} MiB",
            f"{m['bound_mib']:.0f} MiB = parts in flight", "", "< 128 MiB",
            f"part {m['part_bytes'] // MIB} MiB x (concurrency {m['upload_concurrency']} + 1)")
    ms = results.get("mem_streams")
    if ms:
        for r in ms["runs"]:
            row("3b memory", f"RSS per open stream, {r['n']} streams", f"{r['per_stream_mib']:.1f} MiB",
                f"chunk {ms['chunk_bytes'] // MIB} MiB", f"{r['per_stream_chunks']:.2f} chunks", "small multiple",
                f"cache {ms['cache_capacity'] // MIB} MiB shared (held {r['cache_bytes'] // MIB} MiB), "
                f"read-ahead {ms['read_ahead_chunks']}")
    if k:
        for p in k["passes"]:
            if p["label"] in ("r1 #1", "r1 fetch 32 MiB", "r4 4 consumers", "l1 local", "r4 tuned 4 consumers"):
                b = p["broker"]
                row("3c broker memory", f"broker during {p['label']}",
                    f"RSS +{b['rss_peak_mib'] - b['rss_before_mib']:.0f} MiB (peak {b['rss_peak_mib']:.0f})",
                    f"heap used peak {b['heap_used_peak_mib']:.0f} MiB", "", "",
                    f"-Xmx{b['xmx']}; heap committed {b['heap_committed_before_mib']:.0f} -> "
                    f"{b['heap_committed_peak_mib']:.0f} MiB; "
                    f"plugin cache {p['metrics'].get('cache-bytes', 0) / MIB:.0f} MiB; "
                    f"after: NMT total {b['nmt_after_mib'].get('Total', 0):.0f} MiB (NIO/other "
                    f"{b['nmt_after_mib'].get('Other', 0):.0f}), "
                    f"RSS outside NMT {b['rss_minus_nmt_after_mib']:.0f} MiB")
    return _md(("benchmark", "figure", "value", "baseline", "ratio", "target", "notes"), rows)


def cpu_table(results: dict) -> str:
    """CPU seconds per GB read, every process involved (on this 2-core box every figure is CPU-bound)."""
    k = results.get("kafka")
    if not k:
        return ""
    rows = []
    for b in k["baselines"]:
        gb = b["bytes"] / 1e9
        c = b["cpu"]
        rows.append((b["label"], f"{b['mbps']:.0f}", f"{c['client_secs'] / gb:.2f} (fasttier-bench)", "",
                     f"{c['minio_secs'] / gb:.2f}", f"{(c['client_secs'] + c['minio_secs']) / gb:.2f}"))
    for p in k["passes"]:
        gb = p["segment_bytes"] / 1e9
        c = p["cpu"]
        rows.append((p["label"], f"{p['mbps']:.0f}", f"{c['broker_secs'] / gb:.2f} (broker)",
                     f"{c['consumer_secs'] / gb:.2f}", f"{c['minio_secs'] / gb:.2f}",
                     f"{(c['broker_secs'] + c['consumer_secs'] + c['minio_secs']) / gb:.2f}"))
    return _md(("run", "MB/s", "reader CPU s/GB", "consumer CPU s/GB", "MinIO CPU s/GB", "total CPU s/GB"), rows)


def time_table(results: dict) -> str:
    """Where the time of a remote read goes, per fetch the broker served from the plugin."""
    k = results.get("kafka")
    if not k:
        return ""
    rows = []
    for p in k["passes"]:
        m, cpu = p["metrics"], p["cpu"]
        n = m.get("remote_reads") or 0
        if not n:
            continue
        th = cpu["broker_threads"]
        pick = lambda *prefixes: sum(v for t, v in th.items() if t.startswith(prefixes))  # noqa: E731
        rows.append((
            p["label"], f"{p['mbps']:.0f}", f"{n:.0f}", f"{m['fetch-bytes-total'] / max(n, 1) / MIB:.1f}",
            f"{cpu['wall_secs'] / n * 1000:.1f}", f"{m['remote_read_ms_mean']:.1f}",
            f"{pick('data-plane-kafka-network') / n * 1000:.1f}", f"{pick('data-plane-kafka-request') / n * 1000:.1f}",
            f"{pick('remote-log-reader') / n * 1000:.1f}", f"{pick('fasttier-rt') / n * 1000:.1f}",
            f"{pick('GC Thread', 'GN Conc', 'GN Refine', 'GN Main', 'GN Service', 'VM Thread', 'G1 ') / n * 1000:.1f}",
            f"{cpu['broker_secs'] / (p['segment_bytes'] / 1e9):.2f}",
            f"{cpu['minio_secs'] / (p['segment_bytes'] / 1e9):.2f}",
            f"{cpu['consumer_secs'] / (p['segment_bytes'] / 1e9):.2f}",
            f"{m['cache-hits-total']:.0f}/{m['cache-misses-total']:.0f}", f"{m['store-get-requests-total']:.0f}",
        ))
    head = ("pass", "MB/s", "remote fetches", "MiB/fetch", "wall ms/fetch", "RLM.read ms/fetch",
            "network thread CPU ms/fetch", "request handler CPU ms/fetch", "reader thread CPU ms/fetch",
            "plugin runtime CPU ms/fetch",
            "GC CPU ms/fetch", "broker CPU s/GB", "MinIO CPU s/GB", "consumer CPU s/GB", "cache hits/misses", "GETs")
    return _md(head, rows)


def main() -> int:
    global VALUE_BYTES
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="native,kafka,aiven",
                    help="sections: native, kafka, aiven (side by side with Aiven's plugin, tests/bench/aiven.py)")
    ap.add_argument("--aiven-mib", type=int, default=256,
                    help="aiven section: MiB of tiered data per topic (1024 for the 1 GB comparison)")
    ap.add_argument("--aiven-runs", type=int, default=3, help="aiven section: alternating runs per cell")
    ap.add_argument("--quick", action="store_true", help="smaller data (a smoke run, figures not meaningful)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the reads with other max.partition.fetch.bytes")
    ap.add_argument("--no-tuned", action="store_true", help="skip the reads with a tuned broker and plugin")
    ap.add_argument("--out", default=str(REPO / "build" / "bench"))
    ap.add_argument("--value-bytes", type=int, default=None, help=f"record value size (default {VALUE_BYTES})")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="wait up to this many seconds for other JVMs on the machine to finish first")
    a = ap.parse_args()
    VALUE_BYTES = a.value_bytes or VALUE_BYTES
    only = set(a.only.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    def quiet() -> bool:
        return other_jvms(set(), 2.0)[1] == 0 and os.getloadavg()[0] < 2.0

    if a.wait_quiet > 0 and not quiet():
        log(f"machine busy ({load_note()}); waiting up to {a.wait_quiet:.0f}s for no busy JVM and load < 2")
        try:
            wait_until(quiet, a.wait_quiet, 5.0, "a quiet machine")
        except Exception:
            log("still busy; measuring anyway (the table notes the load)")
    results: dict = {"machine": machine(), "settings": {"rsm": RSM, "segment.bytes": SEGMENT_BYTES,
                                                       "value.bytes": VALUE_BYTES, "broker.heap": BROKER_HEAP}}
    log(f"machine {results['machine']}  load {load_note()}")
    # not /tmp/fasttier-*: other sessions' clean-ups of test clusters must not take the benchmark's with them
    work = Path(tempfile.mkdtemp(prefix="ftbench-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    s3 = S3Server(buckets=[BUCKET], data_dir=work / "s3")
    t0 = time.monotonic()
    try:
        s3.start()
        if "native" in only:
            run_native(s3, work, results, a.quick)
        if "kafka" in only:
            run_kafka(s3, work, results, a.quick, not a.no_sweep, not a.no_tuned)
        if "aiven" in only:
            import aiven

            aiven.B.VALUE_BYTES = VALUE_BYTES
            aiven.run(s3, work, results, min(a.aiven_mib, 64) if a.quick else a.aiven_mib,
                      1 if a.quick else a.aiven_runs)
    finally:
        s3.stop()
        if not os.environ.get("FASTTIER_KEEP_TMP"):
            shutil.rmtree(work, ignore_errors=True)
        results["total_secs"] = time.monotonic() - t0
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))
        t = table(results)
        tt = time_table(results)
        ct = cpu_table(results)
        at = ""
        if "aiven" in results:
            import aiven

            at = aiven.table(results)
        (out / f"figures-{stamp}.md").write_text(t + "\n\n" + tt + "\n\n" + ct + "\n\n" + at + "\n")
        print()
        print(f"fasttier benchmarks ({results['machine']['cpus']} CPUs, {results['machine']['mem_mib']} MiB, "
              f"git {results['machine']['git']}, {results['total_secs']:.0f}s); results in {out}/results-{stamp}.json")
        if "kafka" in results or "copy" in results:
            print(t)
        if tt:
            print()
            print("Where the time of a remote read goes (per fetch served by the plugin):")
            print(tt)
            print()
            print("CPU cost per GB read (2 CPUs shared by everything: the MB/s above follow from these):")
            print(ct)
        if at:
            print()
            print(at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
