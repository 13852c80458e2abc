"""Reading whole topics (tests, audit, tallies) with a read_committed consumer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from rtd_core.config import RtdConfig
from rtd_core.security import kafka_client_properties


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    timestamp: int


def consumer(config: RtdConfig, isolation: str = "read_committed", **extra: object) -> Consumer:
    return Consumer(kafka_client_properties(config.kafka, **{
        "group.id": f"rtd-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        **extra,
    }))


def _decode(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def read_all(config: RtdConfig, topic: str, *, isolation: str = "read_committed",
             timeout_s: float = 30.0) -> list[Record]:
    """Every record of ``topic`` from the beginning to the current end."""
    return list(iter_all(config, topic, isolation=isolation, timeout_s=timeout_s))


def iter_all(config: RtdConfig, topic: str, *, isolation: str = "read_committed",
             timeout_s: float = 30.0) -> Iterator[Record]:
    c = consumer(config, isolation)
    try:
        meta = c.list_topics(topic, timeout=10)
        if meta.topics[topic].error is not None:
            raise KafkaException(meta.topics[topic].error)
        partitions = sorted(meta.topics[topic].partitions)
        ends = {}
        for p in partitions:
            _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        pending = {p for p in partitions if ends[p] > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == msg.error()._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise KafkaException(msg.error())
            yield Record(topic, msg.partition(), msg.offset(), _decode(msg.key()),
                         _decode(msg.value()), msg.timestamp()[1])
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
    finally:
        c.close()
