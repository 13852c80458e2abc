"""Producing the simulator's events at a chosen rate, phase by phase.

The benchmark drives the simulator's generator itself (not ``run_simulation``) because
it changes the rate between phases of one stream and needs the valid event ids each
phase sent. Every system gets its own generator with the same settings (seed and start
time), so all see byte-identical events in the same order. Labels are not sent: no
system under test reads them.

Pacing is by schedule, not by sleep per record: every few milliseconds the pacer sends
the events that are due, so Python's timer granularity does not cap the rate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from rtd_core.config import RtdConfig
from rtd_core.security import kafka_client_properties
from simulator.generator import LABEL, TXN, GeneratorSettings, TransactionGenerator
from simulator.producer import producer_settings

_TICK_S = 0.002


@dataclass
class PhaseSent:
    """What one phase handed to the producer."""

    name: str
    rate: float
    started_ms: int
    ended_ms: int = 0
    valid_event_ids: list[str] = field(default_factory=list)
    malformed: int = 0

    @property
    def duration_s(self) -> float:
        return max(self.ended_ms - self.started_ms, 1) / 1000.0


class Pacer:
    """One system's event stream into ``topic``."""

    def __init__(self, config: RtdConfig, topic: str, *, seed: int, start_time_ms: int,
                 malformed_share: float) -> None:
        self.topic = topic
        settings = GeneratorSettings(start_time_ms=start_time_ms, seed=seed,
                                     malformed_share=malformed_share)
        self._records = TransactionGenerator(settings).stream(None)
        self.failed: list[str] = []
        self.producer = Producer({**producer_settings(config), "client.id": "rtd-bench",
                                  "on_delivery": self._on_delivery})
        self.valid_sent = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and len(self.failed) < 20:
            self.failed.append(err.str())

    def _send_one(self, phase: PhaseSent) -> None:
        while True:
            record = next(self._records)
            if record.kind != LABEL:
                break
        while True:
            try:
                self.producer.produce(self.topic, record.value, record.key)
                break
            except BufferError:
                self.producer.poll(0.05)
        if record.kind == TXN:
            phase.valid_event_ids.append(record.event_id or "")
            self.valid_sent += 1
        else:
            phase.malformed += 1

    def run(self, name: str, rate: float, duration_s: float,
            every_second: Callable[[PhaseSent, float], bool] | None = None) -> PhaseSent:
        """Send at ``rate`` events/s for ``duration_s`` (or until ``every_second``, called
        about once a second with the phase and its elapsed seconds, returns True)."""
        phase = PhaseSent(name=name, rate=rate, started_ms=time.time_ns() // 1_000_000)
        start = time.perf_counter()
        sent = 0
        next_check = start + 1.0
        while True:
            now = time.perf_counter()
            elapsed = now - start
            if elapsed >= duration_s:
                break
            due = int(elapsed * rate)
            while sent < due:
                self._send_one(phase)
                sent += 1
            self.producer.poll(0)
            if now >= next_check:
                next_check += 1.0
                if every_second is not None and every_second(phase, elapsed):
                    break
            time.sleep(_TICK_S)
        phase.ended_ms = time.time_ns() // 1_000_000
        return phase

    def close(self) -> None:
        while self.producer.flush(1.0) > 0:
            pass
        if self.failed:
            raise RuntimeError(f"{len(self.failed)} events were not delivered: {self.failed[:3]}")


def create_topics(config: RtdConfig, names: list[str], append_time: set[str]) -> None:
    """Create ``names`` (partitions as configured); ``append_time`` ones with
    LogAppendTime, the broker's clock, which every latency here is measured from."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_client_properties(config.kafka))
    existing = set(admin.list_topics(timeout=30).topics)
    wanted = [
        NewTopic(name, num_partitions=config.kafka.partitions, replication_factor=1,
                 config={"message.timestamp.type": "LogAppendTime"} if name in append_time else {})
        for name in names if name not in existing
    ]
    if wanted:
        for future in admin.create_topics(wanted, operation_timeout=30).values():
            future.result()


def delete_topics_containing(config: RtdConfig, marker: str) -> list[str]:
    """Delete every topic whose name contains ``marker`` (the run id): the run's own and
    the internal ones a peer created (Quix changelogs and repartition topics)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_client_properties(config.kafka))
    names = [t for t in admin.list_topics(timeout=30).topics if marker in t]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best effort clean-up
                future.result()
    return names


def read_append_times(config: RtdConfig, topic: str) -> dict[str, int]:
    """event id -> broker append time (ms) of every valid event in ``topic``."""
    import json

    from rtd_core.topic_reader import iter_all

    out: dict[str, int] = {}
    for record in iter_all(config, topic, isolation="read_uncommitted", timeout_s=120):
        try:
            doc: Any = json.loads(record.value or "")
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("event_id"), str):
            out.setdefault(doc["event_id"], record.timestamp)
    return out
