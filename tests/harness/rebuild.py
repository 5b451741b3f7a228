"""Rebuilding a broker (issue 4): `fasttier rebuild` run where the broker runs, against a stock rebuild, in
the zones test bed (harness/zones.py). Used by tests/e2e/test_rebuild.py and tests/bench/rebuild.py.

    leaders, leo = wait_tiered(kc, node, "t", 2)                  # the tiers hold each leader's log end
    f = fasttier_round(kc, z, node, "t", ["--local-retention-bytes", "..."], downtime=lambda: produce(...))
    same_as_leaders(kc, node, "t", leaders)                      # byte for byte over the common offsets
    s = stock_round(kc, z, node, "t", downtime=...)              # wipe + restart, Kafka replicates
    cli = rebuild_cli(kc, node, ["--topic", "t", "--json"])      # inside the node's zone namespace

Where the bytes go: the CLI runs under `ip netns exec <the node's zone>` with the broker's own
server.properties, so it reaches S3 at the zone endpoint the broker uses and its downloads cross the
zone's link to the S3 namespace (counted as S3 bytes), never a zone-to-zone link. What a rejoining broker
receives from other zones is the sum of the directed counters (other zone -> its zone).
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from .cli import cli_binary
from .procs import HarnessError, wait_until
from .tiering import wait_local_log_start_beyond

MB = 1_000_000
# Allowance for what a rejoining broker receives besides partition data: the KRaft metadata it missed
# while down, fetch session set-up, TCP/IP headers of request/response exchanges.
SLACK = 256 * 1024
_HEADER = 61  # RecordBatch v2 header; baseOffset @0 (i64), length @8 (i32), lastOffsetDelta @23 (i32)


# --------------------------------------------------------------------------------------------------
# a partition directory's batches


def segment_files(part_dir: Path) -> list[Path]:
    """The `<20 digits>.log` segment files of a partition directory, by base offset."""
    if not part_dir.is_dir():
        return []
    files = [f for f in part_dir.iterdir() if f.name.endswith(".log") and len(f.name) == 24 and f.name[:20].isdigit()]
    return sorted(files, key=lambda f: int(f.name[:20]))


def iter_batches(part_dir: Path, from_offset: int = -1) -> Iterator[tuple[int, int, bytes]]:
    """(base offset, last offset, bytes) of every complete batch with last offset >= from_offset, in
    offset order; stops at a batch being written (incomplete, or zero fill) at the end of the log."""
    for f in segment_files(part_dir):
        with open(f, "rb") as fh:
            data = fh.read()
        pos = 0
        while pos + 12 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            if length <= 0 or pos + 12 + length > len(data) or length + 12 < _HEADER:
                break
            last = base + struct.unpack_from(">i", data, pos + 23)[0]
            if last >= from_offset:
                yield base, last, data[pos:pos + 12 + length]
            pos += 12 + length


def log_end(part_dir: Path) -> Optional[int]:
    """The offset after the last complete batch (None for an empty log)."""
    end = None
    for _, last, _ in iter_batches(part_dir):
        end = last + 1
    return end


def bytes_from(part_dir: Path, offset: int) -> int:
    """Bytes of the batches at or above `offset` (what a follower whose log ends at `offset` fetches)."""
    return sum(len(b) for base, _, b in iter_batches(part_dir) if base >= offset)


def log_bytes(part_dir: Path) -> int:
    return sum(f.stat().st_size for f in segment_files(part_dir))


@dataclass
class Comparison:
    first: int  # first offset both hold
    end: int  # offset after the last both hold
    batches: int
    ends: tuple[Optional[int], Optional[int]]  # each log's end offset
    starts: tuple[Optional[int], Optional[int]]


def compare_replicas(a: Path, b: Path) -> Comparison:
    """Compares two copies of a partition batch by batch (same offsets, same bytes) over the offsets both
    hold. Raises HarnessError naming the first difference (or when they share no offset)."""
    la, lb = list(_spans(a)), list(_spans(b))
    if not la or not lb:
        raise HarnessError(f"nothing to compare: {a} has {len(la)} batches, {b} has {len(lb)}")
    first = max(la[0][0], lb[0][0])
    end = min(la[-1][1], lb[-1][1]) + 1
    n = 0
    ib, jb = iter_batches(a, first), iter_batches(b, first)
    for x, y in zip(ib, jb):
        if x[0] >= end or y[0] >= end:
            break
        if x[:2] != y[:2] or x[2] != y[2]:
            raise HarnessError(
                f"replicas differ at offsets {x[0]}..={x[1]} ({a}) vs {y[0]}..={y[1]} ({b})"
                + (" (same offsets, different bytes)" if x[:2] == y[:2] else ""))
        n += 1
    if n == 0:
        raise HarnessError(f"{a} and {b} share no batch (first common offset {first}, end {end})")
    return Comparison(first, end, n, (la[-1][1] + 1, lb[-1][1] + 1), (la[0][0], lb[0][0]))


def _spans(d: Path) -> Iterator[tuple[int, int]]:
    for base, last, _ in iter_batches(d):
        yield base, last


# --------------------------------------------------------------------------------------------------
# the CLI, where the broker runs


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise HarnessError(f"fasttier rebuild printed no JSON ({e}):\n{self.stdout[-2000:]}\n{self.stderr[-2000:]}")


def rebuild_cli(kc, node: int, args: list[str], timeout: float = 1800.0) -> CliRun:
    """`fasttier -c <node's server.properties> rebuild <args>`, run in the node's zone namespace (the
    broker's own S3 endpoint, the zone's link to S3)."""
    argv = kc.exec_prefix(node) + [str(cli_binary()), "-c", str(kc.nodes[node].properties_path), "rebuild"] + args
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return CliRun(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)


def cli_in_zone(kc, node: int, args: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Any `fasttier` verb with node's server.properties, in node's zone namespace."""
    argv = kc.exec_prefix(node) + [str(cli_binary()), "-c", str(kc.nodes[node].properties_path)] + args
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def verify_in_zone(kc, node: int, topic: str, partition: int) -> dict:
    """`fasttier partition verify --json` of node's copy of the partition, run in node's zone."""
    d = kc.partition_dir(node, topic, partition)
    r = cli_in_zone(kc, node, ["partition", "verify", "--dir", str(d), "--json"])
    if r.returncode not in (0, 1):
        raise HarnessError(f"fasttier partition verify exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise HarnessError(f"fasttier partition verify printed no JSON ({e}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def tier_coverage(kc, node: int, topic: str, partition: int) -> Optional[int]:
    """The highest offset the slow ∪ fast tier hold of the partition (`partition show`), or None."""
    r = cli_in_zone(kc, node, ["partition", "show", "--topic", topic, "--partition", str(partition), "--json"])
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["coverage"]["last_offset"]


# --------------------------------------------------------------------------------------------------
# bytes into a zone, rejoining


def into_zone(z, zone: str, directed: dict[tuple[str, str], int]) -> int:
    """Bytes other zones sent to `zone` (S3 links excluded)."""
    return sum(v for (a, b), v in directed.items() if b == zone and a != zone and a in z.zones)


def idle_rate_into(z, zone: str, seconds: float = 5.0) -> float:
    """Bytes per second `zone` receives from other zones with nothing produced (quorum, fetch polls,
    metadata)."""
    z.reset_counters()
    t0 = time.monotonic()
    time.sleep(seconds)
    return into_zone(z, zone, z.counters(directed=True)) / (time.monotonic() - t0)


def partitions_of(kc, node: int) -> dict[str, list[int]]:
    """{topic: partitions} that have node among their replicas (every topic, internal ones included)."""
    md = kc.admin().list_topics(timeout=10)
    out: dict[str, list[int]] = {}
    for name, t in md.topics.items():
        ps = [p for p, pm in t.partitions.items() if node in pm.replicas]
        if ps:
            out[name] = sorted(ps)
    return out


def in_sync_everywhere(kc, node: int) -> bool:
    """node is in the ISR of every partition it is a replica of."""
    md = kc.admin().list_topics(timeout=10)
    return all(node in pm.isrs for t in md.topics.values() for pm in t.partitions.values() if node in pm.replicas)


def other_partitions_bytes(kc, node: int, skip_topic: str) -> int:
    """Local log bytes of node's partitions of topics other than skip_topic (internal topics: not tiered,
    re-replicated from their leaders whatever the rebuild does)."""
    total = 0
    for d in kc.nodes[node].data_dir.iterdir():
        if d.is_dir() and not d.name.startswith(f"{skip_topic}-") and "-" in d.name and not d.name.endswith(
                ("-delete", "-stray", "-future")):
            total += log_bytes(d)
    return total


@dataclass
class Rejoin:
    seconds: float  # start_broker until node is in the ISR of every partition it hosts
    into_zone: int  # bytes the node's zone received from other zones over the measured window
    window: float  # seconds the counters covered
    per_link: dict = field(default_factory=dict)
    s3: int = 0


def rejoin_measured(kc, z, node: int, since: float, before_start: Optional[Callable[[], None]] = None,
                    timeout: float = 600.0) -> Rejoin:
    """Counts from the caller's last reset_counters(), taken at time.monotonic() == since: runs
    before_start (e.g. produce while the node is down), starts the node and waits until it is in sync
    everywhere."""
    if before_start is not None:
        before_start()
    t0 = time.monotonic()
    kc.start_broker(node, timeout=timeout)
    wait_until(lambda: (kc.check_alive(), in_sync_everywhere(kc, node))[1], timeout, 0.5,
               lambda: f"node {node} to be in the ISR of every partition it hosts")
    seconds = time.monotonic() - t0
    directed = z.counters(directed=True)
    zone = kc.zone_of(node)
    return Rejoin(seconds, into_zone(z, zone, directed), time.monotonic() - since,
                  {k: v for k, v in directed.items() if k[1] == zone},
                  sum(v for (a, b), v in directed.items() if "s3" in (a, b) and zone in (a, b)))


# --------------------------------------------------------------------------------------------------
# the two ways to rebuild a broker, measured


def wait_tiered(kc, node: int, topic: str, partitions: int, local_deleted: bool = True,
                timeout: float = 300.0) -> tuple[dict, dict]:
    """Waits until the tiers hold each leader's log up to its end and, with local_deleted, until local
    retention has deleted the oldest segments of every partition (they are in the slow tier only). Returns
    ({p: leader}, {p: leader's log end offset})."""
    leaders = {p: kc.leader_of(topic, p) for p in range(partitions)}
    if local_deleted:
        wait_local_log_start_beyond(kc, topic, {p: 0 for p in range(partitions)}, timeout=timeout)
    leo = {p: log_end(kc.partition_dir(leaders[p], topic, p)) for p in range(partitions)}
    for p in range(partitions):
        wait_until(lambda p=p: (tier_coverage(kc, node, topic, p) or -1) >= leo[p] - 1, timeout, 1.0,
                   f"the tiers to hold partition {p} of {topic} up to {leo[p] - 1}")
    return leaders, leo


@dataclass
class FastRound:
    cli: CliRun
    report: dict  # `fasttier rebuild --json`
    during_cli: dict  # directed zone counters over the CLI's run
    rejoin: Rejoin
    remainder: int  # bytes of the leaders' logs above the rebuilt log ends: what the node had to fetch
    internal: int  # the node's bytes of other (untiered, internal) topics, re-replicated whatever happens

    @property
    def seconds(self) -> float:
        return self.cli.seconds + self.rejoin.seconds

    def partitions(self) -> dict[int, dict]:
        return {r["partition"]: r for r in self.report["partitions"]}


def fasttier_round(kc, z, node: int, topic: str, cli_args: list[str], leaders: dict[int, int],
                   downtime: Optional[Callable[[], None]] = None, timeout: float = 1800.0) -> FastRound:
    """Stops the node, loses its data disk (wipe + format), runs `fasttier rebuild --topic <topic>
    <cli_args> --json` in its zone, runs downtime() (e.g. produce: the remainder), restarts it and waits
    until it is in sync everywhere. Counters cover the CLI, the downtime and the rejoin."""
    kc.stop_broker(node)
    kc.wipe_broker(node)
    z.reset_counters()
    since = time.monotonic()
    cli = rebuild_cli(kc, node, ["--topic", topic] + cli_args + ["--json"], timeout=timeout)
    if cli.returncode != 0:
        raise HarnessError(f"fasttier rebuild exited {cli.returncode}:\n{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}")
    report = cli.json()
    during = z.counters(directed=True)
    rejoin = rejoin_measured(kc, z, node, since, downtime, timeout=timeout)
    rebuilt = {r["partition"]: r["log_end_offset"] for r in report["partitions"]}
    remainder = sum(bytes_from(kc.partition_dir(leaders[p], topic, p), end) for p, end in rebuilt.items())
    return FastRound(cli, report, during, rejoin, remainder, other_partitions_bytes(kc, node, topic))


@dataclass
class StockRound:
    rejoin: Rejoin
    fetched: int  # the node's log bytes of the topic once in sync (all of it came from the leaders)
    internal: int


def stock_round(kc, z, node: int, topic: str, partitions: int,
                downtime: Optional[Callable[[], None]] = None, timeout: float = 1800.0) -> StockRound:
    """Stops the node, loses its data disk, runs downtime(), restarts it: Kafka replicates everything from
    the leaders (a tiered topic from each leader's local log start)."""
    kc.stop_broker(node)
    kc.wipe_broker(node)
    z.reset_counters()
    rejoin = rejoin_measured(kc, z, node, time.monotonic(), downtime, timeout=timeout)
    fetched = sum(bytes_from(kc.partition_dir(node, topic, p), 0) for p in range(partitions))
    return StockRound(rejoin, fetched, other_partitions_bytes(kc, node, topic))


def same_as_leaders(kc, node: int, topic: str, leaders: dict[int, int],
                    timeout: float = 120.0) -> dict[int, Comparison]:
    """Waits until node's copy of each partition ends where its leader's does, then compares them batch by
    batch over the offsets both hold (raises HarnessError on a difference)."""
    out = {}
    for p, lp in leaders.items():
        mine, theirs = kc.partition_dir(node, topic, p), kc.partition_dir(lp, topic, p)
        wait_until(lambda: log_end(mine) == log_end(theirs), timeout, 0.5,
                   f"node {node} to reach the log end of partition {p} on its leader {lp}")
        out[p] = compare_replicas(theirs, mine)
    return out
