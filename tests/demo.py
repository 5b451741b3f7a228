#!/usr/bin/env python3
"""The fasttier demo (`make demo`): a real local cluster with the plugin, on an embedded MinIO.

1. starts MinIO on 127.0.0.1 and a 3-broker KRaft cluster (stock Kafka 4.4 jars) with the fasttier plugin;
2. creates a topic with `remote.storage.enable=true`, 1 MiB segments and 1 s of local retention;
3. produces 60,000 records (keys, headers, four compression codecs) with acks=all;
4. waits until every rolled segment is in the bucket and gone from the brokers' disks;
5. reads the topic back from offset 0 — served from S3 through the plugin — and checks every record;
6. prints where to look, and keeps the cluster running until Enter (or exits at once without a terminal,
   or with DEMO_EXIT=1).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import KafkaCluster, S3Server  # noqa: E402
from harness.data import assert_same, consume_all, produce  # noqa: E402
from harness.tiering import tiered_config, topic_objects, wait_all_tiered  # noqa: E402

TOPIC = "demo-orders"
PARTITIONS = 3
RECORDS = 60_000


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stdout.isatty() else f"[demo] {msg}", flush=True)


def cli_path() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "fasttier"


def main() -> int:
    work = REPO / "build" / "demo"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    t0 = time.time()
    say("starting MinIO (S3-compatible server) on 127.0.0.1 ...")
    with S3Server(buckets=("fasttier-demo",), data_dir=work / "s3") as s3:
        say(f"MinIO at {s3.endpoint}, bucket {s3.bucket}")
        say("starting 3 Kafka 4.4 brokers (KRaft) with the fasttier plugin ...")
        kc = KafkaCluster(n_brokers=3, plugin=True, s3=s3, prefix="demo/", base_dir=work / "cluster", name="demo")
        try:
            kc.start()
            say(f"cluster up: bootstrap servers {kc.bootstrap_servers()}")
            kc.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3, config=tiered_config())
            topic_id = kc.topic_id(TOPIC)
            say(f"topic {TOPIC} (id {topic_id}): remote.storage.enable=true, segment.bytes=1MiB, "
                "local.retention.ms=1000")
            say(f"producing {RECORDS:,} records with acks=all (codecs none, gzip, lz4, zstd) ...")
            produced = produce(kc, TOPIC, RECORDS, partitions=PARTITIONS, codecs=("none", "gzip", "lz4", "zstd"))
            say("waiting until every rolled segment is in S3 and deleted from local disk ...")
            starts = wait_all_tiered(kc, TOPIC, PARTITIONS)
            objs = topic_objects(s3, topic_id, kc.prefix)
            total = s3.total_bytes(kc.prefix)
            say(f"tiered: {objs.complete_segments()} segments ({total / 1e6:.1f} MB) in s3://{s3.bucket}/{kc.prefix}; "
                f"local logs now start at offsets {starts}")
            say("reading everything back from offset 0 (served from S3 through the plugin) ...")
            t1 = time.time()
            consumed = consume_all(kc, TOPIC, produced.end_offsets())
            if consumed.errors:
                say(f"consumer errors: {consumed.errors[:3]}")
                return 1
            assert_same(produced.records, consumed.records)
            say(f"read back {len(consumed.records):,} records in {time.time() - t1:.1f}s: every key, value, header "
                f"and timestamp identical to what was produced")
            cli = cli_path()
            props = kc.nodes[0].properties_path
            if cli.exists():
                say(f"what the bucket holds, by the fasttier CLI ({cli} -c {props} segments --topic {TOPIC}):")
                out = subprocess.run([str(cli), "-c", str(props), "segments", "--topic", TOPIC],
                                     capture_output=True, text=True, timeout=60)
                lines = out.stdout.splitlines()
                print("\n".join(lines[:8] + ([f"  ... {len(lines) - 8} more"] if len(lines) > 8 else [])))
            print()
            say(f"done in {time.time() - t0:.0f}s. Where to look:")
            print(f"  bootstrap servers : {kc.bootstrap_servers()}")
            print(f"  broker logs       : {work / 'cluster'}/node-*/broker.log  (grep fasttier)")
            print(f"  broker configs    : {work / 'cluster'}/node-*/server.properties")
            print(f"  S3 (MinIO)        : {s3.endpoint}  bucket={s3.bucket}  access key={s3.access_key} "
                  f"secret={s3.secret_key}  prefix={kc.prefix}")
            print(f"  inspect / verify  : {cli} -c {props} segments | verify")
            if sys.stdin.isatty() and os.environ.get("DEMO_EXIT") != "1":
                input("\n[demo] cluster is running; press Enter to stop it ... ")
            return 0
        finally:
            say("stopping the cluster and MinIO")
            kc.close(keep_dir=True)


if __name__ == "__main__":
    sys.exit(main())
