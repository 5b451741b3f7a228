"""Remote reads when the store is elsewhere: the object store behind a link of limited bandwidth.

    python3 tests/bench/store_link.py [--rates 0,4000,2000,1000] [--ttfb-ms 0] [--quick] [--out build/bench]
    (make bench-link)

`make bench` (bench.py) measures a remote read against MinIO on loopback, on the same 2 CPUs as the broker
and the consumer: there the store answers at memory speed and the figure is the CPU cost of every process
involved. In a deployment the store is on other machines and a broker reaches it over a network; what limits
a raw GET there is the store's bandwidth and latency, and the question the slow-tier target asks is how much
of that a consumer reading through a broker keeps. This benchmark measures that on one machine:

* the zones bed (harness/zones.py) with one zone and the S3 namespace: MinIO in its namespace, the broker
  (one node, RF=1, the plugin at its defaults) in zone az1, the two linked by a veth pair;
* the direction store -> broker capped with a `tbf` qdisc at each rate in turn (0 = no cap: the veth at
  memory speed, like loopback); the upload direction is never capped;
* at each rate, in the broker's namespace: the raw GET baseline (`fasttier-bench get --mode seq`: the
  plugin's own S3 client, chunk-sized ranged GETs in order with 1 + read.ahead.chunks in flight, on the very
  .log objects the broker serves) before and after the read -- the faster of the two is the baseline -- and a
  consumer (tests/bench/consume.py, confluent-kafka) reading the fully tiered partition from offset 0, run
  with `ip netns exec` inside az1 too, so that neither crosses the harness's userspace forwarders;
* with fetch sizes of 16 MiB and 1 MiB (the client default), on a broker with Kafka's defaults and then on one
  with socket.send.buffer.bytes=-1 (docs/benchmarks.md explains why that setting matters for remote reads);
* with --ttfb-ms N, a distant store's time to first byte too: `fasttier-bench delay-relay` runs in the store's
  namespace in front of MinIO and holds every request N ms before passing it on (this kernel has no netem).
  The broker and the raw GET baseline both reach the store only through it; answers are not delayed, and the
  link cap still applies to them.

Prints a table (and writes build/bench/link-<time>.json / .md). Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
from bench import BROKER_HEAP, BUCKET, MIB, RSM, SEGMENT_BYTES, load_note, log, native, produce, read_pass, segment_info  # noqa: E402
from harness import KafkaCluster, S3Server  # noqa: E402
from harness.jmx import Jmx  # noqa: E402
from harness.procs import ManagedProcess, StopWaiting, tail, wait_until  # noqa: E402
from harness.tiering import wait_all_tiered  # noqa: E402
from harness.zones import Zones, bed_support  # noqa: E402


def rate_name(mbit: float) -> str:
    return "no cap (veth)" if not mbit else f"{mbit / 1000:g} Gbit/s"


class DelayRelay:
    """`fasttier-bench delay-relay` inside a namespace: host:<any port> -> target, requests held `ms`
    (`extra_args`, e.g. ("--method-delay", "PUT=30"), are passed on: per-method delays, see delay_relay.rs).
    A harness ManagedProcess, so it never outlives the benchmark; its output goes to `log_path`."""

    def __init__(self, argv_prefix: tuple[str, ...], host: str, target: str, ms: int, log_path: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.proc = ManagedProcess(
            "delay-relay", list(argv_prefix) + [bench.bench_bin(), "delay-relay", "--listen", f"{host}:0",
                                                "--target", target, "--delay-ms", str(ms), *extra_args], log_path)
        try:
            self.address = wait_until(lambda: self._listening(log_path), 20, 0.1,
                                      f"delay-relay to {target} to print its address ({log_path})")
        except Exception:
            self.close()
            raise
        self.endpoint = f"http://{self.address}"

    def _listening(self, log_path: Path) -> str | None:
        if not self.proc.running():
            raise StopWaiting(f"delay-relay exited with {self.proc.returncode}: {tail(log_path)}")
        for line in log_path.read_text().splitlines():
            if line.startswith("{"):
                return json.loads(line)["listen"]
        return None

    def cpu(self) -> float:
        return bench.proc_cpu(self.proc.pid)

    def close(self) -> None:
        self.proc.kill()


def run(rates: list[float], quick: bool, fetches: list[int], work: Path, ttfb_ms: int = 0,
        sets: dict | None = None) -> dict:
    res: dict = {"rates_mbit": rates, "ttfb_ms": ttfb_ms, "sets": dict(sets or {}), "rows": [],
                 "machine": bench.machine()}
    with Zones(n=1, s3=True) as z, S3Server(buckets=[BUCKET], data_dir=work / "minio", netns=z.s3_ns,
                                            host=z.s3_addr) as s3:
        relay = kc = None
        endpoint = s3.zone_endpoint
        rsm = {**RSM, **(sets or {})}
        try:
            if ttfb_ms:
                relay = DelayRelay(tuple(z.exec_prefix("s3")), z.s3_addr, f"{z.s3_addr}:{s3.port}", ttfb_ms,
                                   work / "delay-relay.log")
                endpoint = rsm["s3.endpoint"] = relay.endpoint
                log(f"store reached through delay-relay {relay.address}: every request held {ttfb_ms} ms")
            kc = KafkaCluster(1, plugin=True, s3=s3, zones=z, jmx=True, heap=BROKER_HEAP, rsm_config=rsm,
                              name="link", base_dir=work / "kafka", prefix=f"bench-{uuid.uuid4().hex[:6]}/")
            kc.start()
            node = kc.nodes[0]
            z.set_hosts(0, {node.name: node.host})
            inside = tuple(z.exec_prefix(0))
            bootstrap = f"{node.name}:{node.broker_port}"
            jmx = Jmx(kc, 0)
            res["kafka_version"] = kc.version
            segs = 3 if quick else 6
            kc.create_topic("r1", 1, replication_factor=1, config={
                "remote.storage.enable": "true", "segment.bytes": SEGMENT_BYTES, "local.retention.ms": 1000,
                "retention.ms": -1, "file.delete.delay.ms": 1000,
            })
            t0 = time.monotonic()
            produce(kc, "r1", 1, int((segs + 0.5) * SEGMENT_BYTES))
            starts = wait_all_tiered(kc, "r1", 1, timeout=600)
            tid = kc.topic_id("r1")
            seg_bytes, counts = segment_info(s3, kc, "r1", tid, 1)
            log(f"r1: {counts[0]} segments, {seg_bytes / 1e6:.0f} MB tiered in {time.monotonic() - t0:.0f}s; "
                f"local log start {starts[0]}")
            res["segment_bytes"], res["segments"] = seg_bytes, counts[0]
            groups = [{0: starts[0]}]

            def baseline(rate: float) -> dict:
                b = native(s3, kc.prefix, "get", "--topic", "r1", "--topic-id", tid, "--mode", "seq",
                           endpoint=endpoint, argv_prefix=inside, sets=sets)
                log(f"  raw seq at {rate_name(rate)}: {b['mbps']:.0f} MB/s (client CPU {b['cpu']['client_secs']:.2f}s, "
                    f"MinIO {b['cpu']['minio_secs']:.2f}s)")
                return b

            for broker in ("Kafka defaults", "socket.send.buffer.bytes=-1"):
                if broker != "Kafka defaults":
                    kc.broker_overrides["socket.send.buffer.bytes"] = -1
                    kc.restart_broker(0)
                z.set_rate("s3", 0, None)
                read_pass(kc, jmx, "r1", groups, seg_bytes, 16 * MIB, f"warm-up ({broker}, not reported)",
                          bootstrap=bootstrap, argv_prefix=inside)
                for rate in rates:
                    z.set_rate("s3", 0, rate)
                    b0 = baseline(rate)
                    for f in fetches:
                        r0 = relay.cpu() if relay else 0.0
                        p = read_pass(kc, jmx, "r1", groups, seg_bytes, f,
                                      f"{broker}, {rate_name(rate)}, fetch {f // MIB} MiB",
                                      bootstrap=bootstrap, argv_prefix=inside)
                        p["cpu"]["relay_secs"] = relay.cpu() - r0 if relay else 0.0
                        res["rows"].append({"broker": broker, "rate_mbit": rate, "fetch_bytes": f, "pass": p,
                                            "baseline_before": b0})
                    b1 = baseline(rate)
                    for r in res["rows"]:
                        if r["broker"] == broker and r["rate_mbit"] == rate:
                            r["baseline_after"] = b1
                z.set_rate("s3", 0, None)
        finally:
            if kc:
                kc.close(keep_dir=bool(os.environ.get("FASTTIER_KEEP_TMP")))
            if relay:
                relay.close()
    return res


def table(res: dict) -> str:
    head = ["broker", "store -> broker", "fetch", "remote read", "raw seq GET (faster of 2)", "ratio",
            "RLM.read ms/fetch", "broker CPU s/GB", "MinIO CPU s/GB", "consumer CPU s/GB", "load"]
    relayed = bool(res.get("ttfb_ms"))
    if relayed:
        head.insert(-1, "delay-relay CPU s/GB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["rows"]:
        p = r["pass"]
        base = max(r["baseline_before"]["mbps"], r.get("baseline_after", r["baseline_before"])["mbps"])
        gb = p["segment_bytes"] / 1e9
        m = p["metrics"]
        lines.append("| " + " | ".join([
            r["broker"], rate_name(r["rate_mbit"]), f"{r['fetch_bytes'] // MIB} MiB", f"{p['mbps']:.0f} MB/s",
            f"{base:.0f} MB/s", f"{100 * p['mbps'] / base:.0f}%", f"{m['remote_read_ms_mean']:.1f}",
            f"{p['cpu']['broker_secs'] / gb:.2f}", f"{p['cpu']['minio_secs'] / gb:.2f}",
            f"{p['cpu']['consumer_secs'] / gb:.2f}",
            *([f"{p['cpu'].get('relay_secs', 0.0) / gb:.2f}"] if relayed else []),
            str(p["load"].get("loadavg1", "")),
        ]) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="0,4000,2000,1000", help="Mbit/s caps of store -> broker, 0 = none")
    ap.add_argument("--fetch-mib", default="16,1", help="consumer max.partition.fetch.bytes, MiB")
    ap.add_argument("--ttfb-ms", type=int, default=0,
                    help="hold every request to the store this long (a distant store's time to first byte)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="plugin setting (without rsm.config.) for the broker and the raw baseline, e.g. "
                         "read.ahead.chunks=8 (the baseline's window is 1 + read.ahead.chunks)")
    ap.add_argument("--quick", action="store_true", help="3 segments instead of 6 (a smoke run)")
    ap.add_argument("--out", default=str(REPO / "build" / "bench"))
    a = ap.parse_args()
    ok, why = bed_support()
    if not ok:
        print(f"store_link: cannot build the zones bed: {why}", file=sys.stderr)
        return 2
    rates = [float(x) for x in a.rates.split(",")]
    fetches = [int(x) * MIB for x in a.fetch_mib.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ftbench-link-", dir="/var/tmp"))
    try:
        log(f"store behind a capped link: rates {a.rates} Mbit/s, fetches {a.fetch_mib} MiB, "
            f"time to first byte +{a.ttfb_ms} ms; load {load_note()}")
        sets = dict(kv.split("=", 1) for kv in a.set)
        res = run(rates, a.quick, fetches, work, a.ttfb_ms, sets)
    finally:
        if not os.environ.get("FASTTIER_KEEP_TMP"):
            shutil.rmtree(work, ignore_errors=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"link-{stamp}.json").write_text(json.dumps(res, indent=1, default=str))
    t = table(res)
    (out / f"link-{stamp}.md").write_text(t + "\n")
    print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
