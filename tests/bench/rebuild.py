"""fasttier rebuild benchmark: prints figures, asserts nothing about speed. Entry point: make bench-rebuild.
What the figures mean: docs/benchmarks.md, "Rebuilding a broker".

    python3 tests/bench/rebuild.py [--mb 300] [--partitions 3] [--segment-mib 16] [--local-retention-mib 32]
                                   [--downtime-mb 2] [--out build/bench-rebuild]
    FASTTIER_REBUILD_BENCH_MB=500 make bench-rebuild

In the three-zone test bed (tests/harness/zones.py: one broker per zone, MinIO in its own namespace, a veth
pair and byte counters per link), a tiered topic (RF=3, acks=all, min.insync.replicas=2) is led by the
brokers in az1 and az2 and followed by the broker in az3. After --mb MB are produced and tiered, the az3
broker loses its data disk twice:
  fasttier  `fasttier rebuild` run in az3 (the broker's own server.properties, local retention as the
            topic's) writes the partitions back from the slow and fast tier; the broker restarts;
  stock     the broker restarts on the empty disk and Kafka replicates from the leaders (a tiered topic
            from each leader's local log start).
Each time --downtime-mb MB are produced while the broker is down (the remainder it must fetch). Figures:
wall time (CLI, broker start until it is in the ISR of every partition it hosts), bytes az3 received from
the other zones, bytes from S3, what the broker had to fetch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

from bench import _md, load_note, machine  # noqa: E402
from harness import KafkaCluster, S3Server  # noqa: E402
from harness.data import produce  # noqa: E402
from harness.rebuild import (  # noqa: E402
    MB,
    fasttier_round,
    idle_rate_into,
    same_as_leaders,
    stock_round,
    wait_tiered,
)
from harness.zones import Zones, bed_support  # noqa: E402

MIB = 1 << 20
TOPIC = "rebuild-bench"
NODE = 2
VALUE_SIZE = (4000, 6000)  # bytes per record value


def log(msg: str) -> None:
    print(f"[bench-rebuild {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def records(mb: float) -> int:
    return max(1, int(mb * MB / (sum(VALUE_SIZE) / 2 + 100)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=float(os.environ.get("FASTTIER_REBUILD_BENCH_MB", "300")),
                    help="MB produced before the disk is lost (env FASTTIER_REBUILD_BENCH_MB; default 300)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--segment-mib", type=int, default=16)
    ap.add_argument("--local-retention-mib", type=int, default=32, help="local.retention.bytes per partition")
    ap.add_argument("--downtime-mb", type=float, default=2.0, help="MB produced while the broker is down")
    ap.add_argument("--version", default=os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0"))
    ap.add_argument("--out", default=str(REPO / "build" / "bench-rebuild"))
    a = ap.parse_args()
    ok, why = bed_support()
    if not ok:
        raise SystemExit(f"the zones test bed is unavailable here: {why}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    assignment = [[p % 2, 1 - p % 2, NODE] for p in range(a.partitions)]  # led in az1 / az2, followed in az3
    retention = a.local_retention_mib * MIB
    keep = bool(os.environ.get("FASTTIER_KEEP_TMP"))
    work = Path(tempfile.mkdtemp(prefix="ftbench-rebuild-", dir="/var/tmp"))
    result: dict = {"machine": machine(), "args": vars(a), "started": stamp}
    log(f"work dir {work}; {a.mb:.0f} MB into {a.partitions} partitions, segments {a.segment_mib} MiB, "
        f"local retention {a.local_retention_mib} MiB per partition, {a.downtime_mb} MB while down")
    with Zones(n=3, s3=True) as z, S3Server(buckets=["fasttier-rebuild-bench"], data_dir=work / "s3",
                                           netns=z.s3_ns, host=z.s3_addr) as s3:
        kc = KafkaCluster(3, version=a.version, plugin=True, s3=s3, zones=z, name="bench-rebuild",
                          base_dir=work / "cluster", rsm_config={"wal.upload.interval.ms": 200})
        try:
            kc.start()
            zone = kc.zone_of(NODE)
            kc.create_topic(TOPIC, replica_assignment=assignment, config={
                "remote.storage.enable": "true", "min.insync.replicas": 2, "segment.bytes": a.segment_mib * MIB,
                "local.retention.bytes": retention, "file.delete.delay.ms": 1000,
            })
            kc.wait_for_isr(TOPIC, 3)
            idle = idle_rate_into(z, zone)
            n = records(a.mb)
            t0 = time.monotonic()
            produce(kc, TOPIC, n, partitions=a.partitions, value_size=VALUE_SIZE, timeout=1800)
            log(f"produced {n} records in {time.monotonic() - t0:.0f}s; waiting for the tiers")
            # the leaders' local retention at work (once the segments are copied) when there is enough data
            deleted = a.mb * MB / a.partitions > 2 * retention + a.segment_mib * MIB
            leaders, leo = wait_tiered(kc, NODE, TOPIC, a.partitions, local_deleted=deleted, timeout=900)
            m = records(a.downtime_mb)

            def downtime(start):
                return lambda: produce(kc, TOPIC, m, partitions=a.partitions, value_size=VALUE_SIZE, start_index=start)

            log("fasttier rebuild")
            result["load_before_fasttier"] = load_note()
            f = fasttier_round(kc, z, NODE, TOPIC, ["--local-retention-bytes", str(retention)], leaders,
                               downtime(n))
            same_as_leaders(kc, NODE, TOPIC, leaders, timeout=600)
            log("stock rebuild")
            result["load_before_stock"] = load_note()
            s = stock_round(kc, z, NODE, TOPIC, a.partitions, downtime(n + m))
            same_as_leaders(kc, NODE, TOPIC, leaders, timeout=600)
        except BaseException:
            keep = True
            raise
        finally:
            if keep:
                log(f"kept {work}")
            kc.close(keep_dir=keep)
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    restored = f.report["bytes"]
    result.update({
        "idle_into_zone_bytes_per_s": idle,
        "leader_log_end": leo,
        "fasttier": {
            "cli_seconds": f.cli.seconds, "rejoin_seconds": f.rejoin.seconds, "total_seconds": f.seconds,
            "restored_bytes": restored, "slow_bytes": sum(p["slow_bytes"] for p in f.report["partitions"]),
            "fast_bytes": sum(p["fast_bytes"] for p in f.report["partitions"]),
            "s3_to_zone_bytes_during_cli": f.during_cli.get(("s3", zone), 0),
            "cross_zone_into_zone": f.rejoin.into_zone, "remainder_bytes": f.remainder,
            "internal_topic_bytes": f.internal, "window_seconds": f.rejoin.window,
            "report": f.report,
        },
        "stock": {
            "rejoin_seconds": s.rejoin.seconds, "cross_zone_into_zone": s.rejoin.into_zone,
            "fetched_bytes": s.fetched, "internal_topic_bytes": s.internal, "window_seconds": s.rejoin.window,
        },
    })
    rows = [
        ["fasttier rebuild", f"{f.cli.seconds:.1f}", f"{f.rejoin.seconds:.1f}", f"{f.seconds:.1f}",
         f"{restored / MB:.1f} (slow {result['fasttier']['slow_bytes'] / MB:.1f}, "
         f"fast {result['fasttier']['fast_bytes'] / MB:.1f})",
         f"{result['fasttier']['s3_to_zone_bytes_during_cli'] / MB:.1f}",
         f"{f.rejoin.into_zone / MB:.2f}", f"{f.remainder / MB:.2f}"],
        ["stock (wipe + restart)", "-", f"{s.rejoin.seconds:.1f}", f"{s.rejoin.seconds:.1f}", "-", "-",
         f"{s.rejoin.into_zone / MB:.2f}", f"{s.fetched / MB:.2f}"],
    ]
    table = _md(["rebuild", "CLI s", "start → in ISR s", "total s", "restored from S3 MB", f"S3 → {zone} MB",
                 f"cross-zone into {zone} MB", "fetched from leaders MB"], rows)
    ratio = s.rejoin.into_zone / max(1, f.rejoin.into_zone)
    summary = (f"Kafka {a.version}, {a.partitions} partitions, {n} records ({a.mb:.0f} MB) + {m} records "
               f"({a.downtime_mb} MB) while down; segments {a.segment_mib} MiB, local retention "
               f"{a.local_retention_mib} MiB/partition; idle background into {zone} {idle / 1e3:.1f} kB/s; "
               f"internal topics {f.internal / MB:.2f} MB; cross-zone bytes stock / fasttier = {ratio:.1f}x")
    print("\n" + summary + "\n\n" + table + "\n")
    (out / f"results-{stamp}.json").write_text(json.dumps(result, indent=1, default=str))
    (out / f"figures-{stamp}.md").write_text(summary + "\n\n" + table + "\n")
    log(f"wrote {out}/results-{stamp}.json and figures-{stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
