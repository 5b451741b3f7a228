"""One plugin build for a whole benchmark run (tests/bench/zones.py, tests/bench/fast_tier.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pin_plugin(work: Path) -> dict:
    """Copies the plugin build (build/plugin or $FASTTIER_PLUGIN_DIR) into the work dir and points
    FASTTIER_PLUGIN_DIR at the copy, so that every cluster of the run uses the same build even if the shared
    build directory is rebuilt meanwhile (the harness copies the plugin per cluster, not per run). Returns what
    was pinned: file times, digests, uncommitted native/shim changes in the work tree."""
    from harness.kafka import plugin_dir, plugin_jars
    from harness.procs import wait_until

    src = plugin_dir()
    plugin_jars()  # fails with the usual message when there is no build
    # not a build that is still being written: nothing in it changed for 5 s
    wait_until(lambda: time.time() - max(f.stat().st_mtime for f in src.iterdir() if f.is_file()) > 5, 300, 1.0,
               f"the plugin build in {src} to settle")
    dst = work / "plugin"
    dst.mkdir(parents=True, exist_ok=True)
    info: dict = {"from": str(src), "files": {}}
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in (".jar", ".so"):
            shutil.copy2(f, dst / f.name)
            info["files"][f.name] = {"mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f.stat().st_mtime)),
                                     "sha256": hashlib.sha256((dst / f.name).read_bytes()).hexdigest()[:16]}
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "native", "java-shim"],
                           capture_output=True, text=True).stdout.strip()
    info["native_or_shim_uncommitted"] = dirty.splitlines()
    os.environ["FASTTIER_PLUGIN_DIR"] = str(dst)
    return info
