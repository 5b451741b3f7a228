"""Looking at tiered data: the plugin's objects in S3 and the brokers' local segments.

The plugin writes, per copied segment, three objects whose keys end in ".log", ".indexes" and
".manifest", somewhere under "<prefix>/.../<topic>-<topicId>/<partition>/..." (docs/formats.md has the
exact layout). These helpers only rely on the suffixes and on the topic id appearing in the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

from .procs import wait_until

SEGMENT_SUFFIXES = (".log", ".indexes", ".manifest")
SEGMENT_BYTES = 1 << 20  # the smallest segment.bytes Kafka 4.x accepts


@dataclass
class TopicObjects:
    keys: list[str]

    def with_suffix(self, suffix: str) -> list[str]:
        return [k for k in self.keys if k.endswith(suffix)]

    @property
    def logs(self) -> list[str]:
        return self.with_suffix(".log")

    @property
    def manifests(self) -> list[str]:
        return self.with_suffix(".manifest")

    @property
    def indexes(self) -> list[str]:
        return self.with_suffix(".indexes")

    def complete_segments(self) -> int:
        """Segments with all three objects (counted by their common key stem)."""
        stems = {}
        for k in self.keys:
            for s in SEGMENT_SUFFIXES:
                if k.endswith(s):
                    stems.setdefault(k[: -len(s)], set()).add(s)
        return sum(1 for v in stems.values() if v >= set(SEGMENT_SUFFIXES))

    def for_partition(self, topic: str, topic_id: str, partition: int) -> "TopicObjects":
        """Keys of one partition: those with '<topic>-<topicId>/<partition>/' in them, or, failing that
        layout, a '/<partition>/' path element after the topic id."""
        exact = f"{topic}-{topic_id}/{partition}/"
        ks = [k for k in self.keys if exact in k]
        if not ks:
            rx = re.compile(re.escape(topic_id) + r"[^/]*/(?:.*/)?" + str(partition) + r"/")
            ks = [k for k in self.keys if rx.search(k)]
        return TopicObjects(ks)

    def __len__(self) -> int:
        return len(self.keys)


def topic_objects(s3, topic_id: str, prefix: str = "") -> TopicObjects:
    """Every object of the bucket (under prefix) whose key names the topic id."""
    return TopicObjects([k for k in s3.keys(prefix) if topic_id in k])


def wait_for_segments(
    s3, topic_id: str, min_log_objects: int, prefix: str = "", timeout: float = 180.0, kc=None
) -> TopicObjects:
    """Wait until at least min_log_objects '.log' objects of the topic exist; returns all its objects.
    With kc, fail at once if one of its brokers dies."""

    def check():
        if kc is not None:
            kc.check_alive()
        objs = topic_objects(s3, topic_id, prefix)
        return objs if len(objs.logs) >= min_log_objects else None

    return wait_until(
        check, timeout, 1.0,
        lambda: f"{min_log_objects} tiered segments of topic id {topic_id} "
        f"(have {len(topic_objects(s3, topic_id, prefix).logs)})",
    )


def wait_for_no_objects(s3, topic_id: str, prefix: str = "", timeout: float = 180.0, kc=None) -> None:
    def check():
        if kc is not None:
            kc.check_alive()
        return len(topic_objects(s3, topic_id, prefix)) == 0

    wait_until(
        check, timeout, 1.0,
        lambda: f"all objects of topic id {topic_id} to be deleted "
        f"(left: {topic_objects(s3, topic_id, prefix).keys[:6]}...)",
    )


def local_log_starts(kc, topic: str, partitions: int,
                     brokers: Optional[list[int]] = None) -> dict[int, dict[int, Optional[int]]]:
    """{broker: {partition: base offset of its oldest local .log segment}} for running brokers holding it."""
    out: dict[int, dict[int, Optional[int]]] = {}
    for b in brokers if brokers is not None else range(kc.n):
        if not kc.is_running(b):
            continue
        out[b] = {p: kc.local_log_start(b, topic, p) for p in range(partitions)
                  if kc.partition_dir(b, topic, p).is_dir()}
    return out


def wait_local_log_start_beyond(
    kc, topic: str, beyond: Mapping[int, int], brokers: Optional[list[int]] = None, timeout: float = 180.0
) -> dict:
    """Wait until, on every running broker holding partition p, the oldest local segment starts above
    beyond[p] — i.e. every record at offset <= beyond[p] is only in the remote tier."""

    def check():
        kc.check_alive()
        starts = local_log_starts(kc, topic, max(beyond) + 1, brokers)
        for b, parts in starts.items():
            for p, lim in beyond.items():
                s = parts.get(p)
                if s is None or s <= lim:
                    return None
        return starts

    return wait_until(
        check, timeout, 1.0,
        lambda: f"local segments of {topic} to be deleted past {dict(beyond)} "
        f"(now {local_log_starts(kc, topic, max(beyond) + 1, brokers)})",
    )


def tiered_config(**over) -> dict:
    cfg = {
        "remote.storage.enable": "true",
        "segment.bytes": SEGMENT_BYTES,
        "local.retention.ms": 1000,  # a tiered segment may go from local disk at once
        "file.delete.delay.ms": 1000,
        "min.insync.replicas": 2,
    }
    cfg.update(over)
    return cfg


def wait_all_tiered(kc, topic: str, partitions: int, timeout: float = 240.0) -> dict:
    """Wait until every running replica of every partition keeps only its active segment locally, i.e.
    every rolled segment was copied to S3 and deleted locally. Returns {partition: local log start}
    (the smallest over replicas; every offset below it is served from the remote tier only)."""

    def check():
        kc.check_alive()
        starts = {}
        for b in range(kc.n):
            if not kc.is_running(b):
                continue
            for p in range(partitions):
                if not kc.partition_dir(b, topic, p).is_dir():
                    continue
                segs = kc.local_segments(b, topic, p)
                if len(segs) != 1 or segs[0] == 0:
                    return None
                starts[p] = min(starts.get(p, segs[0]), segs[0])
        return starts if len(starts) == partitions else None

    def local_segments_now():
        return {b: {p: kc.local_segments(b, topic, p) for p in range(partitions)}
                for b in range(kc.n) if kc.is_running(b)}

    return wait_until(
        check, timeout, 1.0,
        lambda: f"all rolled segments of {topic} to be tiered and deleted locally "
        f"(local segments now: {local_segments_now()})",
    )


def assert_segments_complete(kc, s3, topic: str, topic_id: str, partitions: int) -> dict[int, int]:
    """Every partition has tiered segments, each as .log + .indexes + .manifest. Returns {p: #segments}."""
    objs = topic_objects(s3, topic_id, kc.prefix)
    assert objs.keys, f"no objects of {topic} ({topic_id}) under {kc.prefix!r}"
    assert all(k.startswith(kc.prefix) for k in objs.keys)
    counts = {}
    for p in range(partitions):
        po = objs.for_partition(topic, topic_id, p)
        assert po.logs, f"partition {p} of {topic} has no .log object: {objs.keys[:10]}"
        assert len(po.logs) == len(po.indexes) == len(po.manifests) == po.complete_segments(), (
            f"partition {p}: incomplete segments: {len(po.logs)} .log, {len(po.indexes)} .indexes, "
            f"{len(po.manifests)} .manifest"
        )
        counts[p] = len(po.logs)
    return counts
