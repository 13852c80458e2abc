"""The two observers of a decisions topic: read_uncommitted and read_committed.

Each runs in its own process (not a thread of the benchmark), so that the pacer
producing events and the other observer cannot delay its receipt timestamps through
the GIL. Each records, per decision id, the wall-clock time its poll returned the
record, and counts receipts in a shared counter the runner reads for the live lag.
The read_uncommitted observer also keeps each decision's ``decided_at``,
``fallback_reason`` and ``late`` (bench/latency.py joins them).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from bench.latency import DecisionMeta

_PREFIX = b'{"decision_id":"'
_ID_LEN = 36  # a UUID's text form


def decision_id_of(value: bytes) -> str:
    """The decision id of a decision record; a slice when it is the first field (as every
    system here writes it), a JSON parse otherwise."""
    if value.startswith(_PREFIX) and value[len(_PREFIX) + _ID_LEN:][:1] == b'"':
        return value[len(_PREFIX):len(_PREFIX) + _ID_LEN].decode()
    return str(json.loads(value)["decision_id"])


def _observe(kafka_conf: dict[str, Any], topic: str, isolation: str, out_file: str,
             counter: Synchronized, ready: Event, stop: Event) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    keep_meta = isolation == "read_uncommitted"
    consumer = Consumer({
        **kafka_conf,
        "group.id": f"bench-observer-{isolation}-{topic}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        # Bounds how long a receipt can lag an append when the broker holds a fetch open.
        "fetch.wait.max.ms": 25,
        "fetch.min.bytes": 1,
    })
    metadata = consumer.list_topics(topic, timeout=30)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    receipts: list[tuple[str, int]] = []
    meta: dict[str, DecisionMeta] = {}
    ready.set()
    while not stop.is_set():
        # poll() returns as soon as one record is there; consume() with a timeout would
        # wait for a full batch, delaying every receipt by up to that timeout.
        first = consumer.poll(0.05)
        if first is None:
            continue
        now = time.time_ns() // 1_000_000
        batch = [first, *consumer.consume(num_messages=1000, timeout=0)]
        got = 0
        for msg in batch:
            if msg.error() is not None:
                continue
            value = msg.value()
            if not value:
                continue
            if keep_meta:
                doc = json.loads(value)
                did = doc["decision_id"]
                if did not in meta:
                    meta[did] = DecisionMeta(int(doc["decided_at"]), doc.get("fallback_reason"),
                                             bool(doc.get("late")))
            else:
                did = decision_id_of(value)
            receipts.append((did, now))
            got += 1
        with counter.get_lock():
            counter.value += got
    consumer.close()
    Path(out_file).write_bytes(pickle.dumps({"receipts": receipts, "meta": meta}))


@dataclass
class ObserverResult:
    receipts: list[tuple[str, int]]
    meta: dict[str, DecisionMeta]


class Observer:
    """One observer process; ``count`` is live, ``stop()`` returns what it saw."""

    def __init__(self, kafka_conf: dict[str, Any], topic: str, isolation: str, out_file: Path) -> None:
        ctx = mp.get_context("spawn")
        self._counter: Any = ctx.Value("q", 0)
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self.out_file = out_file
        self.process = ctx.Process(
            target=_observe, name=f"bench-observer-{isolation}",
            args=(kafka_conf, topic, isolation, str(out_file), self._counter, self._ready,
                  self._stop),
            daemon=True,
        )

    def start(self, timeout_s: float = 60.0) -> None:
        self.process.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"observer {self.process.name} did not get its partitions")

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def count(self) -> int:
        return int(self._counter.value)

    def stop(self, timeout_s: float = 60.0) -> ObserverResult:
        self._stop.set()
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            raise RuntimeError(f"observer {self.process.name} did not stop")
        data = pickle.loads(self.out_file.read_bytes())
        return ObserverResult(receipts=data["receipts"], meta=data["meta"])
