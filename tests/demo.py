#!/usr/bin/env python3
"""The fasttier demo (`make demo`, or `make demo KEEP=1` to leave the cluster running): real Kafka 4.4 brokers
(stock jars from Maven Central) with the fasttier plugin, on MinIO, in the three-zone test bed of
tests/harness/zones.py (one network namespace per availability zone and one for the S3 server, a veth pair
with byte counters for every link; needs root).

1. stock replication, the baseline: a 3-broker cluster, one broker per zone, replicating the Kafka way
   (fasttier loaded as a plain slow-tier plugin); a 6-partition topic (RF=3, acks=all, two leaders per zone)
   gets --mb MB; the bytes crossing the zone links are counted until every replica holds the same bytes;
   then that cluster stops;
2. the same bed, a fasttier cluster: slow tier + fast tier + replication through the fast tier (each
   follower's replica fetches go to fasttier's proxy inside it; record bytes come from the leaders' fast-tier
   objects in S3, only offsets cross zones);
3. the slow tier: a topic with 1 MiB segments and 1 s of local retention gets 20,000 records; every rolled
   segment goes to S3 and off the brokers' disks, the topic is read back from offset 0 (served from S3) and
   checked record by record, and the fasttier CLI lists what the bucket holds;
4. replication through the fast tier: the workload of step 1 again, cross-zone bytes counted the same way;
5. the fast tier's upload lag during step 4 and where the followers' bytes came from, per broker, from the
   plugin's JMX metrics (the step 4 topic uses LogAppendTime, so a batch's timestamp is its append time);
6. the table: bytes produced, cross-zone bytes stock, cross-zone bytes fasttier, their ratio;
7. with --keep-running: the bootstrap addresses, the namespaces and the exact `ip netns exec` commands to
   reach the brokers, what to try next; Ctrl-C (or SIGTERM) stops the brokers and MinIO and deletes the
   namespaces. Without it everything stops at once.

    python3 tests/demo.py [--keep-running] [--mb 8]
"""
import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import KafkaCluster, S3Server  # noqa: E402
from harness.cli import cli_binary  # noqa: E402
from harness.data import assert_same, consume_all, produce  # noqa: E402
from harness.jmx import Jmx  # noqa: E402
from harness.kafka import LOG4J2_CONFIG, java_bin, kafka_libs  # noqa: E402
from harness.tiering import tiered_config, topic_objects, wait_all_tiered  # noqa: E402
from harness.workload import wait_replicas_identical  # noqa: E402
from harness.zones import Zones, bed_support  # noqa: E402

MB = 1_000_000
SLOW_TOPIC = "demo-orders"  # step 3
SLOW_PARTITIONS = 3
SLOW_RECORDS = 20_000
TOPIC = "demo-replicated"  # steps 1 and 4
PARTITIONS = 6
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]] * 2  # partition p is led by broker p % 3, in zone az<p % 3 + 1>
# a throughput-oriented producer, as in tests/e2e/test_zones_fast.py: with replication through the fast tier
# acks=all waits for the fast tier's round trip, so larger batches keep the throughput (docs/replication.md)
PRODUCER = {"batch.size": 131072, "linger.ms": 20}
# a 2-core box running 3 brokers, MinIO and the clients stalls now and then; don't leave the fast tier for that
RSM = {"replication.fast.max.lag.ms": 10000}
IDLE_S = 5
RSM_MBEAN = "kafka.server:type=plugins,config=remote.log.storage.manager.class.name,class=FastTierRemoteStorageManager"


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stdout.isatty() else f"[demo] {msg}", flush=True)


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def run_workload(z: Zones, kc: KafkaCluster, mb: float, label: str) -> dict:
    """The replication workload of steps 1 and 4: idle background first, then --mb MB with acks=all; the zone
    links are counted from the first record until every replica holds the same bytes."""
    kc.create_topic(TOPIC, config={"remote.storage.enable": "true", "min.insync.replicas": 2, "segment.bytes": 8 << 20,
                                   "message.timestamp.type": "LogAppendTime"}, replica_assignment=ASSIGNMENT)
    kc.wait_for_isr(TOPIC, 3)
    say(f"{label}: {IDLE_S} s with nothing produced (what crosses zones anyway: KRaft quorum, metadata, polls) ...")
    z.reset_counters()
    t0 = time.monotonic()
    time.sleep(IDLE_S)
    idle_rate = z.cross_zone_bytes() / (time.monotonic() - t0)
    n = int(mb * MB / 1000)
    say(f"{label}: producing {n:,} records of ~1 kB (acks=all, lz4 and none) to {TOPIC} "
        f"({PARTITIONS} partitions, RF=3, two leaders per zone) ...")
    z.reset_counters()
    t0 = time.monotonic()
    produced = produce(kc, TOPIC, n, partitions=PARTITIONS, value_size=(900, 1100), codecs=("none", "lz4"),
                       producer_config=PRODUCER)
    produce_s = time.monotonic() - t0
    log_bytes = sum(wait_replicas_identical(kc, TOPIC, PARTITIONS).values())
    c = z.counters()
    elapsed = time.monotonic() - t0
    cross = z.cross_zone_bytes(c)
    net = max(0.0, cross - idle_rate * elapsed)
    say(f"{label}: {log_bytes / MB:.2f} MB appended by the leaders in {produce_s:.1f} s; all replicas identical "
        f"after {elapsed:.1f} s; cross-zone {cross / MB:.2f} MB = {cross / log_bytes:.3f} x produced "
        f"(idle background {idle_rate / 1e3:.1f} kB/s); S3 links {z.s3_bytes(c) / MB:.2f} MB")
    print(f"        per zone link: {Zones.format_counters({k: v for k, v in c.items() if 's3' not in k})}")
    return {"produced": produced, "log_bytes": log_bytes, "cross": cross, "net": net, "s3": z.s3_bytes(c)}


def slow_tier(z: Zones, s3: S3Server, kc: KafkaCluster) -> None:
    """Step 3: tier a topic, read it back from S3, list the bucket with the CLI."""
    kc.create_topic(SLOW_TOPIC, partitions=SLOW_PARTITIONS, replication_factor=3, config=tiered_config())
    topic_id = kc.topic_id(SLOW_TOPIC)
    say(f"slow tier: topic {SLOW_TOPIC} (id {topic_id}): remote.storage.enable=true, segment.bytes=1MiB, "
        f"local.retention.ms=1000; producing {SLOW_RECORDS:,} records (keys, headers, codecs none/gzip/lz4/zstd) ...")
    # timestamps from now on (the harness's default, half an hour ago, would read as upload lag: a partition's
    # first batches have nothing to bound their append time by)
    produced = produce(kc, SLOW_TOPIC, SLOW_RECORDS, partitions=SLOW_PARTITIONS,
                       codecs=("none", "gzip", "lz4", "zstd"), ts0=int(time.time() * 1000))
    starts = wait_all_tiered(kc, SLOW_TOPIC, SLOW_PARTITIONS)
    objs = topic_objects(s3, topic_id, kc.prefix)
    say(f"slow tier: {objs.complete_segments()} rolled segments in s3://{s3.bucket}/{kc.prefix} and gone from the "
        f"brokers' disks (local logs start at {starts})")
    t1 = time.time()
    consumed = consume_all(kc, SLOW_TOPIC, produced.end_offsets())
    if consumed.errors:
        raise RuntimeError(f"consumer errors: {consumed.errors[:3]}")
    assert_same(produced.records, consumed.records)
    say(f"slow tier: read back {len(consumed.records):,} records from offset 0 in {time.time() - t1:.1f} s "
        "(served from S3 through the plugin): keys, values, headers and timestamps identical")
    argv = z.exec_prefix(0) + [str(cli_binary()), "-c", str(kc.nodes[0].properties_path),
                                "segments", "--topic", SLOW_TOPIC]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    say(f"slow tier: the bucket by the fasttier CLI (`fasttier -c <broker 0's server.properties> segments "
        f"--topic {SLOW_TOPIC}`, run inside az1):")
    print("\n".join("        " + ln for ln in lines[:6] + ([f"... {len(lines) - 6} more"] if len(lines) > 6 else [])))


LAG_BOUNDS = (100, 250, 500, 1000, 2500, 5000, 10000)  # ms: the plugin's upload-lag histogram buckets


def plugin_metrics(kc: KafkaCluster) -> list[dict]:
    """Per broker: the plugin's metrics now (JMX)."""
    return [Jmx(kc, i).plugin() for i in range(kc.n)]


def fast_tier_metrics(kc: KafkaCluster, before: list[dict]) -> dict:
    """Step 5: the fast tier's upload lag and the followers' byte sources over step 4, per broker: the plugin's
    counters (upload-lag histogram, bytes from S3 and from leaders) now minus `before` (plugin_metrics())."""
    say("fast tier: upload lag over step 4 (a leader appends a record batch -> the batch is in S3) and where the "
        "followers' bytes came from, per broker, from its plugin metrics over JMX:")
    print(f"        {'broker':<10}{'batches':>8}{'mean':>8}{'<=100ms':>9}{'<=250ms':>9}{'<=500ms':>9}{'<=1s':>8}"
          f"{'p99 within':>12}{'behind':>8}{'PUTs':>6}{'followers got: from S3':>24}{'from leaders':>14}")
    tot = {"fast": 0.0, "leader": 0.0}
    for i, m in enumerate(plugin_metrics(kc)):
        d = {k: v - before[i].get(k, 0) for k, v in m.items()}
        n = d.get("wal-upload-lag-count", 0)
        tot["fast"] += d.get("replication-fast-bytes-total", 0)
        tot["leader"] += d.get("replication-leader-bytes-total", 0)
        within = {le: d.get(f"wal-upload-lag-le-{le}ms", 0) / n if n else float("nan") for le in LAG_BOUNDS}
        p99 = next((f"{le} ms" for le in LAG_BOUNDS if within[le] >= 0.99), f"> {LAG_BOUNDS[-1]} ms")
        mean = d.get("wal-upload-lag-sum-ms", 0) / n if n else float("nan")
        shares = "".join(f"{within[le]:>9.1%}" for le in (100, 250, 500)) + f"{within[1000]:>8.1%}"
        print(f"        {f'{i} ({kc.zone_of(i)})':<10}{n:>8.0f}{mean:>6.0f}ms{shares}{p99:>12}"
              f"{m.get('wal-behind-ms', 0):>6.0f}ms{d.get('wal-put-requests-total', 0):>6.0f}"
              f"{d.get('replication-fast-bytes-total', 0) / MB:>21.2f} MB"
              f"{d.get('replication-leader-bytes-total', 0) / MB:>11.3f} MB")
    print("        (batches: uploaded by the broker as leader; mean and <=: their upload lag (the topic uses "
          "LogAppendTime, so a\n         batch's timestamp is its append time); behind: age of the oldest data "
          "not yet in S3, now; PUTs: fast-tier\n         objects written; followers got: record bytes the broker's "
          "followers got from S3 and from the leaders)")
    return tot


def table(stock: dict, fast: dict) -> list[str]:
    """Step 6. Ratios per produced byte (the two runs' batches differ a little in size)."""
    sp, fp = stock["log_bytes"], fast["log_bytes"]
    produced = f"{sp / MB:.2f} MB" if abs(sp - fp) < 0.01 * sp else f"{sp / MB:.2f} / {fp / MB:.2f} MB"
    rows = [("all bytes on the zone links", "cross"), ("replication only (net of idle)", "net")]
    head = f"{'bytes produced':>16}{'cross-zone, stock':>19}{'cross-zone, fasttier':>22}{'fasttier/stock':>16}"
    out = [f"  {'':<32}{head}", "  " + "-" * (32 + len(head))]
    for name, key in rows:
        ratio = (fast[key] / fp) / (stock[key] / sp) if stock[key] else float("nan")
        out.append(f"  {name:<32}{produced:>16}{stock[key] / MB:>16.2f} MB{fast[key] / MB:>19.2f} MB{ratio:>16.2%}")
    return out


def keep_running(z: Zones, s3: S3Server, kc: KafkaCluster, work: Path) -> None:
    """Step 7: how to reach the cluster; waits for Ctrl-C."""
    for i in range(z.n):  # clients run inside a zone resolve the brokers' advertised names to their zone addresses
        z.set_hosts(i, {n.name: n.host for n in kc.nodes})
    libs = kafka_libs(kc.version)
    java = (f"{java_bin()} -Dlog4j2.configurationFile={LOG4J2_CONFIG} -Dfasttier.test.log.file={work}/tools.log "
            f"-cp '{libs}/*'")
    cli = cli_binary()
    props = kc.nodes[0].properties_path
    ns = {p: z.ns(p) for p in z.places}
    n0, n1 = kc.nodes[0], kc.nodes[1]
    print()
    say("the fasttier cluster keeps running (replication through the fast tier). How to reach it:")
    print(f"""
  bootstrap servers (from this machine) : {kc.bootstrap_servers()}
      relayed by this process into each broker's own zone, so clients here add no cross-zone bytes
  namespaces                            : {', '.join(f'{p}={n}' for p, n in ns.items())}
      {'; '.join(f'{kc.zone_of(n.node_id)}: broker {n.node_id} {n.name} = {n.host}:{n.broker_port}' for n in kc.nodes)}
      S3 (MinIO) {s3.zone_endpoint} inside the bed, {s3.endpoint} from here; bucket {s3.bucket}, prefix {kc.prefix},
      access key {s3.access_key}, secret {s3.secret_key}
  logs and configs                      : {work / 'cluster'}/node-*/broker.log, server.properties

What to try next (copy and paste into another shell):

  # consume from a client placed in az2 (inside its namespace): broker 1 is local, the others cross zones
  ip netns exec {ns['az2']} {java} org.apache.kafka.tools.consumer.ConsoleConsumer \\
      --bootstrap-server {n1.name}:{n1.broker_port} --topic {SLOW_TOPIC} --from-beginning --max-messages 5

  # produce more at full speed (Kafka's perf tool, acks=all, the demo's batching: through the fast tier an
  # acks=all batch waits for the fast tier's round trip, so 16 KiB batches (Kafka's default) are slower)
  {java} org.apache.kafka.tools.ProducerPerformance --topic {TOPIC} --num-records 50000 --record-size 1000 \\
      --throughput -1 --producer-props bootstrap.servers={kc.bootstrap_servers()} batch.size=131072 linger.ms=20

  # watch the fast tier's lag and the followers' byte sources (broker 0's plugin metrics, every 2 s)
  {java} org.apache.kafka.tools.JmxTool --jmx-url service:jmx:rmi:///jndi/rmi://127.0.0.1:{n0.jmx_port}/jmxrmi \\
      --object-name '{RSM_MBEAN}' \\
      --attributes wal-behind-ms,wal-upload-lag-p99-ms,replication-fast-bytes-total,replication-leader-bytes-total \\
      --reporting-interval 2000 --date-format HH:mm:ss

  # bytes sent so far over the az1-az2 link (each end counts what it sent)
  ip -n {ns['az1']} -s link show to-az2; ip -n {ns['az2']} -s link show to-az1

  # what the tiers hold (the CLI reads S3 at {s3.zone_endpoint}, so run it inside a zone)
  ip netns exec {ns['az1']} {cli} -c {props} segments --topic {SLOW_TOPIC}
  ip netns exec {ns['az1']} {cli} -c {props} wal list
  ip netns exec {ns['az1']} {cli} -c {props} partition show --topic {TOPIC} \\
      --topic-id {kc.topic_id(TOPIC)} --partition 0 | head -30


To stop: Ctrl-C here (or kill -INT {os.getpid()}): stops the brokers and MinIO and deletes the namespaces.""")
    print(flush=True)
    while True:
        time.sleep(5)
        dead = [i for i in range(kc.n) if not kc.is_running(i)]
        if dead:
            say(f"broker(s) {dead} exited; see {work / 'cluster'}/node-*/broker.log. Ctrl-C to clean up.")
            time.sleep(3600)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep-running", action="store_true",
                    help="leave the fasttier cluster running at the end (Ctrl-C stops everything)")
    ap.add_argument("--mb", type=float, default=float(os.environ.get("DEMO_MB", "8")),
                    help="MB produced by the replication workload of each run (default 8)")
    args = ap.parse_args()
    ok, why = bed_support()
    if not ok:
        say(f"the demo runs in the three-zone test bed (network namespaces), which is unavailable here: {why}")
        return 2
    # Ctrl-C and SIGTERM clean up; SIGINT explicitly, since a shell starting the demo in the background has it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    work = REPO / "build" / "demo"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    t0 = time.time()
    rc = 1
    with contextlib.ExitStack() as stack:
        try:
            say("building the three-zone bed: network namespaces az1, az2, az3 and s3, a veth pair per link ...")
            z = stack.enter_context(Zones(n=3, s3=True))
            s3 = stack.enter_context(S3Server(buckets=("fasttier-demo",), data_dir=work / "s3", netns=z.s3_ns,
                                              host=z.s3_addr))
            say(f"{z!r}; MinIO in s3 at {s3.zone_endpoint}")

            say("1/6 stock replication (the baseline): 3 Kafka 4.4 brokers, one per zone ...")
            kc = KafkaCluster(3, plugin=True, s3=s3, zones=z, fast_tier=False, prefix="demo-stock/",
                              base_dir=work / "stock", name="demo-stock")
            stack.callback(kc.close, keep_dir=True)
            kc.start()
            stock = run_workload(z, kc, args.mb, "stock")
            kc.close(keep_dir=True)

            say("2/6 fasttier: 3 brokers, one per zone, slow tier + fast tier + replication through the fast tier ...")
            kc = KafkaCluster(3, plugin=True, s3=s3, zones=z, fast_replication=True, jmx=True, rsm_config=RSM,
                              prefix="demo/", base_dir=work / "cluster", name="demo")
            stack.callback(kc.close, keep_dir=True)
            kc.start()
            say(f"cluster up: bootstrap servers {kc.bootstrap_servers()}")
            say("3/6 the slow tier")
            slow_tier(z, s3, kc)
            say("4/6 replication through the fast tier, the same workload as step 1")
            before = plugin_metrics(kc)
            fast = run_workload(z, kc, args.mb, "fasttier")
            say("5/6 the fast tier")
            src = fast_tier_metrics(kc, before)
            say(f"6/6 cross-zone bytes, stock vs fasttier (the same {args.mb:g} MB workload, zone links az1-az2, "
                f"az1-az3, az2-az3):")
            print("\n".join(table(stock, fast)))
            print("\n".join("  " + ln for ln in (
                "bytes produced: the record batches the leaders appended (half of them lz4); the ratio is per "
                "produced byte;",
                "idle: what crossed zones with nothing produced, measured before each run and subtracted over its "
                "window.",
                f"S3 links during the workload: stock {stock['s3'] / MB:.2f} MB (8 MiB segments: nothing rolled yet), "
                f"fasttier {fast['s3'] / MB:.2f} MB",
                "(uploads and the followers' reads: object-storage traffic, not cross-zone transfer; "
                "docs/replication.md);",
                f"the followers got {src['fast'] / MB:.2f} MB of the topic's record bytes from S3 and "
                f"{src['leader'] / MB:.3f} MB from the leaders (across zones).")))
            say(f"done in {time.time() - t0:.0f} s")
            rc = 0
            if args.keep_running:
                keep_running(z, s3, kc, work)
        except KeyboardInterrupt:
            print()
            say("stop asked for" if rc == 0 else "interrupted")
            rc = 0 if rc == 0 else 130
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("stopping the brokers and MinIO, deleting the namespaces ...")
    say(f"stopped; logs and configs kept in {work}")
    return rc

if __name__ == "__main__":
    sys.exit(main())
