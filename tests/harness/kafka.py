"""KafkaCluster: real, unmodified Apache Kafka brokers (KRaft, combined broker+controller nodes), one JVM
per node, on free 127.0.0.1 ports, optionally with the fasttier RemoteStorageManager.

    with S3Server() as s3, KafkaCluster(3, version="4.4.0", plugin=True, s3=s3) as kc:
        kc.bootstrap_servers()
        kc.stop_broker(1); kc.wipe_broker(1); kc.start_broker(1)
        kc.broker_log(1)

Layout of a cluster's directory (a temp dir unless base_dir is given):
    node-<i>/server.properties
    node-<i>/data/        log.dirs (topic partitions)    -- wipe_broker(i) deletes this
    node-<i>/meta/        metadata.log.dir (KRaft log)   -- kept, so a wiped node rejoins
    node-<i>/broker.log   everything the broker logs (log4j2 config: tests/harness/log4j2.xml)
    node-<i>/stdout.log   the JVM's stdout/stderr (JVM crashes, hs_err notices, early failures)

The broker's class path is the Kafka distribution resolved by tests/scripts/setup.sh
($FASTTIER_CACHE/kafka/<version>/libs) plus, with plugin=True, every *.jar in $FASTTIER_PLUGIN_DIR
(default <repo>/build/plugin). The plugin files are copied into <cluster dir>/plugin/ when the cluster
is created (a rebuild in place would crash running JVMs); that copy is also java.library.path.

Plugin clusters use both of fasttier's plugins: the RSM and the RLMM (FastTierRemoteLogMetadataManager, which
delegates segment metadata to Kafka's TopicBasedRemoteLogMetadataManager -- the rlmm.config.* settings below
reach it -- and tells the fast tier what this broker leads). fast_tier=False turns the fast tier off
(rsm.config.wal.enable=false); the RLMM stays, as a pass-through.

In the zones test bed (harness/zones.py), zones=z puts node i in zone i % z.n: the JVM runs under
`ip netns exec <namespace>` and its BROKER and CONTROLLER listeners (inter-broker replication, the KRaft
quorum, the RLMM's clients) use the zone's address, so that traffic crosses the counted zone links. Clients
in the test process use a third listener, CLIENT, on the zone address too, advertised as 127.0.0.1:<port>
where a zones.Forwarder relays into the namespace of client_zone (default: the broker's own zone, so client
traffic crosses no counted link). JMX ports are forwarded the same way. The S3 server must then run in the
bed as well (S3Server(netns=z.s3_ns, host=z.s3_addr)); the brokers get its zone_endpoint.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from .procs import (
    LOOPBACK,
    REPO_ROOT,
    HarnessError,
    ManagedProcess,
    StopWaiting,
    cache_dir,
    free_port,
    free_ports,
    port_open,
    tail,
    wait_until,
)

HARNESS_DIR = Path(__file__).resolve().parent
LOG4J2_CONFIG = HARNESS_DIR / "log4j2.xml"
DEFAULT_VERSION = os.environ.get("FASTTIER_KAFKA_VERSION", "4.4.0")
RSM_CLASS = "io.fasttier.kafka.FastTierRemoteStorageManager"
RLMM_CLASS = "io.fasttier.kafka.FastTierRemoteLogMetadataManager"
BROKER_LISTENER = "BROKER"
CONTROLLER_LISTENER = "CONTROLLER"
CLIENT_LISTENER = "CLIENT"  # only with zones: what the test process's clients connect to


def kafka_libs(version: str) -> Path:
    d = cache_dir() / "kafka" / version / "libs"
    if not d.is_dir() or not any(d.glob("kafka_2.13-*.jar")):
        raise HarnessError(
            f"Kafka {version} class path not found in {d}. Run tests/scripts/setup.sh "
            f"(or FASTTIER_KAFKA_VERSIONS={version} tests/scripts/setup.sh)."
        )
    return d


def plugin_dir() -> Path:
    return Path(os.environ.get("FASTTIER_PLUGIN_DIR", str(REPO_ROOT / "build" / "plugin")))


def plugin_jars() -> list[Path]:
    d = plugin_dir()
    jars = sorted(d.glob("*.jar")) if d.is_dir() else []
    if not jars:
        raise HarnessError(
            f"fasttier plugin not found: no *.jar in {d}. Run `make build` first "
            f"(or point FASTTIER_PLUGIN_DIR at a directory holding fasttier-rsm-<version>.jar)."
        )
    return jars


def plugin_available() -> bool:
    d = plugin_dir()
    return d.is_dir() and any(d.glob("*.jar"))


def new_cluster_id() -> str:
    """A Kafka Uuid in its base64url form (as kafka-storage random-uuid prints it)."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def java_bin(java_home: Optional[str] = None) -> str:
    """The java launcher: <java_home>/bin/java if given (it must exist), else $JAVA_HOME's, else PATH's."""
    if java_home:
        b = Path(java_home) / "bin" / "java"
        if not b.exists():
            raise HarnessError(f"no Java in {java_home} ({b} does not exist)")
        return str(b)
    jh = os.environ.get("JAVA_HOME")
    if jh and (Path(jh) / "bin" / "java").exists():
        return str(Path(jh) / "bin" / "java")
    return shutil.which("java") or "java"


def java_version(java_home: str) -> Optional[str]:
    """JAVA_VERSION of a JDK/JRE's `release` file (e.g. "17.0.15", "25.0.3"); None if it has none."""
    try:
        text = (Path(java_home) / "release").read_text("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r'^JAVA_VERSION="([^"]+)"', text, re.M)
    return m.group(1) if m else None


@dataclass
class Node:
    node_id: int
    broker_port: int
    controller_port: int
    dir: Path
    proc: Optional[ManagedProcess] = None
    jmx_port: Optional[int] = None
    host: str = LOOPBACK  # listen address of BROKER and CONTROLLER (and CLIENT with zones)
    name: Optional[str] = None  # with zones: the host name the BROKER listener advertises
    zone: Optional[str] = None  # with zones: the zone's name ("az1", ...)
    netns: Optional[str] = None  # with zones: the network namespace the JVM runs in
    client_port: Optional[int] = None  # with zones: the CLIENT listener's port (in the zone and on 127.0.0.1)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def meta_dir(self) -> Path:
        return self.dir / "meta"

    @property
    def properties_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    @property
    def stdout_path(self) -> Path:
        return self.dir / "stdout.log"


class KafkaCluster:
    def __init__(
        self,
        n_brokers: int = 3,
        version: str = DEFAULT_VERSION,
        plugin: bool = True,
        s3=None,
        broker_overrides: Optional[Mapping[str, Any]] = None,
        rsm_config: Optional[Mapping[str, Any]] = None,
        prefix: Optional[str] = None,
        base_dir: Optional[Path] = None,
        heap: str = "512m",
        node_overrides: Optional[Mapping[int, Mapping[str, Any]]] = None,
        jvm_args: Iterable[str] = (),
        node_jvm_args: Optional[Mapping[int, Iterable[str]]] = None,
        env: Optional[Mapping[str, str]] = None,
        name: str = "kafka",
        fast_tier: bool = True,
        jmx: bool = False,
        zones=None,
        client_zone=None,
        fast_replication: bool = False,
        java_home: Optional[str] = None,
    ) -> None:
        """
        java_home: the JDK/JRE every JVM of this cluster runs on (brokers, the storage format tool, run_tool);
            it is also the JVMs' JAVA_HOME. None: $JAVA_HOME, else `java` on PATH.
        fast_replication: with zones and the plugin, every broker replicates through the fast tier: its
            plugin runs the fetch proxy (rsm.config.replication.fast.*) and its JVM resolves the other
            brokers' names to the proxy (-Djdk.net.hosts.file, see hosts_file()).
        jmx: every node gets a JMX port (Node.jmx_port) for harness.jmx.Jmx.
        zones: a started harness.zones.Zones: node i runs in zone i % zones.n (see the module doc).
        client_zone: with zones, the zone (index or name) the test process's clients connect from;
            None: each broker's own zone.
        broker_overrides: server.properties entries for every node (a value None removes the key).
        rsm_config: plugin settings, with or without the "rsm.config." prefix (None removes a key).
        node_overrides: {node_id: {...}} server.properties entries for one node only.
        node_jvm_args: {node_id: [...]} extra JVM options of one node's broker process (not of the storage
            format tool), after jvm_args: e.g. a -javaagent listening on a port of that node's own.
        prefix: the plugin's rsm.config.prefix (default: a fresh "e2e-<random>/"; it must be empty or end in "/").
        fast_tier: False sets rsm.config.wal.enable=false (rsm_config can still override it).
        """
        if plugin and s3 is None:
            raise HarnessError("KafkaCluster(plugin=True) needs an S3Server (s3=...)")
        if zones is not None and s3 is not None and not getattr(s3, "netns", None):
            raise HarnessError(
                "KafkaCluster(zones=...) needs the S3 server in the bed too: S3Server(netns=z.s3_ns, host=z.s3_addr)"
            )
        if fast_replication and (zones is None or not plugin):
            raise HarnessError("KafkaCluster(fast_replication=True) needs zones=... and plugin=True")
        self.zones = zones
        self.client_zone = client_zone
        self.fast_replication = fast_replication
        # the leaders' new-object notification listeners: one port for every broker (each on its zone address)
        self.notify_port = free_port() if fast_replication else None
        self._forwarders: dict[int, list] = {}
        self.n = n_brokers
        self.version = version
        self.plugin = plugin
        self.fast_tier = fast_tier
        self.s3 = s3
        self.name = name
        self.heap = heap
        self.broker_overrides = dict(broker_overrides or {})
        self.node_overrides = {int(k): dict(v) for k, v in (node_overrides or {}).items()}
        self.rsm_overrides = {
            (k if k.startswith("rsm.config.") else f"rsm.config.{k}"): v for k, v in (rsm_config or {}).items()
        }
        self.prefix = prefix if prefix is not None else f"e2e-{uuid.uuid4().hex[:8]}/"
        self.jvm_args = list(jvm_args)
        self.node_jvm_args = {int(k): list(v) for k, v in (node_jvm_args or {}).items()}
        self.extra_env = dict(env or {})
        self.java_home = str(java_home) if java_home else None
        self.java = java_bin(self.java_home)
        if self.java_home:
            self.extra_env.setdefault("JAVA_HOME", self.java_home)
        self.cluster_id = new_cluster_id()
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix=f"ft-e2e-{name}-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._plugin_jars: list[Path] = []
        self.plugin_dir: Optional[Path] = None
        try:
            self._libs = kafka_libs(version)
            if plugin:
                self._snapshot_plugin()
        except BaseException:
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            raise
        ports = free_ports((4 if zones is not None else 3) * n_brokers)
        self.nodes = [
            Node(i, ports[3 * i], ports[3 * i + 1], self.base_dir / f"node-{i}",
                 jmx_port=ports[3 * i + 2] if jmx else None)
            for i in range(n_brokers)
        ]
        if zones is not None:
            for node in self.nodes:
                z = node.node_id % zones.n
                node.zone, node.netns, node.host = zones.place(z), zones.ns(z), zones.addr(z)
                node.client_port = ports[3 * n_brokers + node.node_id]
                node.name = f"kafka-{node.node_id}.ftz.test"
        self._formatted = False
        self._admin = None
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            self._write_properties(node)

    def _snapshot_plugin(self) -> None:
        """Copy the plugin (jars and .so) into the cluster's directory and run the brokers from the copy.

        A rebuild rewrites build/plugin/libfasttier_jni.so in place; a JVM that has the old file mapped
        then dies with SIGSEGV in native code. A private copy keeps every node of this cluster on one
        consistent build for its whole life."""
        src = plugin_dir()
        jars = plugin_jars()
        # don't copy a build that is still being written: wait until nothing in it changed for 5 s
        def settled() -> bool:
            newest = max(f.stat().st_mtime for f in src.iterdir() if f.is_file())
            return time.time() - newest > 5

        wait_until(settled, 300, 1.0, f"the plugin build in {src} to settle")
        jars = plugin_jars()
        dst = self.base_dir / "plugin"
        dst.mkdir(parents=True, exist_ok=True)
        for f in list(jars) + sorted(src.glob("*.so")):
            shutil.copy2(f, dst / f.name)
        self.plugin_dir = dst
        self._plugin_jars = sorted(dst.glob("*.jar"))

    # ------------------------------------------------------------------ configuration
    @property
    def rf(self) -> int:
        return min(3, self.n)

    def voters(self) -> str:
        return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)

    def proxy_addr(self, leader: int) -> str:
        """Where a follower's fetch proxy listens for `leader` (rsm.config.replication.fast.bind's default)."""
        return f"127.0.100.{leader}"

    def hosts_file(self, node: Node) -> str:
        """The JVM's name table (-Djdk.net.hosts.file) with zones: every broker's advertised name -> its
        zone address, or, with fast_replication, the other brokers' names -> this node's fetch proxy."""
        lines = ["127.0.0.1 localhost", f"127.0.0.1 {socket.gethostname()}"]
        for other in self.nodes:
            if other.node_id == node.node_id or not self.fast_replication:
                lines.append(f"{other.host} {other.name}")
            else:
                lines.append(f"{self.proxy_addr(other.node_id)} {other.name}")
        return "\n".join(lines) + "\n"

    def rsm_properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if self.s3 is not None:
            props.update(
                {
                    "rsm.config.s3.bucket": self.s3.bucket,
                    "rsm.config.s3.endpoint": self.s3.zone_endpoint if self.zones is not None else self.s3.endpoint,
                    "rsm.config.s3.region": self.s3.region,
                    "rsm.config.s3.path.style": "true",
                    "rsm.config.s3.access.key.id": self.s3.access_key,
                    "rsm.config.s3.secret.access.key": self.s3.secret_key,
                }
            )
        props["rsm.config.prefix"] = self.prefix
        if self.fast_replication:
            props["rsm.config.replication.fast.enable"] = "true"
            props["rsm.config.replication.fast.brokers"] = ",".join(
                f"{n.node_id}@{n.host}:{n.broker_port}" for n in self.nodes
            )
            props["rsm.config.replication.fast.notify.port"] = self.notify_port
        if not self.fast_tier:
            props["rsm.config.wal.enable"] = "false"
        props.update(self.rsm_overrides)
        return {k: v for k, v in props.items() if v is not None}

    def properties(self, node: Node) -> dict[str, Any]:
        rf = self.rf
        p: dict[str, Any] = {
            "node.id": node.node_id,
            "process.roles": "broker,controller",
            "controller.quorum.voters": self.voters(),
            "listeners": f"{BROKER_LISTENER}://{node.host}:{node.broker_port},"
            f"{CONTROLLER_LISTENER}://{node.host}:{node.controller_port}",
            "advertised.listeners": f"{BROKER_LISTENER}://{node.name or node.host}:{node.broker_port}",
            "listener.security.protocol.map": f"{BROKER_LISTENER}:PLAINTEXT,{CONTROLLER_LISTENER}:PLAINTEXT",
            "inter.broker.listener.name": BROKER_LISTENER,
            "controller.listener.names": CONTROLLER_LISTENER,
            "log.dirs": str(node.data_dir),
            "metadata.log.dir": str(node.meta_dir),
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 3,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min(2, rf),
            "transaction.state.log.num.partitions": 3,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min(2, rf),
            "group.initial.rebalance.delay.ms": 0,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.replica.fetchers": 1,
            "background.threads": 4,
            "log.retention.check.interval.ms": 1000,
            "log.segment.delete.delay.ms": 1000,
            "log.initial.task.delay.ms": 1000,
            "replica.lag.time.max.ms": 10000,
            "controlled.shutdown.enable": "true",
            "auto.leader.rebalance.enable": "false",
            "delete.topic.enable": "true",
        }
        if node.client_port is not None:
            p["listeners"] += f",{CLIENT_LISTENER}://{node.host}:{node.client_port}"
            p["advertised.listeners"] += f",{CLIENT_LISTENER}://{LOOPBACK}:{node.client_port}"
            p["listener.security.protocol.map"] += f",{CLIENT_LISTENER}:PLAINTEXT"
        if self.plugin:
            p.update(
                {
                    "remote.log.storage.system.enable": "true",
                    "remote.log.storage.manager.class.name": RSM_CLASS,
                    "remote.log.metadata.manager.class.name": RLMM_CLASS,
                    "remote.log.metadata.manager.listener.name": BROKER_LISTENER,
                    "rlmm.config.remote.log.metadata.topic.replication.factor": rf,
                    "rlmm.config.remote.log.metadata.topic.num.partitions": 5,
                    "rlmm.config.remote.log.metadata.topic.min.isr": 1 if rf < 3 else 2,
                    "remote.log.manager.task.interval.ms": 1000,
                    "remote.fetch.max.wait.ms": 500,
                }
            )
            p.update(self.rsm_properties())
        for src in (self.broker_overrides, self.node_overrides.get(node.node_id, {})):
            for k, v in src.items():
                if v is None:
                    p.pop(k, None)
                else:
                    p[k] = v
        return p

    def _write_properties(self, node: Node) -> None:
        lines = [f"# written by tests/harness/kafka.py for {self.name} node {node.node_id}"]
        for k, v in self.properties(node).items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            lines.append(f"{k}={v}")
        node.properties_path.write_text("\n".join(lines) + "\n")
        if node.name is not None:
            (node.dir / "hosts").write_text(self.hosts_file(node))

    def classpath(self) -> str:
        jars = sorted(self._libs.glob("*.jar")) + list(self._plugin_jars)
        return ":".join(str(j) for j in jars)

    def _jvm_argv(self, node: Node, main: str, args: list[str]) -> list[str]:
        argv = [
            self.java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={node.dir}/hs_err_pid%p.log",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",  # listeners are plain IPv4 sockets on 127.0.0.1
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dfasttier.test.log.file={node.log_path}",
        ]
        if self.plugin_dir is not None:
            argv.append(f"-Djava.library.path={self.plugin_dir}")
        if node.name is not None:
            argv.append(f"-Djdk.net.hosts.file={node.dir / 'hosts'}")
        if node.jmx_port is not None:
            argv += [
                "-Dcom.sun.management.jmxremote",
                f"-Dcom.sun.management.jmxremote.port={node.jmx_port}",
                f"-Dcom.sun.management.jmxremote.rmi.port={node.jmx_port}",
                "-Dcom.sun.management.jmxremote.authenticate=false",
                "-Dcom.sun.management.jmxremote.ssl=false",
                f"-Djava.rmi.server.hostname={LOOPBACK}",
            ]
        argv += self.jvm_args
        if main == "kafka.Kafka":
            argv += self.node_jvm_args.get(node.node_id, [])
        argv += ["-cp", self.classpath(), main] + args
        return argv

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # the plugin's native side logs through the broker; keep stray env from changing test behaviour
        env.pop("KAFKA_OPTS", None)
        env.pop("KAFKA_HEAP_OPTS", None)
        env.update(self.extra_env)
        return env

    # ------------------------------------------------------------------ lifecycle
    def format(self) -> None:
        """kafka-storage format every node (static controller.quorum.voters, so no --standalone)."""
        with cf.ThreadPoolExecutor(self.n) as ex:
            list(ex.map(self._format_node, self.nodes))
        self._formatted = True

    def _format_node(self, node: Node) -> None:
        argv = self._jvm_argv(
            node,
            "kafka.tools.StorageTool",
            ["format", "-t", self.cluster_id, "-c", str(node.properties_path), "--ignore-formatted"],
        )
        argv = [a for a in argv if not a.startswith("-Xms")]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=self._env())
        with open(node.dir / "format.log", "a") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise HarnessError(
                f"kafka-storage format failed for node {node.node_id} (exit {r.returncode}):\n"
                f"{r.stdout}\n{r.stderr}"
            )

    def start(self, timeout: float = 180.0, wait: bool = True) -> "KafkaCluster":
        if not self._formatted:
            self.format()
        for node in self.nodes:
            self._spawn(node)
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def _spawn(self, node: Node) -> None:
        if node.proc is not None and node.proc.running():
            return
        self._write_properties(node)
        argv = self.exec_prefix(node.node_id) + self._jvm_argv(node, "kafka.Kafka", [str(node.properties_path)])
        self._forward(node)
        node.proc = ManagedProcess(
            f"{self.name}-node-{node.node_id}", argv, node.stdout_path, env=self._env(), cwd=node.dir
        )

    def exec_prefix(self, i: int) -> list[str]:
        """argv prefix that runs a command where node i runs (its zone's namespace; [] without zones)."""
        node = self.nodes[i]
        return ["ip", "netns", "exec", node.netns] if node.netns else []

    def zone_of(self, i: int) -> Optional[str]:
        return self.nodes[i].zone

    def _forward(self, node: Node) -> None:
        """With zones: 127.0.0.1 forwarders for node's CLIENT listener and JMX port (once per node)."""
        if self.zones is None or node.node_id in self._forwarders:
            return
        fwd = [self.zones.forward(self.client_zone if self.client_zone is not None else node.zone,
                                  node.host, node.client_port, listen_port=node.client_port)]
        if node.jmx_port is not None:
            fwd.append(self.zones.forward(node.zone, LOOPBACK, node.jmx_port, listen_port=node.jmx_port))
        self._forwarders[node.node_id] = fwd

    def _listening(self, node: Node) -> bool:
        if node.netns is None:
            return port_open(node.broker_port)
        return self.zones.port_open(node.zone, node.host, node.broker_port)

    def wait_ready(self, timeout: float = 180.0, nodes: Optional[Iterable[int]] = None) -> None:
        """Wait until the given nodes (default all) run, listen, and the cluster metadata lists them."""
        ids = list(nodes) if nodes is not None else [n.node_id for n in self.nodes]

        def ready() -> bool:
            for i in ids:
                node = self.nodes[i]
                if node.proc is None or not node.proc.running():
                    raise BrokerExited(self, i)
                if not self._listening(node):
                    return False
            alive = self.alive_broker_ids(timeout=5)
            return set(ids) <= set(alive)

        try:
            wait_until(ready, timeout, 0.5, lambda: f"brokers {ids} of {self.name} to be ready")
        except BrokerExited:
            raise
        except Exception as e:
            raise HarnessError(f"{e}\n{self.diagnostics(ids)}") from e

    def alive_broker_ids(self, timeout: float = 10) -> list[int]:
        md = self.admin().list_topics(timeout=timeout)
        return sorted(md.brokers.keys())

    def bootstrap_servers(self, nodes: Optional[Iterable[int]] = None) -> str:
        ids = list(nodes) if nodes is not None else [n.node_id for n in self.nodes]
        return ",".join(
            f"{LOOPBACK}:{self.nodes[i].client_port or self.nodes[i].broker_port}" for i in ids
        )

    def stop_broker(self, i: int, timeout: float = 120.0) -> Optional[int]:
        """SIGTERM (controlled shutdown) and wait for the JVM to exit. Returns its exit code."""
        node = self.nodes[i]
        if node.proc is None:
            return None
        rc = node.proc.terminate(timeout)
        node.proc = None
        self._reset_admin()
        return rc

    def kill_broker(self, i: int) -> Optional[int]:
        node = self.nodes[i]
        if node.proc is None:
            return None
        rc = node.proc.kill()
        node.proc = None
        self._reset_admin()
        return rc

    def start_broker(self, i: int, timeout: float = 180.0, wait: bool = True) -> None:
        self._spawn(self.nodes[i])
        if wait:
            self.wait_ready(timeout, nodes=[i])

    def restart_broker(self, i: int, timeout: float = 180.0) -> None:
        self.stop_broker(i)
        self.start_broker(i, timeout)

    def wipe_broker(self, i: int, reformat: bool = True) -> None:
        """Lose node i's data log dir (every partition), keeping its KRaft metadata dir
        (metadata.log.dir is separate), as when a data disk is replaced.

        Kafka 4.x refuses to start with a log dir that has no meta.properties ("No `meta.properties`
        found in <dir> (have you run `kafka-storage.sh` to format the directory?)"), so:
          reformat=True  (default) does what an operator does after a disk swap: `kafka-storage format
                         --ignore-formatted` with the cluster id, which formats only the new, empty
                         data dir (a new directory.id) and leaves the metadata dir alone;
          reformat=False deletes everything in the data dir except meta.properties (same directory.id).
        """
        node = self.nodes[i]
        if node.proc is not None and node.proc.running():
            raise HarnessError(f"wipe_broker({i}): stop the broker first")
        meta_props = node.data_dir / "meta.properties"
        saved = meta_props.read_bytes() if (not reformat and meta_props.exists()) else None
        shutil.rmtree(node.data_dir, ignore_errors=True)
        if reformat:
            self._format_node(node)
        else:
            node.data_dir.mkdir(parents=True)
            if saved is not None:
                meta_props.write_bytes(saved)

    def check_alive(self) -> None:
        """Raise BrokerExited (a StopWaiting: wait_until fails at once) if a node that the harness
        started, and did not stop, is no longer running (crashed, exited)."""
        for n in self.nodes:
            if n.proc is not None and not n.proc.running():
                raise BrokerExited(self, n.node_id, during="while the test ran")

    def is_running(self, i: int) -> bool:
        p = self.nodes[i].proc
        return p is not None and p.running()

    def exit_code(self, i: int) -> Optional[int]:
        p = self.nodes[i].proc
        return None if p is None else p.returncode

    def wait_for_exit(self, i: int, timeout: float) -> Optional[int]:
        p = self.nodes[i].proc
        if p is None:
            return None
        return p.wait(timeout)

    def update_rsm_config(self, **kv: Any) -> None:
        """Change plugin settings for the next (re)start of each node."""
        for k, v in kv.items():
            key = k if k.startswith("rsm.config.") else f"rsm.config.{k}"
            self.rsm_overrides[key] = v

    def stop(self) -> None:
        """Stop every node (in parallel: SIGTERM, then SIGKILL after a grace period). Never raises."""
        self._reset_admin()
        nodes = [n for n in self.nodes if n.proc is not None]
        if nodes:
            # Controlled shutdown of the last nodes of a combined quorum can hang: give it 30 s.
            with cf.ThreadPoolExecutor(len(nodes)) as ex:
                list(ex.map(lambda n: n.proc.terminate(30), nodes))
            for n in nodes:
                n.proc = None

    def close(self, keep_dir: Optional[bool] = None) -> None:
        self.stop()
        for fwd in self._forwarders.values():
            for f in fwd:
                f.close()
        self._forwarders.clear()
        if keep_dir is None:
            keep_dir = bool(os.environ.get("FASTTIER_KEEP_TMP"))
        if self._own_dir and not keep_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.close(keep_dir=True if exc_type is not None else None)

    def __repr__(self) -> str:
        return (
            f"KafkaCluster({self.name}, n={self.n}, kafka {self.version}, java {self.java}, "
            f"plugin={self.plugin}, fast_tier={self.fast_tier}, dir={self.base_dir})"
        )

    # ------------------------------------------------------------------ logs
    def broker_log(self, i: int) -> str:
        """The broker's log4j log (and, appended, what the JVM printed on stdout/stderr)."""
        node = self.nodes[i]
        parts = []
        for p in (node.log_path, node.stdout_path):
            if p.exists():
                parts.append(p.read_text("utf-8", "replace"))
        return "\n".join(parts)

    def log_mark(self, i: int) -> int:
        """Where the broker's log4j log ends now (for log_since)."""
        p = self.nodes[i].log_path
        return p.stat().st_size if p.exists() else 0

    def log_since(self, i: int, mark: int) -> str:
        """What the broker logged after log_mark(i) returned mark (broker_log() appends stdout after the
        log, so slicing broker_log() by an earlier length would skip new lines)."""
        p = self.nodes[i].log_path
        if not p.exists():
            return ""
        with open(p, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def grep_log(self, i: int, pattern: str, flags: int = 0) -> list[str]:
        rx = re.compile(pattern, flags)
        return [ln for ln in self.broker_log(i).splitlines() if rx.search(ln)]

    def grep_logs(self, pattern: str, flags: int = 0) -> dict[int, list[str]]:
        return {n.node_id: self.grep_log(n.node_id, pattern, flags) for n in self.nodes}

    def plugin_problems(self, i: int, since: int = 0) -> list[str]:
        """WARN/ERROR lines of broker i's log (after `since`, a log_mark(), if given) that come from the
        plugin (loggers io.fasttier.*, abbreviated "(i.f.") or carry its messages ("fasttier: ")."""
        text = self.log_since(i, since) if since else self.broker_log(i)
        return [
            ln for ln in text.splitlines()
            if (" WARN " in ln or " ERROR " in ln) and ("(i.f." in ln or "fasttier: " in ln or "io.fasttier" in ln)
        ]

    def diagnostics(self, ids: Optional[Iterable[int]] = None, lines: int = 40) -> str:
        out = [repr(self)]
        for i in ids if ids is not None else range(self.n):
            node = self.nodes[i]
            state = "running" if self.is_running(i) else f"not running (exit {self.exit_code(i)})"
            out.append(f"--- node {i} {state}; {node.log_path} (last {lines} lines):")
            out.append(tail(node.log_path, lines))
            out.append(f"--- {node.stdout_path} (last 15 lines):")
            out.append(tail(node.stdout_path, 15))
            for hs in node.dir.glob("hs_err_pid*.log"):
                out.append(f"--- JVM CRASH LOG {hs}:\n{tail(hs, 40)}")
        return "\n".join(out)

    # ------------------------------------------------------------------ clients & admin
    def _reset_admin(self) -> None:
        self._admin = None

    def admin(self):
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(
                {"bootstrap.servers": self.bootstrap_servers(), "socket.timeout.ms": 10000, "log_level": 3}
            )
        return self._admin

    def client_config(self, **extra: Any) -> dict[str, Any]:
        c: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers(), "log_level": 3}
        c.update(extra)
        return c

    def _admin_call(self, fn, what: str, timeout: float = 60.0, ok_on_retry: tuple[str, ...] = ()):
        """Run an admin request (fn() -> result), retrying transient client/broker errors (a broker
        handle replaced after the first metadata response, a controller election, a timeout).
        ok_on_retry: error names that mean a previous attempt already succeeded (e.g. TOPIC_ALREADY_EXISTS)."""
        from confluent_kafka import KafkaError, KafkaException

        transient = {
            KafkaError._DESTROY_BROKER, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
            KafkaError._ALL_BROKERS_DOWN, KafkaError.NOT_CONTROLLER, KafkaError.REQUEST_TIMED_OUT,
            KafkaError.LEADER_NOT_AVAILABLE, KafkaError._WAIT_COORD, KafkaError.BROKER_NOT_AVAILABLE,
        }
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except KafkaException as e:
                err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
                if err is not None and attempt > 1 and err.name() in ok_on_retry:
                    return None
                retriable = err is not None and (err.code() in transient or err.retriable())
                if not retriable or time.monotonic() > deadline:
                    raise
                self.check_alive()
                time.sleep(min(2.0, 0.25 * attempt))

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: Optional[int] = None,
        config: Optional[Mapping[str, Any]] = None,
        replica_assignment: Optional[list[list[int]]] = None,
        timeout: float = 60.0,
    ) -> None:
        from confluent_kafka.admin import NewTopic

        cfg = {k: str(v) for k, v in (config or {}).items()}
        if replica_assignment is not None:
            nt = NewTopic(
                name, num_partitions=len(replica_assignment), replica_assignment=replica_assignment, config=cfg
            )
        else:
            nt = NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor or self.rf,
                config=cfg,
            )
        self._admin_call(
            lambda: self.admin().create_topics([nt], operation_timeout=30, request_timeout=30)[name].result(45),
            f"create topic {name}", timeout, ok_on_retry=("TOPIC_ALREADY_EXISTS",),
        )
        n_parts = len(replica_assignment) if replica_assignment is not None else partitions

        def has_leaders():
            t = self.admin().list_topics(name, timeout=10).topics.get(name)
            if t is None or t.error is not None or len(t.partitions) != n_parts:
                return False
            return all(p.leader >= 0 for p in t.partitions.values())

        wait_until(has_leaders, timeout, 0.3, f"topic {name} to have leaders")

    def delete_topic(self, name: str, timeout: float = 60.0) -> None:
        self._admin_call(
            lambda: self.admin().delete_topics([name], operation_timeout=30, request_timeout=30)[name].result(45),
            f"delete topic {name}", timeout, ok_on_retry=("UNKNOWN_TOPIC_OR_PART", "UNKNOWN_TOPIC_ID"),
        )
        wait_until(
            lambda: name not in self.admin().list_topics(timeout=10).topics,
            timeout,
            0.5,
            f"topic {name} to disappear",
        )

    def alter_topic_config(self, name: str, config: Mapping[str, Any], timeout: float = 60.0) -> None:
        """Incrementally SET (value) or DELETE (value None) topic configs."""
        from confluent_kafka.admin import (
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            ResourceType,
        )

        entries = [
            ConfigEntry(
                k,
                None if v is None else str(v),
                incremental_operation=AlterConfigOpType.DELETE if v is None else AlterConfigOpType.SET,
            )
            for k, v in config.items()
        ]
        res = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)

        def call():
            for f in self.admin().incremental_alter_configs([res], request_timeout=30).values():
                f.result(45)

        self._admin_call(call, f"alter configs of {name}", timeout)

    def topic_config(self, name: str) -> dict[str, str]:
        from confluent_kafka.admin import ConfigResource, ResourceType

        res = ConfigResource(ResourceType.TOPIC, name)
        entries = self._admin_call(
            lambda: list(self.admin().describe_configs([res]).values())[0].result(30), f"describe configs of {name}"
        )
        return {k: e.value for k, e in entries.items()}

    def describe_topic(self, name: str, timeout: float = 30.0):
        """confluent_kafka TopicDescription: .topic_id, .partitions[i].leader/.replicas/.isr (Nodes)."""
        from confluent_kafka import KafkaException, TopicCollection

        def call():
            return self.admin().describe_topics(TopicCollection([name]), request_timeout=timeout)[name].result(timeout)

        # a topic created a moment ago may not be in the metadata of the broker asked yet
        settle = time.monotonic() + 10
        while True:
            try:
                return self._admin_call(call, f"describe topic {name}", 60)
            except KafkaException as e:
                if "UNKNOWN_TOPIC_OR_PART" not in str(e) or time.monotonic() > settle:
                    raise
                time.sleep(0.5)

    def topic_id(self, name: str) -> str:
        """The topic id in Kafka's base64url form (as in partition.metadata and Uuid.toString()).

        librdkafka prints Uuids in standard base64 ('+', '/'); Kafka (and the plugin's object keys)
        use URL-safe base64 without padding ('-', '_')."""
        raw = str(self.describe_topic(name).topic_id)
        return raw.replace("+", "-").replace("/", "_").rstrip("=")

    def partition_state(self, name: str) -> dict[int, dict[str, Any]]:
        d = self.describe_topic(name)
        return {
            p.id: {
                "leader": p.leader.id if p.leader is not None else -1,
                "replicas": [r.id for r in p.replicas],
                "isr": [r.id for r in p.isr],
            }
            for p in d.partitions
        }

    def leader_of(self, topic: str, partition: int) -> int:
        return self.partition_state(topic)[partition]["leader"]

    def wait_for_isr(self, topic: str, size: Optional[int] = None, timeout: float = 120.0,
                     contains: Optional[int] = None):
        size = size or self.rf

        def ok():
            self.check_alive()
            st = self.partition_state(topic)
            return all(
                len(s["isr"]) >= size and (contains is None or contains in s["isr"]) for s in st.values()
            ) and st

        what = f"ISR of {topic} to reach {size}" + (f" with {contains}" if contains is not None else "")
        return wait_until(ok, timeout, 1.0, what)

    # ------------------------------------------------------------------ files on disk
    def partition_dir(self, i: int, topic: str, partition: int) -> Path:
        return self.nodes[i].data_dir / f"{topic}-{partition}"

    def local_segments(self, i: int, topic: str, partition: int) -> list[int]:
        """Base offsets of node i's live .log segment files of one partition, sorted (empty if none)."""
        d = self.partition_dir(i, topic, partition)
        if not d.is_dir():
            return []
        out = []
        for f in d.iterdir():
            if f.name.endswith(".log") and f.name[:-4].isdigit():
                out.append(int(f.name[:-4]))
        return sorted(out)

    def log_digest(self, i: int, topic: str, partition: int) -> tuple[int, str]:
        """(bytes, sha256) of node i's .log files of the partition, concatenated in offset order: equal for
        two replicas exactly when they hold the same record batches."""
        h, n = hashlib.sha256(), 0
        d = self.partition_dir(i, topic, partition)
        for base in self.local_segments(i, topic, partition):
            data = (d / f"{base:020d}.log").read_bytes()
            h.update(data)
            n += len(data)
        return n, h.hexdigest()

    def local_log_bytes(self, i: int, topic: str, partition: int) -> int:
        """Total size of node i's .log segment files of the partition (its record batches on disk)."""
        d = self.partition_dir(i, topic, partition)
        return sum((d / f"{b:020d}.log").stat().st_size for b in self.local_segments(i, topic, partition))

    def local_log_start(self, i: int, topic: str, partition: int) -> Optional[int]:
        """Base offset of node i's oldest local segment of the partition (None if it has none)."""
        segs = self.local_segments(i, topic, partition)
        return segs[0] if segs else None

    # ------------------------------------------------------------------ java tools
    def run_tool(self, main: str, args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run a Kafka CLI class (e.g. org.apache.kafka.tools.GetOffsetShell) against this cluster."""
        argv = [self.java, "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
                f"-Dfasttier.test.log.file={self.base_dir}/tools.log",
                "-cp", ":".join(str(j) for j in sorted(self._libs.glob('*.jar'))), main] + args
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self._env())


class BrokerExited(StopWaiting):
    def __init__(self, cluster: KafkaCluster, i: int, during: str = "during startup") -> None:
        self.cluster = cluster
        self.node_id = i
        self.exit_code = cluster.exit_code(i)
        super().__init__(
            f"broker {i} of {cluster.name} exited with code {self.exit_code} {during}\n"
            + cluster.diagnostics([i])
        )
