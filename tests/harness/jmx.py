"""Broker and plugin metrics over JMX, read with Kafka's own JmxTool (one JVM per call). The cluster must
be started with KafkaCluster(jmx=True)."""

from __future__ import annotations

import math

from .procs import HarnessError


class Jmx:
    def __init__(self, kc, node: int) -> None:
        port = kc.nodes[node].jmx_port
        if port is None:
            raise HarnessError("Jmx needs KafkaCluster(jmx=True)")
        self.kc = kc
        self.url = f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{port}/jmxrmi"

    def read(self, names: list[str]) -> dict[str, float]:
        """{"<object name>:<attribute>": value} for every numeric attribute of the matching MBeans."""
        args = ["--jmx-url", self.url, "--one-time", "true", "--report-format", "properties"]
        for n in names:
            args += ["--object-name", n]
        r = self.kc.run_tool("org.apache.kafka.tools.JmxTool", args, timeout=120)
        out: dict[str, float] = {}
        for line in r.stdout.splitlines():
            if "=" not in line:
                continue
            k, _, v = line.rpartition("=")
            try:
                out[k.strip()] = float(v)
            except ValueError:
                continue
        return out

    def plugin(self) -> dict[str, float]:
        """The plugin's metrics (fasttier's native metric list), by metric name."""
        out: dict[str, float] = {}
        for k, v in self.read(["kafka.server:type=plugins,*"]).items():
            name = k.rsplit(":", 1)[-1]
            if "name=" in k and name == "Value":
                name = k.split("name=", 1)[1].split(",", 1)[0].split(":", 1)[0]
            out[name] = v
        return out


def metric(values: dict[str, float], name: str) -> float:
    return values.get(name, math.nan)
