"""One keyed operator per feature view: state in, features out, expiry on event time.

Why shards: in PyFlink's process mode every keyed-state read that the Python-side cache
cannot serve is a blocking round trip to the JVM, and with card or customer ids nearly
every event is such a miss (a new or long-unseen key). Profiling showed the worker
waiting on those reads. So the stream is keyed by a shard of the entity key
(``crc32(key) % state_shards``) and each shard keeps its entities in one ``MapState``
(entity key -> compact window state). The first event of a shard after (re)start loads
the shard's entries in one iteration; from then on the operator reads entities from
memory and only writes through to the MapState, whose writes PyFlink batches per bundle.
Flink state stays the source of truth: checkpoints and restores see every write, and a
restarted operator reloads shards from it. Memory holds the live entities of the shards
this subtask owns, bounded by the event-time expiry below.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from feature_views.model import MINUTE_MS, FeatureView
from feature_views.window_state import State, ViewComputer, empty_state
from operators.clock import now_ms
from operators.failures import has_failed, mark_failed
from operators.metric_values import PublishedValue, Throttle
from operators.state_ttl import safety_ttl

NO_WATERMARK = -(2**63)
# Expiry timers are rounded up to this granularity: one timer per shard and minute.
TIMER_GRANULARITY_MS = MINUTE_MS
# Processing-time TTL only as a memory safety net: expiry proper is on event time.
SAFETY_TTL_DAYS = 45


def shard_of(entity_key: str, shards: int) -> int:
    return zlib.crc32(entity_key.encode("utf-8")) % shards


# The watermark a shard has seen, kept in its state so that a restore resumes from it:
# Flink does not checkpoint watermarks, and until every partition has emitted one again
# a restored job's watermark is far behind (late events would go unflagged). It stays a
# valid lower bound: the contract's watermark only grows with the partitions' history.
# Saved only when it moved this much, so a steady stream writes it rarely.
WATERMARK_SAVE_STEP_MS = 1_000


def watermark_descriptor(view: FeatureView) -> ValueStateDescriptor:
    return ValueStateDescriptor(f"{view.name}-v{view.version}-watermark", Types.LONG())


def state_descriptor(view: FeatureView) -> MapStateDescriptor:
    descriptor = MapStateDescriptor(
        f"{view.name}-v{view.version}", Types.STRING(), Types.PICKLED_BYTE_ARRAY()
    )
    # ReturnExpiredIfNotCleanedUp on purpose: PyFlink turns off its Python-side state
    # caches for NeverReturnExpired TTL state, making every write a blocking round trip
    # to the JVM (measured: the main cost of this operator). Window semantics do not
    # depend on this TTL; event-time expiry below decides what an event sees.
    descriptor.enable_time_to_live(safety_ttl(SAFETY_TTL_DAYS))
    return descriptor


class PartitionGate:
    """Whether the source's watermark covers every partition yet, since (re)start.

    Flink's Kafka source registers a partition's watermark output only when it first
    emits a record of that partition, so until every partition has delivered one, its
    watermark is the minimum over those that have (measured: after a backlog fetch, the
    last partition's records all found a watermark hours ahead). The gate stays shut
    until a record of each of the topic's partitions has come by, or the idleness
    timeout has passed since (re)start (a partition without data drops out, as in the
    contract); while shut the operator uses only the watermark saved in its state.
    """

    def __init__(self, partitions: int, idleness_ms: int) -> None:
        self.partitions = partitions
        self.idleness_s = idleness_ms / 1000.0
        self._seen: set[int] = set()
        self._opened_at = time.monotonic()
        self.open = False

    def passes(self, partition: int) -> bool:
        if self.open:
            return True
        self._seen.add(partition)
        if len(self._seen) >= self.partitions or (
                self.idleness_s > 0 and time.monotonic() - self._opened_at >= self.idleness_s):
            self.open = True
        return self.open


class FeatureViewFunction(KeyedProcessFunction):
    """Computes ``view``'s features for each record; keyed by ``shard_of(entity key)``.

    ``flags_late``: this operator (the first keyed one) decides whether the event is
    late, i.e. behind the watermark by more than the allowed lateness. ``partitions``
    and ``idleness_ms``: the source topic's partition count and idleness timeout, for
    the ``PartitionGate``.
    """

    def __init__(
        self, view: FeatureView, allowed_lateness_ms: int, stage: str, flags_late: bool,
        partitions: int = 1, idleness_ms: int = 0,
    ) -> None:
        self.view = view
        self.allowed_lateness_ms = allowed_lateness_ms
        self.stage = stage
        self.flags_late = flags_late
        self.partitions = partitions
        self.idleness_ms = idleness_ms
        self._computer: ViewComputer | None = None
        self._map: Any = None
        self._shards: dict[int, dict[str, State]] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._computer = ViewComputer(self.view)
        self._map = runtime_context.get_map_state(state_descriptor(self.view))
        self._saved_watermark = runtime_context.get_state(watermark_descriptor(self.view))
        # shard -> (watermark seen, the value last saved to its state)
        self._watermarks: dict[int, tuple[int, int]] = {}
        self._shards = {}
        self._gate = PartitionGate(self.partitions, self.idleness_ms)
        # Per shard, the latest expiry timer set since (re)start; after a restore the
        # checkpointed timers stand, and the first record of a shard sets one again.
        self._latest_timer: dict[int, int] = {}
        group = runtime_context.get_metrics_group().add_group("rtd").add_group(self.view.name)
        self._late_counter = group.counter("late_events")
        self._internal_errors = runtime_context.get_metrics_group().add_group("rtd") \
            .add_group("internal_errors").counter(self.stage)
        # Pushed, not a gauge: operators/metric_values.py.
        self._entities_in_memory = PublishedValue(group, "entities_in_memory")
        self._publish = Throttle(1.0)

    def _watermark(self, shard: int, current: int) -> int:
        """The shard's watermark: Flink's, or the one saved before a restore if higher."""
        known = self._watermarks.get(shard)
        if known is None:
            saved = self._saved_watermark.value()
            known = (NO_WATERMARK, NO_WATERMARK) if saved is None else (int(saved), int(saved))
        seen, saved_at = known
        if current > seen:
            seen = current
            if seen - saved_at >= WATERMARK_SAVE_STEP_MS:
                self._saved_watermark.update(seen)
                saved_at = seen
            self._watermarks[shard] = (seen, saved_at)
        elif shard not in self._watermarks:
            self._watermarks[shard] = known
        return seen

    def _shard(self, shard: int) -> dict[str, State]:
        entities = self._shards.get(shard)
        if entities is None:
            entities = {key: state for key, state in self._map.items()}
            self._shards[shard] = entities
        return entities

    def process_element(self, value: dict[str, Any], ctx: KeyedProcessFunction.Context
                        ) -> Iterator[dict[str, Any]]:
        if has_failed(value):  # an earlier stage failed on it: on to the dead letters
            yield value
            return
        try:
            self._features(value, ctx)
        except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
            self._internal_errors.inc()
            mark_failed(value, self.stage, exc)
        yield value

    def _features(self, value: dict[str, Any], ctx: KeyedProcessFunction.Context) -> None:
        computer = self._computer
        assert computer is not None
        shard = ctx.get_current_key()
        entities = self._shard(shard)
        event = value["event"]
        key = event[self.view.entity_key]
        current = ctx.timer_service().current_watermark() \
            if self._gate.passes(value["source"]["partition"]) else NO_WATERMARK
        watermark = self._watermark(shard, current)
        state = entities.get(key)
        if state is None:
            state = entities[key] = empty_state()
        elif watermark != NO_WATERMARK:
            computer.prune(state, watermark, self.allowed_lateness_ms)
        t = event["event_time"]
        if self.flags_late and watermark != NO_WATERMARK and t < watermark - self.allowed_lateness_ms:
            value["late"] = True
            self._late_counter.inc()
        value["features"].update(computer.apply(state, event))
        self._map.put(key, state)
        # One expiry timer per shard and minute, registered only when it moves past the
        # shard's latest one (a registration per record was 6% of a process-mode
        # profile): a later timer also sweeps what an earlier one would have. A late
        # event's already-due expiry is registered anyway, to be swept at once.
        timer = -(-computer.expires_at(state, self.allowed_lateness_ms)
                  // TIMER_GRANULARITY_MS) * TIMER_GRANULARITY_MS
        if timer > self._latest_timer.get(shard, NO_WATERMARK) or timer <= watermark:
            ctx.timer_service().register_event_time_timer(timer)
            self._latest_timer[shard] = max(timer, self._latest_timer.get(shard, timer))
        value["as_of"][self.view.name] = {
            "as_of_event_time": t,
            "watermark": None if watermark == NO_WATERMARK else watermark,
            "computed_at": now_ms(),
        }
        value["timings"][self.stage] = now_ms()
        if self._publish.due():
            self._publish_entities()

    def _publish_entities(self) -> None:
        self._entities_in_memory.set(sum(len(s) for s in self._shards.values()))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        """Drop the shard's entities that can no longer affect any window."""
        computer = self._computer
        assert computer is not None
        entities = self._shard(ctx.get_current_key())
        expired = [k for k, s in entities.items()
                   if computer.is_expired(s, timestamp, self.allowed_lateness_ms)]
        for key in expired:
            del entities[key]
            self._map.remove(key)
        if expired:
            self._publish_entities()
        return
        yield  # pragma: no cover - makes this a generator, as PyFlink expects
