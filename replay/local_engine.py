"""The replay outside Flink: one process, one loop, the live job's own feature core.

``rtd replay --engine local`` (the default) reads [read_from, read_to) of each partition
with one Kafka consumer (read_committed, as the job's source) and runs every record,
in the order the consumer delivers them, through the same code the live topology runs:
``validate`` (decisioning/transaction.py, with the record timestamp for the future
bound), ``ViewComputer`` per view (feature_views/window_state.py) for features, pruning
and key expiry, and ``row_values`` for the row. ``--engine flink`` runs the bounded
Flink job (flink_jobs/replay_job.py) instead, for histories one machine cannot replay
in time (parallelism, a cluster); ``rtd replay --verify`` checks either against the
live traces, and tests/pipeline/test_replay_job.py checks that both engines give the
same rows.

Event time follows the contract ("Event time and watermarks"), per partition:
  - a partition's watermark is the highest row time it has delivered minus
    ``job.watermark_delay_ms``; a record's row time is its event time when validation
    accepts it, or when it is rejected for another reason but its ``event_time`` parses
    and is not in the future of its record timestamp (the source's SQL row time reads
    those too); otherwise it moves nothing;
  - the watermark is the minimum over the partitions still being read, and there is
    none until each partition with records in the range has delivered one (the feature
    operators' partition gate); a partition that has delivered its last record drops
    out, as an idle one does in the live job;
  - an event is late when its event time is behind the watermark, taken before the
    event, by more than ``job.allowed_lateness_ms``; its state is pruned against that
    watermark first, exactly as the feature operators do.
Flink's watermark reaches an operator later than this one (it is emitted periodically),
so near the lateness bound an event can be late here and not in Flink, or the reverse:
``--verify`` reports such events apart (its ``late`` category), never as skew. Events
that are not late get the same features from any watermark: pruning and expiry are
invisible to them (feature_views/window_state.py). Processing-time idleness has no
counterpart in a replay.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from decisioning.transaction import Rejection, parse_event_time, validate
from feature_views.model import FeatureView
from feature_views.rows import row_values
from feature_views.window_state import State, ViewComputer, empty_state
from replay.offsets import ResolvedRange
from rtd_core.config import RtdConfig

# Whole-key expiry runs every this many records (the live job sweeps a shard on its
# event-time timer); it bounds memory and changes no feature of an event that is not late.
SWEEP_EVERY = 100_000


@dataclass(frozen=True, slots=True)
class SourceRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp_ms: int | None
    # The consumer reached the partition's end: with read_committed, the range's last
    # offset may be a transaction marker that never comes as a record.
    end: bool = False


class PartitionWatermarks:
    """The contract's watermark over the partitions of a bounded read."""

    def __init__(self, partitions: Iterable[int], delay_ms: int) -> None:
        self.delay_ms = delay_ms
        self._active = set(partitions)
        self._latest: dict[int, int] = {}  # partition -> highest row time delivered
        self._gate: set[int] = set()  # partitions that delivered a valid event
        self._watermark: int | None = None

    @property
    def watermark(self) -> int | None:
        return self._watermark

    def _update(self) -> None:
        if not self._active or not self._active <= self._gate:
            return  # gate shut (or nothing left to read): the watermark stays where it is
        floor = min(self._latest[p] for p in self._active) - self.delay_ms
        if self._watermark is None or floor > self._watermark:
            self._watermark = floor

    def observe(self, partition: int, row_time: int | None, valid: bool) -> None:
        """After a record: its row time (None: none), and whether it was a valid event
        (only those reach the feature operators, whose gate counts them)."""
        moved = row_time is not None and row_time > self._latest.get(partition, -(2**63))
        if moved:
            self._latest[partition] = row_time  # type: ignore[assignment]
        if valid and partition not in self._gate:
            self._gate.add(partition)
            moved = True
        if moved:
            self._update()

    def finish(self, partition: int) -> None:
        self._active.discard(partition)
        self._update()


def _row_time(raw: bytes | None, timestamp_ms: int | None, max_future_skew_ms: int
              ) -> int | None:
    """A rejected record's row time, as the source's SQL reads it (None: none)."""
    try:
        doc = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    t = parse_event_time(doc.get("event_time"))
    if t is None or (timestamp_ms is not None and t > timestamp_ms + max_future_skew_ms):
        return None
    return t


class LocalReplay:
    """Records in delivery order -> rows (``row_columns`` order) and dead-letter counts."""

    def __init__(self, config: RtdConfig, views: Sequence[FeatureView],
                 resolved: ResolvedRange) -> None:
        job = config.job
        self.max_future_skew_ms = job.max_future_skew_ms
        self.allowed_lateness_ms = job.allowed_lateness_ms
        self.views = tuple(views)
        self.rows_from = dict(resolved.rows_from)
        self._last = {p: resolved.read_to[p] - 1 for p in resolved.read_to
                      if resolved.read_to[p] > resolved.read_from[p]}
        self.clock = PartitionWatermarks(self._last, job.watermark_delay_ms)
        self._computers = [(v.name, v.entity_key, ViewComputer(v), {}) for v in self.views]
        self._topic = resolved.topic
        self.rows: list[tuple[Any, ...]] = []
        self.dead: Counter[str] = Counter()
        self.late = 0
        self._seen = 0

    @property
    def pending_partitions(self) -> set[int]:
        return set(self._last)

    def process(self, record: SourceRecord) -> None:
        last = self._last.get(record.partition)
        if last is None or record.offset > last:
            return  # outside the range (a partition already done, or the topic grew)
        watermark = self.clock.watermark
        in_rows = record.offset >= self.rows_from.get(record.partition, 0)
        event = validate(record.value, record.timestamp_ms, self.max_future_skew_ms)
        if isinstance(event, Rejection):
            self.clock.observe(record.partition, _row_time(
                record.value, record.timestamp_ms, self.max_future_skew_ms), valid=False)
            if in_rows:
                self.dead[event.reason] += 1
        else:
            self._features(record, event, watermark, in_rows)
            self.clock.observe(record.partition, event["event_time"], valid=True)
        if record.offset >= last:
            self.finish(record.partition)
        self._seen += 1
        if self._seen % SWEEP_EVERY == 0:
            self.sweep()

    def finish(self, partition: int) -> None:
        """The partition has delivered its last record of the range."""
        if self._last.pop(partition, None) is not None:
            self.clock.finish(partition)

    def _features(self, record: SourceRecord, event: dict[str, Any], watermark: int | None,
                  in_rows: bool) -> None:
        t = event["event_time"]
        late = watermark is not None and t < watermark - self.allowed_lateness_ms
        features: dict[str, float] = {}
        as_of: dict[str, dict[str, Any]] = {}
        for name, entity_key, computer, states in self._computers:
            key = event[entity_key]
            state: State | None = states.get(key)
            if state is None:
                state = states[key] = empty_state()
            elif watermark is not None:
                computer.prune(state, watermark, self.allowed_lateness_ms)
            features.update(computer.apply(state, event))
            as_of[name] = {"as_of_event_time": t, "watermark": watermark}
        if in_rows:
            self.late += late
            source = {"partition": record.partition, "offset": record.offset,
                      "kafka_timestamp": record.timestamp_ms}
            self.rows.append(row_values(event, source, features, as_of, late, self.views))

    def sweep(self) -> None:
        """Drop every key that can no longer affect any window (the live job's expiry
        timers)."""
        watermark = self.clock.watermark
        if watermark is None:
            return
        for _name, _key, computer, states in self._computers:
            expired = [k for k, s in states.items()
                       if computer.is_expired(s, watermark, self.allowed_lateness_ms)]
            for k in expired:
                del states[k]

    def entities(self) -> int:
        return sum(len(states) for *_, states in self._computers)


def kafka_records(config: RtdConfig, resolved: ResolvedRange, pending: Callable[[], set[int]],
                  batch: int = 10_000, timeout_s: float = 60.0) -> Iterator[SourceRecord]:
    """The range's records in the order one consumer delivers them (whole fetches of
    one partition at a time, as the job's source reads), until ``pending()`` is empty."""
    from confluent_kafka import KafkaError, TopicPartition

    from rtd_core.topic_reader import consumer

    reader = consumer(config, "read_committed", **{"fetch.max.bytes": 8 * 1024 * 1024})
    try:
        reader.assign([TopicPartition(resolved.topic, p, resolved.read_from[p])
                       for p in sorted(pending())])
        idle_since = time.monotonic()
        while pending():
            messages = reader.consume(batch, 0.5)
            if not messages:
                if time.monotonic() - idle_since > timeout_s:
                    raise TimeoutError(
                        f"no record of {resolved.topic} partitions {sorted(pending())} for "
                        f"{timeout_s:.0f} s before the end of the range")
                continue
            idle_since = time.monotonic()
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # read_committed skips control records and aborted data: the
                        # range's last offset may never come as a record.
                        yield SourceRecord(None, None, msg.partition(), msg.offset(), None,
                                           end=True)
                        continue
                    raise RuntimeError(f"reading {resolved.topic}: {error}")
                ts_type, ts = msg.timestamp()
                yield SourceRecord(msg.key(), msg.value(), msg.partition(), msg.offset(),
                                   ts if ts_type else None)
    finally:
        reader.close()


def run_local(config: RtdConfig, views: Sequence[FeatureView], resolved: ResolvedRange,
              on_batch: Callable[[int, int], None],
              records: Callable[[Callable[[], set[int]]], Iterable[SourceRecord]] | None = None
              ) -> tuple[list[tuple[Any, ...]], Counter[str], float, float, float]:
    """(rows, dead letter reasons, seconds, seconds from the first record on, CPU
    seconds of this process meanwhile: the consumer's threads included)."""
    replay = LocalReplay(config, views, resolved)
    source = records or (lambda pending: kafka_records(config, resolved, pending))
    cpu = time.process_time()
    started = time.perf_counter()
    first: float | None = None
    for i, record in enumerate(source(lambda: replay.pending_partitions)):
        if record.end:
            replay.finish(record.partition)
            continue
        first = first or time.perf_counter()
        replay.process(record)
        if i % 20_000 == 0:
            on_batch(len(replay.rows), sum(replay.dead.values()))
    on_batch(len(replay.rows), sum(replay.dead.values()))
    ended = time.perf_counter()
    return (replay.rows, replay.dead, ended - started, ended - (first or ended),
            time.process_time() - cpu)
