"""fasttier side by side with Aiven's tiered-storage plugin (issue 17, item 5): remote reads, cold caches.

    python3 tests/bench/bench.py --only aiven [--aiven-mib 256] [--aiven-runs 3]   # make bench-aiven

Two single-broker clusters on the same Kafka (4.1.2: the newest line Aiven's v1.1.1 runs on), the same MinIO
and bucket (different prefixes), the same records (seeded values, incompressible), the same broker settings
but the RemoteStorageManager: fasttier at its defaults, Aiven's build from ../shared/baselines/ with the
settings of its README (4 MiB chunks, disk chunk cache with 16 MiB prefetch). Topics: one with 1 partition,
one with 4 (each --aiven-mib MiB of tiered data), and a small warm-up topic.

Every measured read is cold: the broker is stopped, its caches emptied (Aiven's chunk cache dir and Kafka's
remote-log-index-cache for both; fasttier's chunk cache is in memory), the broker started, the warm-up
topic read (the JIT, the RLMM's metadata and the S3 client's connections, not the measured data), then one
consumer reads the measured topic from offset 0 to the local log start, every byte from the plugin. Only one
broker runs at a time. Cells: fetch 1 MiB and 16 MiB (fetch.max.bytes = max.partition.fetch.bytes), 1 and 4
partitions (one consumer), the broker's socket.send.buffer.bytes at Kafka's default and at -1. Runs
alternate (fasttier first in even runs of a cell, Aiven first in odd ones). Figures: payload MB/s (record
bytes / time from assign to the last record) and broker CPU seconds (/proc/<pid>/stat utime + stime over
the read) per GB of payload; medians over runs, fasttier/Aiven ratios.

At the end, plain sequential GETs (boto3, one stream, 1 MiB reads) of one segment object of each plugin of
about the same size, alternating, with the objects' multipart layout (parts and part size): the raw store
read each plugin's object layout gets from MinIO, outside Kafka.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
import uuid
from pathlib import Path

import bench as B
from harness import KafkaCluster, S3Server
from harness.kafka import kafka_libs
from harness.tiering import wait_all_tiered

KAFKA_VERSION = "4.1.2"
AIVEN_DIR = Path(os.environ.get("FASTTIER_AIVEN_DIR", str(B.REPO.parent / "shared" / "baselines" /
                                                          "aiven-tiered-storage-1.1.1")))
AIVEN_RSM = "io.aiven.kafka.tieredstorage.RemoteStorageManager"
TOPIC_BASED_RLMM = "org.apache.kafka.server.log.remote.metadata.storage.TopicBasedRemoteLogMetadataManager"
WARM = "aw"
TOPICS = {"a1": 1, "a4": 4}
FETCHES = (1 * B.MIB, 16 * B.MIB)
SNDBUF = ("default", -1)
PLUGINS = ("fasttier", "aiven")


def unavailable() -> str | None:
    """Why the comparison cannot run here (None if it can)."""
    if not (AIVEN_DIR / "core").is_dir() or not (AIVEN_DIR / "storage-s3").is_dir():
        return (f"Aiven baseline not found in {AIVEN_DIR} (core/ and storage-s3/; set FASTTIER_AIVEN_DIR): "
                "skipping the side-by-side with Aiven's tiered-storage plugin")
    try:
        kafka_libs(KAFKA_VERSION)
    except Exception as e:  # the harness's message says how to resolve it
        return f"Kafka {KAFKA_VERSION} not set up ({e}): skipping the side-by-side with Aiven's plugin"
    return None


def aiven_overrides(s3: S3Server, prefix: str, cache_dir: Path) -> dict:
    """The broker settings of the baseline's README (its plugin is loaded by Kafka's own class loader)."""
    d = AIVEN_DIR.resolve()
    return {
        "remote.log.storage.system.enable": "true",
        "remote.log.metadata.manager.class.name": TOPIC_BASED_RLMM,
        "remote.log.storage.manager.class.path": f"{d}/core/*:{d}/storage-s3/*",
        "remote.log.storage.manager.class.name": AIVEN_RSM,
        "rsm.config.storage.backend.class": "io.aiven.kafka.tieredstorage.storage.s3.S3Storage",
        "rsm.config.storage.s3.bucket.name": s3.bucket,
        "rsm.config.storage.s3.endpoint.url": s3.endpoint,
        "rsm.config.storage.s3.region": s3.region,
        "rsm.config.storage.s3.path.style.access.enabled": "true",
        "rsm.config.storage.aws.access.key.id": s3.access_key,
        "rsm.config.storage.aws.secret.access.key": s3.secret_key,
        "rsm.config.key.prefix": prefix,
        "rsm.config.chunk.size": 4 * B.MIB,
        "rsm.config.custom.metadata.fields.include": "REMOTE_SIZE",
        "rsm.config.fetch.chunk.cache.class": "io.aiven.kafka.tieredstorage.fetch.cache.DiskChunkCache",
        "rsm.config.fetch.chunk.cache.path": str(cache_dir),
        "rsm.config.fetch.chunk.cache.size": 4 << 30,
        "rsm.config.fetch.chunk.cache.prefetch.max.size": 16 * B.MIB,
        "rsm.config.fetch.chunk.cache.retention.ms": 600000,
        # what the harness sets for fasttier's clusters (its RLMM delegates to the same topic-based one)
        "remote.log.metadata.manager.listener.name": "BROKER",
        "rlmm.config.remote.log.metadata.topic.replication.factor": 1,
        "rlmm.config.remote.log.metadata.topic.num.partitions": 5,
        "rlmm.config.remote.log.metadata.topic.min.isr": 1,
        "remote.log.manager.task.interval.ms": 1000,
        "remote.fetch.max.wait.ms": 500,
    }


class Side:
    """One plugin's single-broker cluster and how to empty its caches."""

    def __init__(self, name: str, kc: KafkaCluster, cache_dir: Path | None) -> None:
        self.name, self.kc, self.cache_dir = name, kc, cache_dir
        self.info: dict = {}

    def empty_caches(self) -> None:
        idx = self.kc.nodes[0].data_dir / "remote-log-index-cache"
        shutil.rmtree(idx, ignore_errors=True)
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir.mkdir(parents=True)

    def cold_start(self, sndbuf) -> None:
        self.kc.stop_broker(0)
        self.empty_caches()
        self.kc.broker_overrides["socket.send.buffer.bytes"] = None if sndbuf == "default" else sndbuf
        self.kc.start_broker(0)

    @property
    def pid(self) -> int:
        return self.kc.nodes[0].proc.pid


def build_sides(s3: S3Server, work: Path) -> list[Side]:
    common = {"heap": B.BROKER_HEAP, "version": KAFKA_VERSION, "s3": s3}
    ft = KafkaCluster(1, plugin=True, rsm_config=dict(B.RSM), name="vs-fasttier", base_dir=work / "vs-fasttier",
                      prefix=f"vsft-{uuid.uuid4().hex[:6]}/", **common)
    cache = work / "vs-aiven-chunk-cache"
    cache.mkdir(parents=True, exist_ok=True)
    av = KafkaCluster(1, plugin=False, name="vs-aiven", base_dir=work / "vs-aiven",
                      broker_overrides=aiven_overrides(s3, f"vsav-{uuid.uuid4().hex[:6]}/", cache), **common)
    av.prefix = av.broker_overrides["rsm.config.key.prefix"]
    return [Side("fasttier", ft, None), Side("aiven", av, cache)]


def load_data(side: Side, mib: int) -> None:
    kc = side.kc
    cfg = {"remote.storage.enable": "true", "segment.bytes": B.SEGMENT_BYTES, "local.retention.ms": 1000,
           "retention.ms": -1, "file.delete.delay.ms": 1000}
    t0 = time.monotonic()
    # ~96 MiB tiered: enough for the JIT to compile the read path before the measured read
    kc.create_topic(WARM, 1, replication_factor=1, config={**cfg, "segment.bytes": 32 * B.MIB})
    B.produce(kc, WARM, 1, int(3.5 * 32 * B.MIB), seed=7)
    for t, n in TOPICS.items():
        kc.create_topic(t, n, replication_factor=1, config=cfg)
        # at least one and a half segments per partition, so that one rolls and is tiered
        B.produce(kc, t, n, max(mib * B.MIB // n, 3 * B.SEGMENT_BYTES // 2), seed=17 + n)
    for t, n in {WARM: 1, **TOPICS}.items():
        side.info[t] = wait_all_tiered(kc, t, n, timeout=900)
    B.log(f"aiven: {side.name}: produced and tiered in {time.monotonic() - t0:.0f}s; local log starts {side.info}")


# broker threads by what they do (Java names from jcmd with every digit as N, see bench.thread_cpu: "C2
# CompilerThread0" is "CN CompilerThreadN", "G1 Conc#0" is "GN Conc#N"); Aiven's fetches and chunk cache run
# in a ForkJoinPool
THREAD_GROUPS = (
    ("network", ("data-plane-kafka-network",)),
    ("request handlers", ("data-plane-kafka-request",)),
    ("remote-log-reader", ("remote-log-reader",)),
    ("fasttier runtime", ("fasttier",)),
    ("Aiven ForkJoinPool", ("ForkJoinPool",)),
    ("JIT", ("CN CompilerThread",)),
    ("GC", ("GC Thread", "GN ", "VM Thread")),
)


def thread_groups(per_thread: dict[str, float]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for t, v in per_thread.items():
        g = next((g for g, prefixes in THREAD_GROUPS if t.startswith(prefixes)), "other")
        groups[g] = groups.get(g, 0.0) + v
    return groups


def read(side: Side, topic: str, fetch: int, threads: bool = False) -> dict:
    kc = side.kc
    ends = side.info[topic]
    pid = side.pid
    load = B.load_note({pid})
    names = B.java_thread_names(pid) if threads else {}
    th0 = B.thread_cpu(pid, names) if threads else {}
    c0, t0 = B.proc_cpu(pid), time.monotonic()
    c = B.consume(kc, topic, [dict(ends)], fetch, fetch_max_bytes=fetch)
    c1, t1 = B.proc_cpu(pid), time.monotonic()
    gb = c["bytes"] / 1e9
    out = {"mbps": c["bytes"] / 1e6 / c["secs"], "cpu_s_per_gb": (c1 - c0) / gb, "bytes": c["bytes"],
           "secs": c["secs"], "first_record_secs": c["first_record_secs"], "broker_cpu_secs": c1 - c0,
           "wall_secs": t1 - t0, "load": load}
    if threads:
        # threads started during the read were counted under their 15-character /proc names
        names.update(B.java_thread_names(pid))
        delta = B.cpu_delta(th0, B.thread_cpu(pid, names))
        out["cpu_s_per_gb_threads"] = {t: round(v / gb, 4) for t, v in delta.items()}
    return out


def warm_up(side: Side, attempts: int = 5) -> list[dict]:
    """Reads the warm-up topic until one read has no error (right after a start, a first remote fetch may fail
    while the broker settles). Returns the failed attempts, each with the broker's first ERROR line."""
    failed = []
    for i in range(attempts):
        mark = side.kc.log_mark(0)
        try:
            read(side, WARM, 16 * B.MIB)
            return failed
        except RuntimeError as e:
            errs = [ln for ln in side.kc.log_since(0, mark).splitlines() if " ERROR " in ln or "Exception" in ln]
            failed.append({"plugin": side.name, "attempt": i, "error": str(e)[-300:],
                           "broker": errs[:3]})
            B.log(f"aiven: {side.name}: warm-up read {i + 1} failed: {str(e)[-200:]}; broker: {errs[:2]}")
            time.sleep(1.0)
    raise RuntimeError(f"{side.name}: warm-up reads failed {attempts} times: {failed[-1]}")


def raw_gets(s3: S3Server, sides: list[Side], runs: int) -> dict:
    """A plain sequential GET of one large segment object of each plugin (sizes as close as they come)."""
    objs = {}
    for side in sides:
        # fasttier: <prefix>...<topic>-<id>/<p>/...log; Aiven: <prefix><topic>-<id>/<p>/<name>.log
        cands = [o for o in s3.list_objects(side.kc.prefix) if o["Key"].endswith(".log") and "/a1-" in o["Key"]]
        if not cands:
            return {"error": f"no .log object of a1 under {side.kc.prefix}"}
        objs[side.name] = max(cands, key=lambda o: o["Size"])
    out = {}
    for name, o in objs.items():
        h = s3.client.head_object(Bucket=s3.bucket, Key=o["Key"])
        etag = h["ETag"].strip('"')
        parts = int(etag.rsplit("-", 1)[1]) if "-" in etag else 1
        part1 = s3.client.head_object(Bucket=s3.bucket, Key=o["Key"], PartNumber=1)["ContentLength"] if parts > 1 \
            else o["Size"]
        out[name] = {"key": o["Key"], "size": o["Size"], "parts": parts, "part_bytes": part1, "mbps": [],
                     "minio_cpu_s_per_gb": []}
    for r in range(runs):
        for name in (PLUGINS if r % 2 == 0 else PLUGINS[::-1]):
            key = out[name]["key"]
            m0, t0 = B.proc_cpu(s3._proc.pid), time.monotonic()
            body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"]
            n = 0
            while True:
                b = body.read(B.MIB)
                if not b:
                    break
                n += len(b)
            out[name]["mbps"].append(n / 1e6 / (time.monotonic() - t0))
            out[name]["minio_cpu_s_per_gb"].append((B.proc_cpu(s3._proc.pid) - m0) / (n / 1e9))
    for name, v in out.items():
        B.log(f"aiven: raw GET {name} {v['key']} ({v['size'] / B.MIB:.1f} MiB, {v['parts']} part(s) of "
              f"{v['part_bytes'] / B.MIB:.1f} MiB): {B.fmt_list(v['mbps'])} MB/s, MinIO "
              f"{'/'.join(f'{x:.2f}' for x in v['minio_cpu_s_per_gb'])} CPU s/GB")
    return out


def run(s3: S3Server, work: Path, results: dict, mib: int, runs: int) -> None:
    why = unavailable()
    if why:
        B.log(why)
        results["aiven"] = {"skipped": why}
        return
    sides = build_sides(s3, work)
    res = {"kafka": KAFKA_VERSION, "mib_per_topic": mib, "runs": runs, "aiven_dir": str(AIVEN_DIR),
           "cells": [], "machine_load_start": B.load_note()}
    results["aiven"] = res
    try:
        for side in sides:
            B.log(f"aiven: {side.name}: starting a broker (Kafka {KAFKA_VERSION}) and loading "
                  f"{mib} MiB per topic")
            side.kc.start()
            load_data(side, mib)
            side.kc.stop_broker(0)
        cells = [(sb, n, f) for sb in SNDBUF for n in (1, 4) for f in FETCHES]
        for r in range(runs):
            for i, (sb, n, f) in enumerate(cells):
                order = sides if (r + i) % 2 == 0 else sides[::-1]
                for side in order:
                    side.cold_start(sb)
                    try:
                        res.setdefault("warmup_errors", []).extend(warm_up(side))
                        topic = f"a{n}"
                        m = read(side, topic, f, threads=True)
                    finally:
                        side.kc.stop_broker(0)
                    m.update({"plugin": side.name, "run": r, "sndbuf": sb, "partitions": n, "fetch": f})
                    res["cells"].append(m)
                    B.log(f"aiven: run {r + 1}/{runs} sndbuf={sb} partitions={n} fetch={f // B.MIB} MiB "
                          f"{side.name}: {m['mbps']:.0f} MB/s, broker {m['cpu_s_per_gb']:.2f} CPU s/GB "
                          f"({m['bytes'] / 1e6:.0f} MB, first record {m['first_record_secs']:.2f}s) load={m['load']}")
        res["raw_get"] = raw_gets(s3, sides, max(3, runs))
    finally:
        for side in sides:
            side.kc.close(keep_dir=bool(os.environ.get("FASTTIER_KEEP_TMP")))


def table(results: dict) -> str:
    res = results.get("aiven")
    if not res:
        return ""
    if "skipped" in res:
        return res["skipped"]
    rows = []
    cells = res["cells"]
    for sb in SNDBUF:
        for n in (1, 4):
            for f in FETCHES:
                got = {p: [c for c in cells if (c["sndbuf"], c["partitions"], c["fetch"], c["plugin"]) ==
                           (sb, n, f, p)] for p in PLUGINS}
                if not all(got.values()):
                    continue
                med = {p: (statistics.median(c["mbps"] for c in v), statistics.median(c["cpu_s_per_gb"] for c in v))
                       for p, v in got.items()}
                (fm, fc), (am, ac) = med["fasttier"], med["aiven"]
                rows.append((
                    "default" if sb == "default" else str(sb), n, f"{f // B.MIB} MiB",
                    f"{statistics.median(c['bytes'] for v in got.values() for c in v) / 1e6:.0f}",
                    f"{fm:.0f}", f"{am:.0f}", f"{fm / am:.2f}x",
                    f"{fc:.2f}", f"{ac:.2f}", f"{fc / ac:.2f}x",
                    f"{len(got['fasttier'])}/{len(got['aiven'])}",
                    " ".join(f"{c['mbps']:.0f}" for c in got["fasttier"]) + " vs "
                    + " ".join(f"{c['mbps']:.0f}" for c in got["aiven"]),
                ))
    head = ("socket.send.buffer.bytes", "partitions", "fetch", "MB read", "fasttier MB/s", "Aiven MB/s", "MB/s ratio",
            "fasttier broker CPU s/GB", "Aiven broker CPU s/GB", "CPU/GB ratio", "runs", "MB/s per run")
    out = (f"fasttier vs Aiven tiered-storage 1.1.1: Kafka {res['kafka']}, one broker, cold reads, "
           f"{res['mib_per_topic']} MiB per topic, medians of {res['runs']} alternating runs\n"
           + B._md(head, rows))
    groups = [g for g, _ in THREAD_GROUPS] + ["other"]
    trows = []
    for p in PLUGINS:
        for f in FETCHES:
            v = [thread_groups(c.get("cpu_s_per_gb_threads") or c["cpu_s_per_gb_top_threads"]) for c in cells
                 if c["plugin"] == p and c["fetch"] == f
                 and ("cpu_s_per_gb_threads" in c or "cpu_s_per_gb_top_threads" in c)]
            if v:
                trows.append((p, f"{f // B.MIB} MiB", len(v))
                             + tuple(f"{statistics.median(x.get(g, 0.0) for x in v):.2f}" for g in groups))
    if trows:
        out += ("\n\nBroker CPU s/GB by thread (median over every cell of that plugin and fetch size):\n"
                + B._md(("plugin", "fetch", "reads") + tuple(groups), trows))
    rg = res.get("raw_get") or {}
    if rg and "error" not in rg:
        out += "\n\nPlain sequential GET of one segment object (boto3, 1 MiB reads):\n" + B._md(
            ("plugin", "object bytes", "multipart parts", "part bytes", "MB/s (runs)", "median MB/s",
             "median MinIO CPU s/GB"),
            [(p, v["size"], v["parts"], v["part_bytes"], B.fmt_list(v["mbps"]),
              f"{statistics.median(v['mbps']):.0f}", f"{statistics.median(v['minio_cpu_s_per_gb']):.2f}")
             for p, v in rg.items()])
    return out
