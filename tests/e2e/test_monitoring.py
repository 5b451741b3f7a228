"""monitoring/ against a real run: three brokers with the plugin, the fast tier and replication through it (the
three-zone bed), each with the Prometheus JMX exporter java agent (jmx_prometheus_javaagent from Maven Central)
and monitoring/prometheus-jmx-rules.yaml. While a producer runs, the exporters' /metrics are scraped on
loopback every few seconds; then every query of monitoring/grafana-dashboard.json is evaluated over the
scraped series (monitoring/tools/promlite.py: the dashboard's own PromQL, rate() and sums) and must give a
value for every legend it names, with the values a working cluster shows (data uploaded to the fast tier,
partitions served from it, a finite cost per GB).

    python3 -m pytest tests/e2e/test_monitoring.py -x -q          # about 2 minutes
    # the run behind docs/img/dashboard.png: longer, an S3 outage in the middle, old data read back at the end
    FASTTIER_MONITORING_SECONDS=240 FASTTIER_MONITORING_SCRAPE=/tmp/scrape.json \\
        python3 -m pytest tests/e2e/test_monitoring.py -x -q -s
    python3 monitoring/tools/render_dashboard.py /tmp/scrape.json docs/img/dashboard.png
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from harness import free_ports, wait_until
from harness.data import consume_all
from harness.procs import LOOPBACK, REPO_ROOT
from harness.tiering import tiered_config
from harness.workload import ContinuousProducer
from harness.zones import bed_support, bed_with_s3

sys.path.insert(0, str(REPO_ROOT / "monitoring" / "tools"))
import promlite  # noqa: E402

_ok, _why = bed_support()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.plugin,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not _ok, reason=f"zones test bed unavailable: {_why}"),
]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
AGENT_VERSION = "1.0.1"  # the newest jmx_prometheus_javaagent on Maven Central (later releases are on GitHub only)
RULES = REPO_ROOT / "monitoring" / "prometheus-jmx-rules.yaml"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana-dashboard.json"
PRODUCE_S = float(os.environ.get("FASTTIER_MONITORING_SECONDS", "20"))  # at least; then until the queries answer
SCRAPE_OUT = os.environ.get("FASTTIER_MONITORING_SCRAPE")
PICTURE = PRODUCE_S >= 120  # the long run: an S3 outage in the middle and a read of old data at the end
SCRAPE_S = 5.0
RATE_INTERVAL = "30s"  # what $__rate_interval stands for: a few scrape intervals
TOPIC = "mon"
PARTITIONS = 6
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]] * 2  # two partitions led in each zone
RSM = {"wal.upload.interval.ms": 100, "replication.fast.poll.ms": 20, "replication.fast.max.lag.ms": 10000,
       "wal.cleanup.interval.ms": 2000, "wal.safety.horizon.ms": 3000}


def agent_jar() -> Path:
    """The exporter agent, resolved from Maven Central into the local Maven repository once."""
    jar = (Path.home() / ".m2" / "repository" / "io" / "prometheus" / "jmx" / "jmx_prometheus_javaagent"
           / AGENT_VERSION / f"jmx_prometheus_javaagent-{AGENT_VERSION}.jar")
    if not jar.exists():
        r = subprocess.run(["mvn", "-B", "-q", "-Dstyle.color=never", "dependency:get", "-Dtransitive=false",
                            f"-Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:{AGENT_VERSION}"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and jar.exists(), (
            f"mvn could not fetch the JMX exporter agent:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return jar


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, expr, legend format) of every query of the dashboard."""
    d = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"], t.get("legendFormat", "")) for p in d["panels"] for t in p.get("targets", [])]


def dashboard_variables() -> dict[str, str]:
    d = json.loads(DASHBOARD.read_text())
    v = {x["name"]: x["query"] for x in d["templating"]["list"] if x["type"] in ("textbox", "constant")}
    v["__rate_interval"] = RATE_INTERVAL
    return v


class Scraper:
    """Scrapes every exporter's /metrics on loopback every SCRAPE_S seconds into promlite.Samples."""

    def __init__(self, ports: dict[int, int]) -> None:
        self.ports = ports
        self.samples = promlite.Samples()
        self.errors: list[str] = []
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self.lock = threading.Lock()

    def scrape_once(self) -> None:
        t = time.time()
        for node, port in self.ports.items():
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as r:
                    text = r.read().decode()
            except OSError as e:
                self.errors.append(f"broker-{node}: {e}")
                continue
            with self.lock:
                dups = self.samples.add_scrape(t, text, {"instance": f"broker-{node}", "job": "kafka"})
            if dups:
                self.errors.append(f"broker-{node}: duplicate series {dups[:3]}")
        self.scrapes += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.scrape_once()
            self._stop.wait(max(0.0, SCRAPE_S - (time.monotonic() - t0)))

    def start(self) -> "Scraper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def evaluate_dashboard(samples: promlite.Samples, at: float = math.inf) -> tuple[dict, list[str]]:
    """Every dashboard query at the newest scrape up to `at`: {(panel, expr): {labels: value}}, and what is
    wrong."""
    ev = promlite.Evaluator(samples)
    t = max(x for x in samples.times() if x <= at)
    variables = dashboard_variables()
    results, problems = {}, []
    names = samples.names()
    for title, expr, fmt in dashboard_targets():
        node = promlite.parse(promlite.substitute(expr, variables))
        missing = sorted({s.name for s in promlite.selectors(node)} - names)
        if missing:
            problems.append(f"[{title}] no series {missing} for {expr}")
            continue
        v = ev.eval(node, t)
        v = v if isinstance(v, dict) else {(): v}
        results[(title, expr)] = v
        if not v:
            problems.append(f"[{title}] empty result: {expr}")
            continue
        for labels in v:
            have = dict(labels)
            gone = [ln for ln in re.findall(r"\{\{\s*(\w+)\s*\}\}", fmt) if not have.get(ln)]
            if gone:
                problems.append(f"[{title}] legend {fmt!r} names {gone}, absent from {have} ({expr})")
                break
        if any(math.isnan(x) for x in v.values()):
            problems.append(f"[{title}] NaN in {v} ({expr})")
    return results, problems


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    with bed_with_s3(tmp_path_factory.mktemp("s3")) as zs:
        yield zs


def first(results: dict, title: str, expr_part: str = "") -> dict:
    for (t, e), v in results.items():
        if t == title and expr_part in e:
            return v
    raise KeyError(f"{title} / {expr_part}")


def test_dashboard_queries_have_series_from_the_rules(bed, make_cluster):
    started = time.monotonic()
    jar = agent_jar()
    ports = dict(enumerate(free_ports(3)))
    z, s3 = bed
    kc = make_cluster(
        3, version=VERSION, plugin=True, s3=s3, zones=z, name="monitoring", rsm_config=RSM,
        fast_replication=True, start=False,
        node_jvm_args={i: [f"-javaagent:{jar}={LOOPBACK}:{port}:{RULES}"] for i, port in ports.items()},
    )
    for i, port in ports.items():  # the agent listens on loopback inside the broker's zone
        z.forward(kc.nodes[i].zone, LOOPBACK, port, listen_port=port)
    kc.start()
    kc.create_topic(TOPIC, config=tiered_config(**{"segment.ms": 8000}), replica_assignment=ASSIGNMENT)
    kc.wait_for_isr(TOPIC, 3)
    print(f"\n[monitoring] cluster up and topic in sync after {time.monotonic() - started:.0f}s")
    scraper = Scraper(ports)
    scraper.scrape_once()
    assert not scraper.errors, scraper.errors
    scraper.start()
    prod = ContinuousProducer(kc, TOPIC, PARTITIONS, rate=800, value_size=1000, linger_ms=20).start()
    t0 = time.monotonic()
    try:
        if PICTURE:
            time.sleep(PRODUCE_S / 2)
            s3.stop()  # the fast tier and the copies fail, followers fall back to the leaders
            time.sleep(20)
            s3.start()
            time.sleep(max(0.0, PRODUCE_S - (time.monotonic() - t0)))
        else:
            time.sleep(PRODUCE_S)
        problems: list[str] = []

        def complete() -> bool:
            nonlocal problems
            with scraper.lock:
                _, problems = evaluate_dashboard(scraper.samples)
            return not problems

        # per-partition metrics are registered by a periodic refresh; Kafka's copy lag once a task ran
        wait_until(complete, 60, SCRAPE_S, lambda: "every dashboard query to have series:\n  " + "\n  ".join(problems))
        print(f"[monitoring] every query answered after {time.monotonic() - t0:.0f}s of produce")
    finally:
        produced_until = time.time()
        acked = prod.stop()
    if PICTURE:  # old data back from the slow tier: the remote-read series move
        consume_all(kc, TOPIC, {p: max((o for (q, o) in acked.records if q == p), default=-1) + 1
                                for p in range(PARTITIONS)}, timeout=180)
        time.sleep(3 * SCRAPE_S)
    scraper.stop()

    with scraper.lock:
        samples = scraper.samples
    results, problems = evaluate_dashboard(samples, at=produced_until)
    assert not problems, "\n".join(problems)
    assert not scraper.errors, scraper.errors[:5]  # every scrape answered, no duplicate series
    print(f"\n[monitoring] {scraper.scrapes} scrapes of 3 exporters, {len(samples.series)} series, "
          f"{len(samples.names())} metric names; scrape errors {len(scraper.errors)}")
    for (title, expr), v in results.items():
        shown = ", ".join(f"{promlite.legend('', k) or '-'}={x:.4g}" for k, x in sorted(v.items()))
        print(f"[monitoring] {title}: " + shown[:300])

    # what a working cluster shows
    uploads = first(results, "Fast tier: uploads", "wal_record_bytes_total")
    assert len(uploads) == 3 and all(x > 0 for x in uploads.values()), uploads
    from_fast = first(results, "Replication bytes: fast tier vs leader", "replication_fast_bytes_total")
    assert len(from_fast) == 3 and all(x > 0 for x in from_fast.values()), from_fast
    source = first(results, "Replication source per partition")
    ours = {k: x for k, x in source.items()}
    assert len(ours) >= 2 * PARTITIONS, ours  # every partition has two followers
    assert sum(1 for x in ours.values() if x == 1) >= PARTITIONS, ours
    lag = first(results, "Slow tier: tiering lag (bytes not yet copied)")
    assert any(dict(k).get("topic") == TOPIC for k in lag), lag
    per_gb = first(results, "Object-store cost per GB produced", "total")
    assert all(0 < x < 10 for x in per_gb.values()), per_gb

    if SCRAPE_OUT:
        Path(SCRAPE_OUT).write_text(json.dumps({"scrape_interval_s": SCRAPE_S, "rate_interval": RATE_INTERVAL,
                                                "series": samples.to_json()}))
        print(f"[monitoring] scraped samples written to {SCRAPE_OUT}")
