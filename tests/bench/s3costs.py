"""What the benchmarks share about object-store requests: list prices, request classes, MinIO's per-bucket
counters (tests/bench/fast_tier.py, tests/bench/zones.py).

Prices are those recorded in the project's landscape notes (/work/shared/reference/landscape.md,
"S3 Express One Zone facts": "Pricing after 2025"; S3 Standard and cross-zone EC2 transfer from the same
notes), not re-checked against AWS from this machine (it has no internet access). Request classes as AWS
bills them: PUT-class = PUT, COPY, POST, LIST (multipart create/part/complete included); GET-class = GET,
HEAD and everything else but DELETE, which is free; S3 Express also charges per GB uploaded and retrieved.
"""

from __future__ import annotations

import urllib.request

PRICES = {
    "source": "landscape.md, S3 Express One Zone facts ('Pricing after 2025'), S3 Standard, cross-zone EC2 transfer",
    "cross_zone_per_gb": 0.02,  # $0.01/GB out of one zone + $0.01/GB into the other, per byte crossing
    "express_put_per_1000": 0.00113,
    "express_get_per_1000": 0.00003,
    "express_upload_per_gb": 0.0032,
    "express_retrieval_per_gb": 0.0006,
    "express_storage_per_gb_month": 0.11,
    "standard_put_per_1000": 0.005,
    "standard_get_per_1000": 0.0004,
}
PUT_CLASS = {"putobject", "copyobject", "listobjectsv2", "listobjectsv1", "listobjects", "newmultipartupload",
             "putobjectpart", "completemultipartupload", "postpolicybucket"}
FREE = {"deleteobject", "deletemultipleobjects", "abortmultipartupload"}


def minio_buckets(s3) -> dict[str, dict[str, float]]:
    """{bucket: {"requests:<api>": n, "received_bytes": n, "sent_bytes": n}} from MinIO's Prometheus v2 bucket
    metrics (MINIO_PROMETHEUS_AUTH_TYPE=public must be set before MinIO starts)."""
    with urllib.request.urlopen(f"{s3.endpoint}/minio/v2/metrics/bucket", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or 'bucket="' not in line:
            continue
        name, _, value = line.rpartition(" ")
        bucket = name.split('bucket="', 1)[1].split('"', 1)[0]
        b = out.setdefault(bucket, {})
        metric = name.split("{", 1)[0]
        if metric == "minio_bucket_requests_total":
            api = name.split('api="', 1)[1].split('"', 1)[0]
            b[f"requests:{api}"] = b.get(f"requests:{api}", 0.0) + float(value)
        elif metric == "minio_bucket_traffic_received_bytes":
            b["received_bytes"] = float(value)
        elif metric == "minio_bucket_traffic_sent_bytes":
            b["sent_bytes"] = float(value)
    return out


def bucket_delta(before: dict, after: dict, bucket: str) -> dict:
    """What one bucket received between two minio_buckets() snapshots: requests by API, by billing class, bytes."""
    a, b = after.get(bucket, {}), before.get(bucket, {})
    d = {k: v - b.get(k, 0.0) for k, v in a.items()}
    reqs = {k.split(":", 1)[1]: v for k, v in d.items() if k.startswith("requests:") and v > 0}
    return {
        "requests": reqs,
        "put_class": sum(v for k, v in reqs.items() if k in PUT_CLASS),
        "get_class": sum(v for k, v in reqs.items() if k not in PUT_CLASS and k not in FREE),
        "free": sum(v for k, v in reqs.items() if k in FREE),
        "received_bytes": d.get("received_bytes", 0.0),
        "sent_bytes": d.get("sent_bytes", 0.0),
    }
