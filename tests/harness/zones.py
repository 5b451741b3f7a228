"""Zones: a three-zone test bed on one machine -- network namespaces for the availability zones (and one for
the S3 server), a veth pair for every link between them, per-link byte counters, optional added latency.

    with Zones(n=3, s3=True) as z, S3Server(netns=z.s3_ns, host=z.s3_addr) as s3, \\
            KafkaCluster(3, plugin=True, s3=s3, zones=z) as kc:
        z.ns(0), z.addr(0)            # namespace and address of zone 0 ("az1"); z.ns("az1") is the same
        z.s3_ns, z.s3_addr            # the S3 server's namespace and address
        z.reset_counters()
        ...                           # traffic
        c = z.counters()              # {("az1", "az2"): bytes, ("az1", "s3"): bytes, ...} since the reset
        z.cross_zone_bytes(c), z.s3_bytes(c)
        z.counters(directed=True)     # {("az1", "az2"): bytes sent by az1 to az2, ("az2", "az1"): ..., ...}

Topology (the module needs root, `ip` from iproute2, and `tc` for latency):

    ftz<pid>-<k>-az1 --- ftz<pid>-<k>-az2        every zone has its own veth pair to every other zone
          \\    \\           /    |                 ("to-az2" in az1 <-> "to-az1" in az2) and one to the S3
           \\    ftz<pid>-<k>-az3  |                namespace ("to-s3" <-> "to-az1"); nothing is routed
            \\         |           |                through a third namespace (ip_forward stays off), so a
             `---- ftz<pid>-<k>-s3 -'               byte between two places crosses exactly their link.

  * Each place has one address on its loopback device (zone i -> 10.77.0.<i+1>, the S3 namespace ->
    10.77.0.254, all /32) and one /32 route per peer, "dev to-<peer> src <own address>". Links carry no
    addresses of their own (ARP answers for the loopback address, the Linux default). The 10.77.0.0/24 range
    exists only inside these namespaces: the root namespace gets no interface, address or route, so
    concurrent beds (and other users of the machine) never collide; a bed's names carry the creating
    process's pid and a sequence number.
  * IPv6 is switched off inside the namespaces so that neighbour discovery does not add noise to counters.

Why a veth pair per link rather than one bridge in a hub namespace: the kernel then counts every link on
its own (tx/rx bytes of each end, `ip -s -j link`), for both directions, with no packet filter or
accounting rules (nft/iptables are not needed). A bridge would count per zone, not per pair of zones.
Counted are the bytes of the packets the kernel hands to the veth: IP and TCP headers included, Ethernet
header included; a segmentation-offloaded (GSO) packet counts its headers once, so the header overhead is
lower than on a real wire (about 0.1% instead of about 4% for bulk TCP). ARP adds a few hundred bytes.

How processes in the test (root) namespace reach services in the zones -- loopback only: a Forwarder
listens on 127.0.0.1:<port> in the root namespace and relays every connection to (address, port) as seen
from inside one namespace (its accepting thread has entered that namespace with setns(2); the relaying
sockets are created there). A relayed connection therefore starts inside the chosen namespace: a client
"placed" in zone X talking to a broker in zone X crosses no link; placed in zone Y it crosses the X-Y link
and is counted. KafkaCluster(zones=...) gives every broker a CLIENT listener on its zone address, advertised
as 127.0.0.1:<port> with a Forwarder on that port (S3Server(netns=...) does the same for its endpoint), so
every client in the test process -- confluent_kafka, boto3, Kafka's Java tools -- works unchanged.

Bandwidth: set_rate(sender, receiver, mbit) caps one direction of a link with a `tbf` qdisc (a store
"elsewhere" whose bandwidth, not the CPU of this box, is the limit). Names: set_hosts(p, {name: address})
gives commands run with exec_prefix(p) their own /etc/hosts (through /etc/netns/<namespace>/hosts, which
`ip netns exec` bind-mounts), e.g. so that a client inside a zone resolves the brokers' advertised names.

Latency: set_latency(a, b, ms) adds `tc qdisc ... netem delay <ms>ms` on both ends of a link (so the round
trip grows by 2 x ms). Many kernels are built without netem (CONFIG_NET_SCH_NETEM); netem_support() says
whether this one has it and why not, and asking for latency without it raises NetemUnavailable.

Clean-up: close() stops the forwarders, SIGKILLs any process still inside the bed's namespaces (only
processes this harness started can be there) and deletes the namespaces, which deletes every veth pair with
them. A new bed first sweeps leftovers of earlier runs that died: namespaces named ftz<pid>-... whose pid no
longer exists and which hold no process.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar, Union

from .procs import LOOPBACK, HarnessError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")  # per-namespace /etc files that `ip netns exec` bind-mounts (set_hosts)
NAME_PREFIX = "ftz"
_NAME_RX = re.compile(rf"^{NAME_PREFIX}(\d+)-(\d+)-([a-z0-9]+)$")
NETWORK = "10.77.0"
S3_HOST = 254
S3 = "s3"
_CLONE_NEWNET = 0x40000000
_seq = itertools.count()
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

Place = Union[int, str]


class NetemUnavailable(HarnessError):
    """Added latency was asked for but this kernel cannot delay packets (no netem qdisc)."""


# --------------------------------------------------------------------------------------------------
# commands and namespaces


def _run(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise HarnessError(f"`{' '.join(argv)}` exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def bed_support() -> tuple[bool, str]:
    """(True, "") if this process can build a bed (root, iproute2, network namespaces), else (False, why)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    try:
        r = _run(["ip", "netns", "list"], check=False)
    except FileNotFoundError:
        return False, "`ip` (iproute2) is not installed"
    if r.returncode != 0:
        return False, f"`ip netns list` failed: {r.stderr.strip()}"
    return True, ""


def enter_netns(name: str) -> None:
    """Move the calling thread (only it: setns(2) acts per thread) into the named network namespace.
    Threads it starts afterwards start in that namespace too."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[..., T], *args: Any, timeout: Optional[float] = 60.0) -> T:
    """fn(*args) in a fresh thread inside the namespace (sockets it creates belong there); its result or
    its exception."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            enter_netns(name)
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise HarnessError(f"{getattr(fn, '__name__', fn)} in namespace {name} still running after {timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def list_netns() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def netns_pids(name: str) -> list[int]:
    r = _run(["ip", "netns", "pids", name], check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def sweep_leftovers() -> list[str]:
    """Delete the namespaces of beds whose creating process died without cleaning up (our own name
    pattern only; a namespace that still holds a process is left alone). Returns the names deleted."""
    gone = []
    for name in list_netns():
        m = _NAME_RX.match(name)
        if not m or _pid_alive(int(m.group(1))) or netns_pids(name):
            continue
        if _run(["ip", "netns", "del", name], check=False).returncode == 0:
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
            gone.append(name)
    return gone


_netem: Optional[tuple[bool, str]] = None


def netem_support() -> tuple[bool, str]:
    """(True, "") if `tc qdisc add ... netem delay` works here, else (False, the reason). Probed once per
    process in a throwaway namespace."""
    global _netem
    if _netem is None:
        ok, why = bed_support()
        if not ok:
            _netem = (False, why)
        else:
            name = f"{NAME_PREFIX}{os.getpid()}-{next(_seq)}-probe"
            try:
                _run(["ip", "netns", "add", name])
                try:
                    # veth, not dummy: some kernels lack the dummy driver, and the bed needs veth anyway
                    _run(["ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])
                    r = _run(["tc", "-n", name, "qdisc", "add", "dev", "probe0", "root", "netem", "delay", "1ms"],
                             check=False)
                    _netem = (True, "") if r.returncode == 0 else (
                        False, f"tc netem unavailable: {(r.stderr or r.stdout).strip()} "
                        "(this kernel is built without CONFIG_NET_SCH_NETEM?)")
                except FileNotFoundError:
                    _netem = (False, "`tc` (iproute2) is not installed")
                except HarnessError as e:
                    _netem = (False, f"cannot probe for netem: {e}")
            finally:
                _run(["ip", "netns", "del", name], check=False)
    return _netem


# --------------------------------------------------------------------------------------------------
# the loopback way in


class Forwarder:
    """127.0.0.1:<port> in the caller's (root) namespace -> (host, target_port) as seen from inside `netns`.

    One thread accepts (inside the namespace); each connection gets two relaying threads. TCP_NODELAY on
    both sides, so the relay adds no Nagle delay. A connection whose target refuses is closed at once."""

    def __init__(self, netns: str, host: str, target_port: int, port: Optional[int] = None) -> None:
        self.netns, self.host, self.target_port = netns, host, target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((LOOPBACK, port if port is not None else 0))
            self._listener.listen(128)
        except OSError as e:
            self._listener.close()
            raise HarnessError(f"forwarder to {netns} {host}:{target_port}: cannot listen on {LOOPBACK}:{port}: {e}")
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._entered = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._accept_loop, name=f"fwd-{self.port}-{netns}", daemon=True)
        self._thread.start()
        self._entered.wait(10)
        if self._error is not None:
            self.close()
            raise HarnessError(f"forwarder cannot enter namespace {netns}: {self._error}")

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._closed.is_set():
                return False
            self._socks.update(socks)
            return True

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._socks.discard(s)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        try:
            enter_netns(self.netns)
        except BaseException as e:  # noqa: BLE001
            self._error = e
            self._entered.set()
            return
        self._entered.set()
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            # threads started from here start inside the namespace
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection((self.host, self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._track(client, upstream):
            self._drop(client, upstream)
            return
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        self._drop(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        buf = bytearray(1 << 18)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    break
                dst.sendall(view[:n])
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def close(self) -> None:
        """Stop listening and cut every relayed connection. Idempotent."""
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)

    def __repr__(self) -> str:
        return f"Forwarder({self.address} -> {self.netns} {self.host}:{self.target_port})"


# --------------------------------------------------------------------------------------------------
# the bed


class Zones:
    def __init__(
        self,
        n: int = 3,
        s3: bool = True,
        latency_ms: Optional[float] = None,
        s3_latency_ms: Optional[float] = None,
    ) -> None:
        """
        n: number of zones, named az1..az<n> (zone i, counting from 0, is "az<i+1>").
        s3: also a namespace "s3" for the S3 server, linked to every zone.
        latency_ms: one-way delay added on every zone<->zone link (each direction; RTT + 2 x latency_ms).
        s3_latency_ms: the same for every zone<->s3 link.
        Places (zones and "s3") are named by their name or, for zones, by their index from 0.
        """
        if not 1 <= n <= 200:
            raise HarnessError(f"Zones(n={n}): between 1 and 200 zones")
        self.n = n
        self.has_s3 = s3
        self.zones = [f"az{i + 1}" for i in range(n)]
        self.places = self.zones + ([S3] if s3 else [])
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{next(_seq)}"
        self.latency_ms = latency_ms
        self.s3_latency_ms = s3_latency_ms
        self.links: list[tuple[str, str]] = [
            (a, b) for i, a in enumerate(self.places) for b in self.places[i + 1:]
        ]
        self._created: list[str] = []
        self._forwarders: list[Forwarder] = []
        self._baseline: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str], float] = {}
        self.started = False

    # ------------------------------------------------------------------ names
    def place(self, p: Place) -> str:
        """The place's name: "az1".. for a zone index (from 0) or name, "s3"."""
        if isinstance(p, int):
            if not 0 <= p < self.n:
                raise HarnessError(f"no zone {p} (zones 0..{self.n - 1})")
            return self.zones[p]
        if p not in self.places:
            raise HarnessError(f"no place {p!r} (have {self.places})")
        return p

    def ns(self, p: Place) -> str:
        """Network namespace of a zone (index from 0, or name) or of "s3"."""
        return f"{self.prefix}-{self.place(p)}"

    def addr(self, p: Place) -> str:
        name = self.place(p)
        return f"{NETWORK}.{S3_HOST if name == S3 else self.zones.index(name) + 1}"

    @property
    def s3_ns(self) -> str:
        return self.ns(S3)

    @property
    def s3_addr(self) -> str:
        return self.addr(S3)

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(p) for p in self.places]

    def exec_prefix(self, p: Place) -> list[str]:
        """argv prefix that runs a command inside the place's namespace."""
        return ["ip", "netns", "exec", self.ns(p)]

    @staticmethod
    def _dev(peer: str) -> str:
        return f"to-{peer}"

    def _key(self, a: Place, b: Place) -> tuple[str, str]:
        a, b = self.place(a), self.place(b)
        if a == b:
            raise HarnessError(f"no link from {a} to itself")
        return (a, b) if self.places.index(a) < self.places.index(b) else (b, a)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Zones":
        if self.started:
            return self
        ok, why = bed_support()
        if not ok:
            raise HarnessError(f"cannot build the zones test bed: {why}")
        wanted = [v for v in (self.latency_ms, self.s3_latency_ms if self.has_s3 else None) if v]
        if wanted:
            ok, why = netem_support()
            if not ok:
                raise NetemUnavailable(why)
        sweep_leftovers()
        try:
            for p in self.places:
                ns = self.ns(p)
                _run(["ip", "netns", "add", ns])
                self._created.append(ns)
                run_in_netns(ns, _quiet_namespace)
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{self.addr(p)}/32", "dev", "lo"])
            for a, b in self.links:
                _run(["ip", "link", "add", "name", self._dev(b), "netns", self.ns(a), "type", "veth",
                      "peer", "name", self._dev(a), "netns", self.ns(b)])
                for x, y in ((a, b), (b, a)):
                    _run(["ip", "-n", self.ns(x), "link", "set", self._dev(y), "up"])
                    _run(["ip", "-n", self.ns(x), "route", "add", f"{self.addr(y)}/32", "dev", self._dev(y),
                          "src", self.addr(x)])
            for a, b in self.links:
                ms = self.s3_latency_ms if S3 in (a, b) else self.latency_ms
                if ms:
                    self.set_latency(a, b, ms)
            self.started = True
            self._baseline = self.raw_counters()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop forwarders, kill what still runs inside, delete the namespaces (and with them every link).
        Never raises; idempotent."""
        for f in self._forwarders:
            f.close()
        self._forwarders.clear()
        for ns in reversed(self._created):
            for pid in netns_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self._created):
            for _ in range(50):
                if _run(["ip", "netns", "del", ns], check=False).returncode == 0 or ns not in list_netns():
                    break
                time.sleep(0.1)
        self._created = [ns for ns in self._created if ns in list_netns()]
        for p in self.places:
            shutil.rmtree(ETC_NETNS / self.ns(p), ignore_errors=True)
        self.started = False

    def __enter__(self) -> "Zones":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Zones({self.prefix}: {', '.join(f'{p}={self.addr(p)}' for p in self.places)})"

    # ------------------------------------------------------------------ reaching in
    def forward(self, p: Place, host: Optional[str] = None, port: int = 0,
                listen_port: Optional[int] = None) -> Forwarder:
        """A Forwarder: 127.0.0.1:<listen_port or a free port> here -> host:port from inside place p (host
        defaults to p's own address). Closed with the bed, or earlier with .close()."""
        f = Forwarder(self.ns(p), host or self.addr(p), port, listen_port)
        self._forwarders.append(f)
        return f

    def run_in(self, p: Place, fn: Callable[..., T], *args: Any, timeout: Optional[float] = 60.0) -> T:
        """fn(*args) in a thread inside place p's namespace."""
        return run_in_netns(self.ns(p), fn, *args, timeout=timeout)

    def port_open(self, p: Place, host: str, port: int, timeout: float = 0.5) -> bool:
        """Whether a TCP connection to host:port from inside place p succeeds."""

        def probe() -> bool:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            except OSError:
                return False

        return bool(self.run_in(p, probe, timeout=timeout + 10))

    # ------------------------------------------------------------------ latency
    def set_latency(self, a: Place, b: Place, ms: Optional[float]) -> None:
        """Delay every packet on the a<->b link by ms in each direction (None or 0: no delay)."""
        a, b = self._key(a, b)
        if ms:
            ok, why = netem_support()
            if not ok:
                raise NetemUnavailable(why)
        for x, y in ((a, b), (b, a)):
            dev = ["dev", self._dev(y)]
            if ms:
                _run(["tc", "-n", self.ns(x), "qdisc", "replace"] + dev + ["root", "netem", "delay", f"{ms}ms"])
            else:
                _run(["tc", "-n", self.ns(x), "qdisc", "del"] + dev + ["root"], check=False)
        if ms:
            self._latency[(a, b)] = float(ms)
        else:
            self._latency.pop((a, b), None)

    def set_rate(self, sender: Place, receiver: Place, mbit: Optional[float]) -> None:
        """Cap what sender sends to receiver at mbit Mbit/s (a `tbf` qdisc on sender's end of the link; the
        other direction is untouched); None or 0 removes the cap. A link has either added latency or a cap."""
        a, b = self.place(sender), self.place(receiver)
        if self._key(a, b) in self._latency:
            raise HarnessError(f"link {a}-{b} has added latency (netem); set_rate would replace it")
        dev = ["dev", self._dev(b)]
        if mbit:
            # burst: 10 ms worth at this rate, at least 1 MiB (many 64 KiB GSO packets)
            burst = max(1 << 20, int(mbit * 1e6 / 8 / 100))
            _run(["tc", "-n", self.ns(a), "qdisc", "replace"] + dev
                 + ["root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst), "latency", "100ms"])
        else:
            _run(["tc", "-n", self.ns(a), "qdisc", "del"] + dev + ["root"], check=False)

    def set_hosts(self, p: Place, names: Mapping[str, str]) -> None:
        """/etc/hosts as seen by commands run with exec_prefix(p) (`ip netns exec` bind-mounts
        /etc/netns/<namespace>/hosts over /etc/hosts): localhost plus {name: address}. Removed by close()."""
        d = ETC_NETNS / self.ns(p)
        d.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost"] + [f"{addr} {name}" for name, addr in names.items()]
        (d / "hosts").write_text("\n".join(lines) + "\n")

    def latency(self) -> dict[tuple[str, str], float]:
        """The delay (ms, each direction) added per link, for the links that have one."""
        return dict(self._latency)

    # ------------------------------------------------------------------ counters
    def raw_counters(self) -> dict[tuple[str, str], int]:
        """Bytes sent so far, per direction: {(sender, receiver): tx bytes of the sender's end}."""
        out: dict[tuple[str, str], int] = {}
        for p in self.places:
            r = _run(["ip", "-n", self.ns(p), "-s", "-j", "link", "show"])
            for dev in json.loads(r.stdout):
                name = dev.get("ifname", "")
                if name.startswith("to-") and name[3:] in self.places:
                    out[(p, name[3:])] = int(dev["stats64"]["tx"]["bytes"])
        return out

    def reset_counters(self) -> dict[tuple[str, str], int]:
        """counters() counts from now on. Returns the raw (directed) counters taken as the new zero."""
        self._baseline = self.raw_counters()
        return dict(self._baseline)

    def counters(self, directed: bool = False) -> dict[tuple[str, str], int]:
        """Bytes since start() or the last reset_counters().

        directed=False: {(a, b): bytes both ways} per link, a before b in the order az1, az2, ..., s3.
        directed=True:  {(sender, receiver): bytes} for each direction of each link."""
        now = self.raw_counters()
        delta = {k: v - self._baseline.get(k, 0) for k, v in now.items()}
        if directed:
            return delta
        return {(a, b): delta.get((a, b), 0) + delta.get((b, a), 0) for a, b in self.links}

    def cross_zone_bytes(self, counters: Optional[Mapping[tuple[str, str], int]] = None) -> int:
        """Sum over the zone<->zone links (of counters(), or of the given undirected counters)."""
        c = self.counters() if counters is None else counters
        return sum(v for (a, b), v in c.items() if S3 not in (a, b))

    def s3_bytes(self, counters: Optional[Mapping[tuple[str, str], int]] = None) -> int:
        """Sum over the zone<->s3 links."""
        c = self.counters() if counters is None else counters
        return sum(v for (a, b), v in c.items() if S3 in (a, b))

    @staticmethod
    def format_counters(counters: Mapping[tuple[str, str], int]) -> str:
        return ", ".join(f"{a}-{b} {v / 1e6:.2f} MB" for (a, b), v in sorted(counters.items()))


@contextlib.contextmanager
def bed_with_s3(data_dir: Path, bucket: str = "fasttier-zones", n: int = 3):
    """A started bed of n zones and an S3 server (MinIO) in its own namespace: yields (zones, s3)."""
    from .s3 import S3Server  # s3 imports this module

    with Zones(n=n, s3=True) as z, S3Server(buckets=[bucket], data_dir=data_dir, netns=z.s3_ns, host=z.s3_addr) as s3:
        yield z, s3


def _quiet_namespace() -> None:
    """Inside a new namespace: no IPv6 (no neighbour discovery chatter on the counted links)."""
    for conf in ("all", "default", "lo"):
        p = Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6")
        if p.exists():
            p.write_text("1")


def namespaces_of(prefix: str) -> list[str]:
    """The namespaces that exist now whose names start with prefix (for checks after close())."""
    return [n for n in list_netns() if n.startswith(prefix)]


def links_in_root() -> list[str]:
    """Names of the network interfaces of the root namespace (for checks that a bed left none behind)."""
    r = _run(["ip", "-j", "link", "show"])
    return sorted(d.get("ifname", "") for d in json.loads(r.stdout))


__all__: Iterable[str] = [
    "Zones", "Forwarder", "NetemUnavailable", "bed_with_s3", "bed_support", "netem_support", "enter_netns",
    "run_in_netns", "sweep_leftovers", "namespaces_of", "links_in_root", "netns_pids",
]
