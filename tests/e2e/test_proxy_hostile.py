"""Hostile input to the replication proxy (issue 14): from a local process (this test, inside a follower's
zone namespace) against the proxy inside the follower broker, while an acks=all producer runs.

Node 1 serves anyone (replication.fast.auth=none), so its decoding, framing, caps and time-outs meet the
hostile bytes; node 2 keeps the default (only its own process is served), so a client that is not the
broker is refused before anything is read or relayed. Afterwards every broker is up, replication still goes
through the fast tier, every replica holds the same bytes and nothing acknowledged is lost.

    python3 -m pytest tests/e2e/test_proxy_hostile.py -x -q -s
"""

from __future__ import annotations

import base64
import os
import random
import resource
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import wait_until
from harness.jmx import Jmx
from harness.workload import ContinuousProducer, assert_nothing_lost
from harness.zones import bed_support, bed_with_s3

_ok, _why = bed_support()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.plugin,
    pytest.mark.timeout(400),
    pytest.mark.skipif(not _ok, reason=f"zones test bed unavailable: {_why}"),
]

VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
PARTITIONS = 3
ASSIGNMENT = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
OPEN = 1  # the node whose proxy serves anyone: hostile bytes reach its decoders
GUARDED = 2  # the node with the default caller check
LEADER = 0  # the leader whose proxy address is attacked on both nodes
HANDSHAKE_MS = 2000
PER_LEADER = 64
IDLE_CONNECTIONS = int(os.environ.get("FASTTIER_HOSTILE_CONNECTIONS", "2000"))
RSM = {"wal.upload.interval.ms": 100, "replication.fast.poll.ms": 20, "replication.fast.max.lag.ms": 10000,
       "replication.fast.handshake.timeout.ms": HANDSHAKE_MS}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    with bed_with_s3(tmp_path_factory.mktemp("s3")) as zs:
        yield zs


# ---------------------------------------------------------------- Kafka request frames, encoded by hand
def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def header(api_key: int, version: int, corr: int, flexible: bool, client: bytes = b"hostile") -> bytes:
    h = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    return h + (b"\x00" if flexible else b"")


def framed(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def replica_fetch(topic_id: bytes, replica_id: int, partitions: int = PARTITIONS, corr: int = 7) -> bytes:
    """A Fetch v16 replica fetch of every partition from offset 0 (replica_state carries the id)."""
    parts = b"".join(struct.pack(">iiqiqi", p, -1, 0, -1, -1, 1 << 20) + b"\x00" for p in range(partitions))
    topics = uvarint(2) + topic_id + uvarint(partitions + 1) + parts + b"\x00"
    replica_state = struct.pack(">iq", replica_id, 1) + b"\x00"
    # no forgotten topics, rack ""
    body = struct.pack(">iiibii", 500, 1, 10 << 20, 0, 0, -1) + topics + uvarint(1) + uvarint(1)
    body += uvarint(1) + uvarint(1) + uvarint(len(replica_state)) + replica_state  # tag 1: replica_state
    return framed(header(1, 16, corr, True) + body)


def fetch_huge_topics() -> bytes:
    """The issue's 49-byte Fetch v16: topics count 2^32-1."""
    body = struct.pack(">iiibii", 500, 1, 1 << 20, 0, 0, -1) + b"\xff\xff\xff\xff\x0f"
    frame = header(1, 16, 1, True, b"")
    frame += body
    return framed(frame.ljust(49, b"\x00"))


def produce_huge_count() -> bytes:
    """The issue's 34-byte Produce v7 (acks=0) whose topic_data count is 2^31-1."""
    body = struct.pack(">hhi", -1, 0, 30000) + struct.pack(">i", 0x7FFFFFFF)
    return framed((header(0, 7, 2, False, b"") + body).ljust(34, b"\x00"))


def api_versions_huge() -> bytes:
    """ApiVersions v3 whose client_software_name claims 2^28 bytes."""
    return framed(header(18, 3, 3, True) + b"\x80\x80\x80\x80\x01" + b"x" * 8)


def metadata_huge_topics() -> bytes:
    """Metadata v12 whose topics count is 2^32-2."""
    return framed(header(3, 12, 4, True) + b"\xff\xff\xff\xff\x0f" + b"\x00" * 4)


def random_frame(rng: random.Random) -> bytes:
    body = struct.pack(">hhi", rng.randrange(0, 75), rng.randrange(-1, 20), rng.randrange(1 << 31))
    body += rng.randbytes(rng.randrange(0, 200))
    return framed(body)


# ---------------------------------------------------------------- clients
def exchange(addr: tuple[str, int], data: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Sends data, then reads until the proxy closes the connection or `wait` passes: (bytes received,
    closed by the proxy)."""
    got = b""
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data)
        s.settimeout(wait)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return got, True
                got += chunk
        except ConnectionResetError:
            return got, True
        except socket.timeout:
            return got, False


def idle_connections(addr: tuple[str, int], n: int, wait: float) -> dict[str, int]:
    """Opens n connections that send nothing, then waits until the proxy closed them all (or `wait`
    passes); closes what is left. Returns counts."""
    socks, refused = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection(addr, timeout=5)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            refused += 1
    deadline = time.monotonic() + wait
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        still = []
        for s in open_:
            try:
                if s.recv(1) == b"":
                    continue  # closed by the proxy
                still.append(s)
            except BlockingIOError:
                still.append(s)
            except OSError:
                continue  # reset by the proxy
        open_ = still
        time.sleep(0.2)
    for s in socks:
        s.close()
    return {"opened": len(socks), "refused": refused, "left_open": len(open_)}


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want + 512:
        new = want + 512 if hard == resource.RLIM_INFINITY else min(hard, want + 512)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return min(want, soft - 512)


def metric(kc, i: int, name: str) -> float:
    return Jmx(kc, i).plugin().get(name, 0.0)


def identical(kc, topic: str) -> bool:
    kc.check_alive()
    return all(len({kc.log_digest(i, topic, p) for i in range(3)}) == 1 for p in range(PARTITIONS))


def test_the_proxy_survives_hostile_clients_and_serves_only_its_broker(bed, make_cluster):
    z, s3 = bed
    kc = make_cluster(3, version=VERSION, plugin=True, s3=s3, zones=z, name="zones-hostile", rsm_config=RSM,
                      fast_replication=True, jmx=True,
                      node_overrides={OPEN: {"rsm.config.replication.fast.auth": "none"}})
    topic = "hostile"
    kc.create_topic(topic, config={"remote.storage.enable": "true", "min.insync.replicas": 2},
                    replica_assignment=ASSIGNMENT)
    kc.wait_for_isr(topic, 3)
    tid = base64.urlsafe_b64decode(kc.topic_id(topic) + "==")
    prod = ContinuousProducer(kc, topic, PARTITIONS, rate=400, value_size=1000, linger_ms=20).start()
    wait_until(lambda: all(metric(kc, i, "replication-fast-bytes-total") > 100_000 for i in (OPEN, GUARDED)), 90, 2.0,
               "the fast path to carry replication on both followers")
    proxy = (kc.proxy_addr(LEADER), kc.nodes[LEADER].broker_port)
    zone_open, zone_guarded = kc.zone_of(OPEN), kc.zone_of(GUARDED)
    fast_before = {i: metric(kc, i, "replication-fast-bytes-total") for i in (OPEN, GUARDED)}
    t0 = time.monotonic()

    # --- node 2 (default check): a client that is not the broker gets nothing, whatever it sends
    def guarded_attacks():
        out = {}
        out["fetch_as_broker_1"] = exchange(proxy, replica_fetch(tid, replica_id=1), wait=3)
        out["api_versions"] = exchange(proxy, framed(header(18, 3, 5, True) + b"\x00\x00\x00"), wait=3)
        out["huge_fetch"] = exchange(proxy, fetch_huge_topics(), wait=3)
        return out

    guarded = z.run_in(zone_guarded, guarded_attacks, timeout=60)
    for what, (got, closed) in guarded.items():
        assert got == b"" and closed, \
            f"node {GUARDED} answered an unauthenticated {what}: {len(got)} bytes, closed={closed}"
    assert metric(kc, GUARDED, "replication-connections-refused-total") >= 3
    wait_until(lambda: kc.grep_log(GUARDED, r"connection refused: not this broker"), 10, 0.5,
               "the refusal warning in the broker log")

    # --- node 1 (no check): hostile bytes reach framing and decoding
    def open_attacks():
        out = {}
        # a 256 MiB size prefix followed by 16 bytes: nothing reserved, closed at the handshake time-out
        t = time.monotonic()
        out["size_prefix"] = exchange(proxy, struct.pack(">i", 256 << 20) + b"\x07" * 16, wait=HANDSHAKE_MS / 1000 + 8)
        out["size_prefix_s"] = time.monotonic() - t
        out["huge_fetch"] = exchange(proxy, fetch_huge_topics(), wait=5)
        out["huge_produce"] = exchange(proxy, produce_huge_count(), wait=5)
        out["huge_api_versions"] = exchange(proxy, api_versions_huge(), wait=5)
        out["huge_metadata"] = exchange(proxy, metadata_huge_topics(), wait=5)
        # a replica fetch claiming another broker's id (node 1 is broker 1: claim 2)
        out["fetch_as_broker_2"] = exchange(proxy, replica_fetch(tid, replica_id=GUARDED), wait=5)
        rng = random.Random(14)
        frames = [random_frame(rng) for _ in range(200)]
        with ThreadPoolExecutor(16) as ex:
            out["random"] = list(ex.map(lambda f: exchange(proxy, f, wait=HANDSHAKE_MS / 1000 + 5), frames))
        n = raise_fd_limit(IDLE_CONNECTIONS)
        out["idle"] = idle_connections(proxy, n, wait=HANDSHAKE_MS / 1000 + 15)
        out["idle_n"] = n
        return out

    hostile = z.run_in(zone_open, open_attacks, timeout=240)
    got, closed = hostile["size_prefix"]
    assert closed and got == b"", hostile["size_prefix"]
    assert hostile["size_prefix_s"] < HANDSHAKE_MS / 1000 + 5, hostile["size_prefix_s"]
    assert hostile["huge_fetch"] == (b"", True), hostile["huge_fetch"]
    got, closed = hostile["fetch_as_broker_2"]
    assert got == b"" and closed, f"a replica fetch with another broker's id was answered: {len(got)} bytes"
    idle = hostile["idle"]
    print(f"\n[hostile] idle connections: {idle} of {hostile['idle_n']}; random frames: "
          f"{sum(1 for g, _ in hostile['random'] if g)} answered (relayed to the leader), "
          f"{sum(1 for _, c in hostile['random'] if c)} closed; took {time.monotonic() - t0:.1f}s")
    assert idle["left_open"] == 0, idle
    assert metric(kc, OPEN, "replication-connections-rejected-total") >= hostile["idle_n"] - PER_LEADER
    # the proxy holds no leftover connection: only the broker's own (fetchers, RLMM clients)
    wait_until(lambda: metric(kc, OPEN, "replication-connections") <= 16, 30, 1.0, "hostile connections to be gone")

    # --- every broker up, replication still through the fast tier, nothing lost, replicas identical
    kc.check_alive()
    for i in range(3):
        crashed = kc.grep_log(i, r"SIGABRT|java.lang.OutOfMemoryError|fatal runtime error|panicked at")
        assert not crashed, kc.diagnostics([i])
    wait_until(lambda: all(metric(kc, i, "replication-fast-bytes-total") > fast_before[i] + 200_000
                           for i in (OPEN, GUARDED)), 90, 2.0, "replication through the fast tier after the attacks")
    acked = prod.stop()
    kc.wait_for_isr(topic, 3)
    wait_until(lambda: identical(kc, topic), 90, 1.0, f"replicas of {topic} to be identical")
    assert_nothing_lost(kc, topic, PARTITIONS, acked)
