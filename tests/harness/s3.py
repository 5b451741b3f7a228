"""S3Server: a real S3-compatible server (MinIO, single drive) on a free 127.0.0.1 port.

    with S3Server(buckets=["fasttier"]) as s3:
        s3.endpoint, s3.access_key, s3.secret_key, s3.bucket
        s3.stop(); ...; s3.start()      # same port, same data: an "S3 outage"
        s3.keys(prefix="t/")            # helpers over boto3
        s3.corrupt("t/x.log", offset=1000)

The MinIO binary comes from tests/scripts/setup.sh (env FASTTIER_MINIO_BIN overrides).
Note: MinIO always listens on every loopback address of the host (127.0.0.1 and [::1]) in addition to
the address it is given (cmd/server-main.go getServerListenAddrs); both are loopback only.

In the zones test bed (harness/zones.py): S3Server(netns=z.s3_ns, host=z.s3_addr) runs MinIO inside that
network namespace on host:<port>; zone_endpoint (http://host:port) is what processes in the zones use,
endpoint stays http://127.0.0.1:<port> for the test process (a zones.Forwarder on the same port number,
closed while the server is stopped).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterable, Optional

from .procs import (
    LOOPBACK,
    HarnessError,
    ManagedProcess,
    StopWaiting,
    cache_dir,
    free_ports,
    port_bindable,
    tail,
    wait_until,
)
from .zones import Forwarder

DEFAULT_ACCESS_KEY = "fasttier-test"
DEFAULT_SECRET_KEY = "fasttier-test-secret"
DEFAULT_REGION = "us-east-1"


def minio_binary() -> Path:
    candidates = []
    if os.environ.get("FASTTIER_MINIO_BIN"):
        candidates.append(Path(os.environ["FASTTIER_MINIO_BIN"]))
    candidates.append(cache_dir() / "bin" / "minio")
    found = shutil.which("minio")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise HarnessError(
        "MinIO binary not found (looked at: "
        + ", ".join(str(c) for c in candidates)
        + "). Run tests/scripts/setup.sh first."
    )


class S3Server:
    def __init__(
        self,
        buckets: Iterable[str] = ("fasttier",),
        data_dir: Optional[Path] = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        port: Optional[int] = None,
        netns: Optional[str] = None,
        host: str = LOOPBACK,
    ) -> None:
        """netns, host: run MinIO inside that network namespace, listening on host (see the module doc)."""
        self.netns = netns
        self.host = host if netns else LOOPBACK
        self._forwarder: Optional[Forwarder] = None
        self.buckets = list(buckets)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = DEFAULT_REGION
        self._own_dir = data_dir is None
        self.base_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="ft-e2e-s3-"))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "minio.log"
        self.port = port or free_ports(1)[0]
        self._proc: Optional[ManagedProcess] = None
        self._client = None
        self._created = False

    # ---------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def zone_endpoint(self) -> str:
        """The endpoint as seen from the zones' namespaces (endpoint itself without netns)."""
        return f"http://{self.host}:{self.port}"

    @property
    def bucket(self) -> str:
        return self.buckets[0]

    def start(self, timeout: float = 60.0) -> "S3Server":
        """Start (or restart after stop()/kill()) on the same port and data directory."""
        if self.running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # after a stop the port may linger in TIME_WAIT for a moment; MinIO refuses a busy port
        wait_until(lambda: port_bindable(self.port), 30, 0.2, f"port {self.port} to be free")
        env = dict(os.environ)
        env.update(
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
            MINIO_REGION=self.region,
            MINIO_CALLHOME_ENABLE="off",
            MINIO_SCANNER_SPEED="slowest",
            # keep the drive from being marked "faulty" when the box is slow
            MINIO_DRIVE_MAX_TIMEOUT="5m",
        )
        argv = [
            str(minio_binary()),
            "server",
            "--quiet",
            "--anonymous",
            "--address",
            f"{self.host}:{self.port}",
            str(self.data_dir),
        ]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
            self._forwarder = Forwarder(self.netns, self.host, self.port, port=self.port)
        self._proc = ManagedProcess(f"minio:{self.port}", argv, self.log_path, env=env)
        try:
            wait_until(self._ready, timeout, 0.2, lambda: f"MinIO on {self.endpoint} to be ready")
        except Exception as e:
            log = tail(self.log_path)
            self.kill()
            raise HarnessError(f"MinIO did not start: {e}\n--- {self.log_path}:\n{log}") from e
        if not self._created:
            for b in self.buckets:
                self.create_bucket(b)
            self._created = True
        return self

    def _ready(self) -> bool:
        if self._proc is None or not self._proc.running():
            raise StopWaiting(f"MinIO exited with {self._proc.returncode if self._proc else None}")
        try:
            with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM); start() brings it back on the same port with the same data."""
        if self._proc is not None:
            self._proc.terminate(timeout)
            self._proc = None
        self._close_forwarder()

    def kill(self) -> None:
        """SIGKILL; start() brings it back on the same port with the same data."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None
        self._close_forwarder()

    def _close_forwarder(self) -> None:
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None

    def close(self) -> None:
        self.stop()
        if self._own_dir and not os.environ.get("FASTTIER_KEEP_TMP"):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" in {self.netns} at {self.zone_endpoint}" if self.netns else ""
        return f"S3Server({self.endpoint}{where}, buckets={self.buckets}, dir={self.base_dir})"

    # ---------------------------------------------------------------- boto3 helpers
    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=self.region,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=3,
                    read_timeout=30,
                ),
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        try:
            self.client.create_bucket(Bucket=name)
        except self.client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def list_objects(self, prefix: str = "", bucket: Optional[str] = None) -> list[dict]:
        """Every object under prefix: dicts with Key, Size, LastModified, ETag."""
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket or self.bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    def keys(self, prefix: str = "", bucket: Optional[str] = None) -> list[str]:
        return sorted(o["Key"] for o in self.list_objects(prefix, bucket))

    def get(self, key: str, bucket: Optional[str] = None) -> bytes:
        return self.client.get_object(Bucket=bucket or self.bucket, Key=key)["Body"].read()

    def put(self, key: str, data: bytes, bucket: Optional[str] = None) -> None:
        self.client.put_object(Bucket=bucket or self.bucket, Key=key, Body=data)

    def delete(self, key: str, bucket: Optional[str] = None) -> None:
        self.client.delete_object(Bucket=bucket or self.bucket, Key=key)

    def corrupt(
        self, key: str, offset: Optional[int] = None, length: int = 16, bucket: Optional[str] = None
    ) -> tuple[int, int]:
        """Flip (xor 0xFF) `length` bytes of an object in place, by default in its middle.

        Returns (offset, length) actually flipped."""
        data = bytearray(self.get(key, bucket))
        if not data:
            raise HarnessError(f"cannot corrupt empty object {key}")
        if offset is None:
            offset = len(data) // 2
        offset = max(0, min(offset, len(data) - 1))
        length = max(1, min(length, len(data) - offset))
        for i in range(offset, offset + length):
            data[i] ^= 0xFF
        self.put(key, bytes(data), bucket)
        return offset, length

    def total_bytes(self, prefix: str = "", bucket: Optional[str] = None) -> int:
        return sum(o["Size"] for o in self.list_objects(prefix, bucket))

    def wait_for_keys(self, predicate, prefix: str = "", timeout: float = 120.0, message: str = "S3 objects"):
        """Wait until predicate(keys under prefix) is truthy; returns the keys."""

        def check():
            ks = self.keys(prefix)
            return ks if predicate(ks) else None

        return wait_until(check, timeout, 1.0, message)
