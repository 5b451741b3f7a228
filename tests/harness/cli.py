"""The `fasttier` command-line tool, run the way an operator runs it: against a broker's own
server.properties (so it sees exactly the bucket and prefixes that broker uses)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .procs import HarnessError


def cli_binary() -> Path:
    """The release build of native/cli (`make build` puts it under $CARGO_TARGET_DIR)."""
    cache = Path(os.environ.get("FASTTIER_CACHE", Path.home() / ".cache" / "fasttier"))
    target = Path(os.environ.get("CARGO_TARGET_DIR", cache / "target"))
    exe = target / "release" / "fasttier"
    if not exe.is_file():
        raise HarnessError(f"fasttier CLI not found at {exe}; run `make build`")
    return exe


def run_cli(kc, node: int, args: list[str], timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Runs `fasttier -c <node's server.properties> <args>`."""
    argv = [str(cli_binary()), "-c", str(kc.nodes[node].properties_path)] + args
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def cli_json(kc, node: int, args: list[str], ok_codes: tuple[int, ...] = (0, 1), timeout: float = 180.0) -> Any:
    """Runs a `--json` verb and parses its output (one JSON document, or one per line)."""
    r = run_cli(kc, node, args + ["--json"], timeout=timeout)
    if r.returncode not in ok_codes:
        raise HarnessError(f"fasttier {' '.join(args)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    text = r.stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise HarnessError(f"fasttier {' '.join(args)} printed no JSON ({e}):\n{text[-2000:]}") from e


def verify_partition(kc, node: int, topic: str, partition: int) -> dict:
    """`fasttier partition verify` of node's local copy of topic-partition against the tiers."""
    d = kc.partition_dir(node, topic, partition)
    return cli_json(kc, node, ["partition", "verify", "--dir", str(d)])
