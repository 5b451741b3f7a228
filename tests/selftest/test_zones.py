"""Self-test of the zones test bed (harness/zones.py): namespaces, links, counters, latency, the loopback
forwarders, and a plain cluster plus MinIO placed in the zones. Needs root and iproute2:
    python3 -m pytest tests/selftest/test_zones.py -q
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from harness import S3Server, live_processes
from harness.data import assert_same, consume_all, produce
from harness.jmx import Jmx
from harness.zones import (
    NetemUnavailable,
    Zones,
    bed_support,
    links_in_root,
    namespaces_of,
    netem_support,
    sweep_leftovers,
)

_ok, _why = bed_support()
pytestmark = pytest.mark.skipif(not _ok, reason=f"zones test bed unavailable: {_why}")

MB = 1_000_000


@pytest.fixture
def bed():
    z = Zones(n=3, s3=True)
    try:
        yield z.start()
    finally:
        z.close()


class Sink:
    """A TCP server inside one place that reads and counts everything sent to it."""

    def __init__(self, z: Zones, place, port: int = 7070) -> None:
        self.addr, self.port = z.addr(place), port
        self.listener = z.run_in(place, self._listen)
        self.received = 0
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _listen(self) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.addr, self.port))
        s.listen(4)
        return s

    def _serve(self) -> None:
        c, _ = self.listener.accept()
        with c:
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                self.received += len(d)
            c.sendall(b"done %d" % self.received)

    def wait(self) -> int:
        self._t.join(30)
        self.listener.close()
        return self.received


def send_from(z: Zones, place, addr: str, port: int, nbytes: int) -> bytes:
    def go() -> bytes:
        with socket.create_connection((addr, port), timeout=10) as c:
            c.sendall(b"z" * nbytes)
            c.shutdown(socket.SHUT_WR)
            return c.recv(100)

    return z.run_in(place, go)


def send_via(port: int, nbytes: int) -> bytes:
    """Send nbytes to 127.0.0.1:port from the test process; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"x" * nbytes)
        c.shutdown(socket.SHUT_WR)
        return c.recv(100)


def test_bed_comes_up_and_goes_away_cleanly():
    root_links = links_in_root()
    z = Zones(n=3, s3=True)
    with z:
        assert namespaces_of(z.prefix) == sorted(f"{z.prefix}-{p}" for p in ("az1", "az2", "az3", "s3"))
        assert [z.ns(i) for i in range(3)] == [z.ns(f"az{i + 1}") for i in range(3)]
        assert (z.addr(0), z.addr("az3"), z.s3_addr) == ("10.77.0.1", "10.77.0.3", "10.77.0.254")
        assert len(z.links) == 6
        # the root namespace got nothing: the range exists only in the bed
        assert links_in_root() == root_links
        # every place reaches every other one directly
        sink = Sink(z, "s3")
        assert send_from(z, "az2", z.s3_addr, sink.port, 1000) == b"done 1000"
        sink.wait()
        f = z.forward("az1", port=1)  # closed with the bed
    assert namespaces_of(z.prefix) == []
    assert links_in_root() == root_links
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", f.port), timeout=1).close()
    z.close()  # idempotent


def test_counters_move_only_on_the_link_that_carries_the_traffic(bed):
    z = bed
    z.reset_counters()
    sink = Sink(z, "az2")
    assert send_from(z, "az1", z.addr("az2"), sink.port, 5 * MB) == b"done %d" % (5 * MB)
    sink.wait()
    c, d = z.counters(), z.counters(directed=True)
    print("az1 -> az2, 5 MB:", Zones.format_counters(c))
    assert 5 * MB <= c[("az1", "az2")] < 5.5 * MB
    assert 5 * MB <= d[("az1", "az2")] and d[("az2", "az1")] < 0.1 * MB  # acks only
    assert all(v < 2000 for k, v in c.items() if k != ("az1", "az2")), c  # at most an ARP exchange
    assert z.cross_zone_bytes(c) >= 5 * MB and z.s3_bytes(c) < 2000

    z.reset_counters()
    sink = Sink(z, "s3", port=7071)
    send_from(z, "az3", z.s3_addr, sink.port, 2 * MB)
    sink.wait()
    c = z.counters()
    print("az3 -> s3, 2 MB:", Zones.format_counters(c))
    assert 2 * MB <= c[("az3", "s3")] < 2.2 * MB
    assert z.cross_zone_bytes(c) < 2000, c
    assert z.s3_bytes(c) == c[("az3", "s3")]


def test_forwarder_reaches_in_over_loopback_and_counts_only_when_placed_elsewhere(bed):
    z = bed
    # placed in the service's own zone: no link is crossed
    sink = Sink(z, "az2", port=7072)
    local = z.forward("az2", port=sink.port)
    z.reset_counters()
    assert send_via(local.port, MB) == b"done %d" % MB
    sink.wait()
    assert sum(z.counters().values()) == 0
    # placed in az3, talking to az2: the az2-az3 link carries it
    sink = Sink(z, "az2", port=7073)
    remote = z.forward("az3", z.addr("az2"), sink.port)
    z.reset_counters()
    assert send_via(remote.port, MB) == b"done %d" % MB
    sink.wait()
    c = z.counters()
    assert c[("az2", "az3")] >= MB and sum(c.values()) - c[("az2", "az3")] < 2000, c
    # a target that is not listening: the relayed connection is closed at once
    dead = z.forward("az1", port=7999)
    with socket.create_connection(("127.0.0.1", dead.port), timeout=10) as c:
        c.settimeout(10)
        assert c.recv(10) == b""
    assert z.port_open("az1", z.addr("az2"), 7999) is False


def _connect_ms(z: Zones, src, dst, port: int) -> float:
    def go() -> float:
        t0 = time.perf_counter()
        try:
            socket.create_connection((z.addr(dst), port), timeout=5).close()
        except ConnectionRefusedError:
            pass  # the RST is the answer: one round trip either way
        return (time.perf_counter() - t0) * 1000

    return min(z.run_in(src, go) for _ in range(3))


def test_latency_applies_when_requested():
    ok, why = netem_support()
    if not ok:
        # asking for latency must then fail loudly, never silently run without it
        with pytest.raises(NetemUnavailable):
            Zones(n=2, s3=False, latency_ms=10).start()
        pytest.skip(f"added latency not testable here: {why}")
    with Zones(n=3, s3=True, latency_ms=20, s3_latency_ms=5) as z:
        assert z.latency()[("az1", "az2")] == 20.0 and z.latency()[("az1", "s3")] == 5.0
        rtt = _connect_ms(z, "az1", "az2", 7999)
        assert 40 <= rtt < 200, rtt
        assert 10 <= _connect_ms(z, "az3", "s3", 7999) < 40
        z.set_latency("az1", "az2", None)
        assert _connect_ms(z, "az1", "az2", 7999) < 10


def _qdisc(z: Zones, place, peer) -> dict:
    import json
    import subprocess

    r = subprocess.run(["tc", "-n", z.ns(place), "-s", "-j", "qdisc", "show", "dev", f"to-{peer}"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)[0]


def test_rate_cap_shapes_one_direction_and_goes_away(bed):
    z = bed
    z.set_rate("s3", "az1", 800)
    q = _qdisc(z, "s3", "az1")
    assert q["kind"] == "tbf", q
    assert _qdisc(z, "az1", "s3")["kind"] != "tbf"  # the other direction stays as it was
    sent0 = q["bytes"]
    # traffic s3 -> az1 passes through the cap (its qdisc counts it)
    sink = Sink(z, "az1", port=7072)
    assert send_from(z, "s3", z.addr("az1"), sink.port, 2 * MB) == b"done %d" % (2 * MB)
    sink.wait()
    assert _qdisc(z, "s3", "az1")["bytes"] - sent0 >= 2 * MB
    z.set_rate("s3", "az1", None)
    assert _qdisc(z, "s3", "az1")["kind"] != "tbf"


def test_hosts_file_per_zone_resolves_inside_only():
    import subprocess

    name = "kafka-77.ftz.test"
    with Zones(n=2, s3=False) as z:
        z.set_hosts(1, {name: z.addr(1)})
        inside = subprocess.run(z.exec_prefix(1) + ["getent", "hosts", name], capture_output=True, text=True)
        assert inside.returncode == 0 and inside.stdout.split()[0] == z.addr(1), inside
        other = subprocess.run(z.exec_prefix(0) + ["getent", "hosts", name], capture_output=True, text=True)
        assert other.returncode != 0, other.stdout
        etc = Path("/etc/netns") / z.ns(1)
        assert (etc / "hosts").exists()
    assert not etc.exists()  # close() removed it
    assert subprocess.run(["getent", "hosts", name], capture_output=True).returncode != 0


def test_sweep_removes_leftovers_of_dead_runs_only(bed):
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    dead = f"ftz{p.pid}-0-az1"
    subprocess.run(["ip", "netns", "add", dead], check=True)
    try:
        removed = sweep_leftovers()
        assert dead in removed
        assert namespaces_of(bed.prefix) == sorted(bed.namespaces)  # ours (alive) untouched
    finally:
        subprocess.run(["ip", "netns", "del", dead], capture_output=True)
    assert dead not in namespaces_of("ftz")


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_plain_cluster_and_minio_run_in_the_zones(make_cluster, tmp_path):
    with Zones(n=3, s3=True) as z, S3Server(buckets=["zones"], data_dir=tmp_path / "s3", netns=z.s3_ns,
                                            host=z.s3_addr) as s3:
        # MinIO runs in the s3 namespace; the test process reaches it over 127.0.0.1
        assert s3.zone_endpoint == f"http://{z.s3_addr}:{s3.port}"
        z.reset_counters()
        s3.put("k", b"v" * MB)
        assert s3.get("k") == b"v" * MB
        assert sum(z.counters().values()) == 0  # the test process's requests cross no counted link

        kc = make_cluster(3, plugin=False, name="zones-plain", zones=z, jmx=True)
        for n in kc.nodes:
            assert n.zone == f"az{n.node_id + 1}" and n.host == z.addr(n.node_id)
            assert _netns_inode(n.proc.pid) == os.stat(Path("/run/netns") / z.ns(n.node_id)).st_ino
        # JMX (RMI on 127.0.0.1 inside the zone) through its forwarder
        state = Jmx(kc, 2).read(["kafka.server:type=KafkaServer,name=BrokerState"])
        assert 3.0 in state.values(), state  # RUNNING
        kc.create_topic("t", 3, replica_assignment=[[0, 1, 2], [1, 2, 0], [2, 0, 1]])
        kc.wait_for_isr("t", 3)
        z.reset_counters()
        produced = produce(kc, "t", 6000, partitions=3, value_size=(900, 1100))
        got = consume_all(kc, "t", produced.end_offsets())
        assert not got.errors
        assert_same(produced.records, got.records)
        kc.wait_for_isr("t", 3)
        c = z.counters()
        log_bytes = sum(kc.local_log_bytes(p, "t", p) for p in range(3))  # each leader's record batches
        print(f"plain cluster, {log_bytes / MB:.2f} MB of batches at RF=3:", Zones.format_counters(c))
        # every partition's leader sends its batches to two other zones
        assert 2 * log_bytes <= z.cross_zone_bytes(c) < 3 * log_bytes
        assert all(c[(a, b)] > 0 for a, b in c if "s3" not in (a, b))
        assert z.s3_bytes(c) == 0  # no plugin: nobody talks to S3 from the zones
        kc.close()
    assert not [p for p in live_processes() if "zones-plain" in p.name or "minio" in p.name]
    assert namespaces_of(z.prefix) == []
