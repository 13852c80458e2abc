"""What a replay reads: a time or offset range of `transactions`, resolved to offsets.

Every range is resolved up front, per partition, into three offsets:

  read_from <= rows_from <= read_to

The job reads [read_from, read_to) and emits rows for [rows_from, read_to). The part
before ``rows_from`` is the warm-up: the history the live job had already folded into
its feature state when it reached ``rows_from``. Without it the first events of every
card and customer would see empty windows and differ from what serving saw.

Resolving in the client (instead of letting the source pick 'latest-offset' at its own
start) fixes the range before the job runs: the total for the progress display is
exact, and a re-run of the same command reads the same records.

Times are Kafka record timestamps: the topics are created with LogAppendTime, so a
time range is "appended to Kafka in [since, until)", monotone per partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from feature_views.model import FeatureView
from rtd_core.config import RtdConfig
from rtd_core.security import kafka_client_properties

_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ReplayRange:
    """The user's request. All bounds optional: none means the whole topic as of now."""

    since_ms: int | None = None  # rows for records appended at or after this time
    until_ms: int | None = None  # stop before the first record appended at this time
    from_offsets: Mapping[int, int] = field(default_factory=dict)  # rows from (inclusive)
    to_offsets: Mapping[int, int] = field(default_factory=dict)  # stop before (exclusive)
    warmup_ms: int | None = None  # None: default_warmup_ms(views)


@dataclass(frozen=True)
class ResolvedRange:
    topic: str
    read_from: dict[int, int]
    rows_from: dict[int, int]
    read_to: dict[int, int]

    @property
    def records_in_range(self) -> int:
        return sum(self.read_to[p] - self.rows_from[p] for p in self.read_to)

    @property
    def warmup_records(self) -> int:
        return sum(self.rows_from[p] - self.read_from[p] for p in self.read_to)

    @property
    def partitions_with_records(self) -> int:
        """Partitions the bounded source will read from (the others end at once)."""
        return sum(1 for p in self.read_to if self.read_to[p] > self.read_from[p])

    def source_options(self) -> dict[str, str]:
        """Kafka table connector options for exactly [read_from, read_to)."""
        return {
            "scan.startup.specific-offsets": _flink_offsets(self.read_from),
            "scan.bounded.specific-offsets": _flink_offsets(self.read_to),
        }

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic,
                "partitions": {str(p): {"read_from": self.read_from[p],
                                        "rows_from": self.rows_from[p],
                                        "read_to": self.read_to[p]}
                               for p in sorted(self.read_to)}}


def _flink_offsets(offsets: Mapping[int, int]) -> str:
    return ";".join(f"partition:{p},offset:{o}" for p, o in sorted(offsets.items()))


def parse_offsets(text: str) -> dict[int, int]:
    """``"0:120,1:98"`` -> {0: 120, 1: 98}."""
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, sep, offset = part.partition(":")
        if not sep or not partition.strip().isdigit() or not offset.strip().isdigit():
            raise ValueError(f"{part!r}: expected PARTITION:OFFSET, e.g. 0:120,1:98")
        out[int(partition)] = int(offset)
    return out


def default_warmup_ms(views: tuple[FeatureView, ...]) -> int:
    """Long enough that every window of every row is complete: the longest window plus
    how far event time may trail the append time and still be folded in."""
    longest = max(f.window_ms for v in views for f in v.features)
    slack = max(v.watermark_delay_ms + v.allowed_lateness_ms for v in views)
    return longest + slack


def resolve_offsets(
    *,
    low: Mapping[int, int],
    high: Mapping[int, int],
    request: ReplayRange,
    warmup_ms: int,
    at_time: Any,
) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """Pure resolution; ``at_time(ms)`` returns {partition: first offset appended at or
    after ms, or None when there is none}. Returns (read_from, rows_from, read_to)."""
    read_to = {p: high[p] for p in high}
    if request.until_ms is not None:
        for p, o in at_time(request.until_ms).items():
            if o is not None:
                read_to[p] = min(read_to[p], o)
    for p, o in request.to_offsets.items():
        _check_partition(p, high)
        read_to[p] = max(low[p], min(read_to[p], o))

    rows_from = {p: low[p] for p in high}
    if request.since_ms is not None:
        for p, o in at_time(request.since_ms).items():
            rows_from[p] = high[p] if o is None else max(rows_from[p], o)
    for p, o in request.from_offsets.items():
        _check_partition(p, high)
        rows_from[p] = max(rows_from[p], o)
    rows_from = {p: min(rows_from[p], read_to[p]) for p in high}

    read_from = {p: low[p] for p in high}
    if request.since_ms is not None and not request.from_offsets:
        for p, o in at_time(max(0, request.since_ms - warmup_ms)).items():
            read_from[p] = high[p] if o is None else max(low[p], o)
    read_from = {p: min(read_from[p], rows_from[p]) for p in high}
    return read_from, rows_from, read_to


def _check_partition(partition: int, high: Mapping[int, int]) -> None:
    if partition not in high:
        raise ValueError(f"partition {partition} does not exist (partitions: {sorted(high)})")


def resolve_range(config: RtdConfig, request: ReplayRange,
                  views: tuple[FeatureView, ...]) -> ResolvedRange:
    """Ask the broker for each partition's offsets and resolve ``request`` against them."""
    topic = config.kafka.topics.transactions
    consumer = Consumer(kafka_client_properties(config.kafka, **{
        "group.id": f"rtd-replay-resolve-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }))
    try:
        meta = consumer.list_topics(topic, timeout=_TIMEOUT_S)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaException(info.error if info else f"topic {topic} not found")
        low, high = {}, {}
        for p in sorted(info.partitions):
            low[p], high[p] = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                            timeout=_TIMEOUT_S)

        def at_time(ms: int) -> dict[int, int | None]:
            asked = [TopicPartition(topic, p, ms) for p in high]
            found = consumer.offsets_for_times(asked, timeout=_TIMEOUT_S)
            return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}

        warmup = request.warmup_ms if request.warmup_ms is not None else default_warmup_ms(views)
        read_from, rows_from, read_to = resolve_offsets(
            low=low, high=high, request=request, warmup_ms=warmup, at_time=at_time)
    finally:
        consumer.close()
    return ResolvedRange(topic, read_from, rows_from, read_to)
