"""Shared pytest fixtures for the fasttier end-to-end tests.

Fixtures
  s3_server        module-scoped MinIO (S3Server) with bucket "fasttier-e2e"
  kc               module-scoped started KafkaCluster configured by the module's CLUSTER dict
  make_cluster     factory: make_cluster(n_brokers=3, version=..., plugin=True, ...) -> started KafkaCluster,
                   stopped at the end of the test that asked for it (function scope)

Every process the harness starts is killed at the end of the run (fixture finalizers, then an atexit
hook, and PR_SET_PDEATHSIG for a pytest that is itself killed). The clusters' directories (logs!)
are deleted unless a test failed or FASTTIER_KEEP_TMP=1; their paths are printed on failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import KafkaCluster, S3Server, live_processes  # noqa: E402
from harness.procs import kill_all_children  # noqa: E402

_failed = {"any": False}
_clusters: list[KafkaCluster] = []


def register_cluster(kc: KafkaCluster) -> KafkaCluster:
    _clusters.append(kc)
    return kc


def close_cluster(kc: KafkaCluster) -> None:
    keep = _failed["any"] or bool(os.environ.get("FASTTIER_KEEP_TMP"))
    kc.close(keep_dir=keep)
    if kc in _clusters:
        _clusters.remove(kc)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        _failed["any"] = True
        lines = []
        for kc in list(_clusters):
            lines.append(f"{kc!r}")
            for n in kc.nodes:
                state = "running" if kc.is_running(n.node_id) else f"stopped/exited ({kc.exit_code(n.node_id)})"
                lines.append(f"  node {n.node_id} [{state}] log: {n.log_path}")
                errs = kc.plugin_problems(n.node_id) + [
                    ln for ln in kc.broker_log(n.node_id).splitlines() if " ERROR " in ln and "Fatal" in ln]
                for ln in errs[-8:]:
                    lines.append(f"    {ln[:400]}")
        if lines:
            rep.sections.append(("fasttier clusters", "\n".join(lines)))


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    s3 = S3Server(buckets=["fasttier-e2e"], data_dir=tmp_path_factory.mktemp("s3"))
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture(scope="module")
def kc(request, s3_server):
    """Module-scoped, started KafkaCluster. A test module configures it with a dict
    CLUSTER = {"n_brokers": 3, "version": "4.4.0", "plugin": True, "rsm_config": {...}, ...}."""
    kwargs = dict(getattr(request.module, "CLUSTER", {}))
    kwargs.setdefault("name", request.module.__name__.rsplit(".", 1)[-1])
    if kwargs.get("plugin", True):
        kwargs.setdefault("s3", s3_server)
    cluster = register_cluster(KafkaCluster(**kwargs))
    try:
        cluster.start()
        yield cluster
    finally:
        close_cluster(cluster)


@pytest.fixture
def make_cluster():
    made: list[KafkaCluster] = []

    def factory(*args, start: bool = True, **kwargs) -> KafkaCluster:
        kc = register_cluster(KafkaCluster(*args, **kwargs))
        made.append(kc)
        if start:
            kc.start()
        return kc

    yield factory
    for kc in made:
        close_cluster(kc)


def pytest_sessionfinish(session, exitstatus):
    left = live_processes()
    if left:
        sys.stderr.write(
            "\n[fasttier harness] killing processes still running at the end of the session: "
            + ", ".join(f"{p.name} (pid {p.pid})" for p in left) + "\n"
        )
    kill_all_children()
