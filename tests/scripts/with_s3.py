#!/usr/bin/env python3
"""Runs a command with a fresh MinIO (the project's S3 test server) on loopback.

    python3 tests/scripts/with_s3.py -- cargo test --release --workspace

Exports FASTTIER_TEST_S3_ENDPOINT / _BUCKET / _ACCESS_KEY / _SECRET_KEY for the command, stops the server
afterwards (also on failure) and exits with the command's exit code.
"""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import S3Server  # noqa: E402


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: with_s3.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with S3Server(buckets=("fasttier-test",)) as s3:
        env = dict(os.environ)
        env.update(
            FASTTIER_TEST_S3_ENDPOINT=s3.endpoint,
            FASTTIER_TEST_S3_BUCKET=s3.bucket,
            FASTTIER_TEST_S3_ACCESS_KEY=s3.access_key,
            FASTTIER_TEST_S3_SECRET_KEY=s3.secret_key,
        )
        print(f"[with_s3] MinIO at {s3.endpoint} bucket={s3.bucket}", flush=True)
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    sys.exit(main())
