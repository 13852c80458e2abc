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
from operators.shard_watermarks import NO_WATERMARK, PartitionGate, ShardWatermarks
from operators.state_ttl import safety_ttl

# Expiry timers are rounded up to this granularity: one timer per shard and minute.
TIMER_GRANULARITY_MS = MINUTE_MS
# Processing-time TTL only as a memory safety net: expiry proper is on event time.
SAFETY_TTL_DAYS = 45


def shard_of(entity_key: str, shards: int) -> int:
    return zlib.crc32(entity_key.encode("utf-8")) % shards


def progress_descriptor(view: FeatureView) -> ValueStateDescriptor:
    """Per shard: the highest event time processed from each partition
    (operators/shard_watermarks.py)."""
    return ValueStateDescriptor(f"{view.name}-v{view.version}-partition-progress",
                                Types.PICKLED_BYTE_ARRAY())


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


class FeatureViewFunction(KeyedProcessFunction):
    """Computes ``view``'s features for each record; keyed by ``shard_of(entity key)``.

    ``flags_late``: this operator (the first keyed one) decides whether the event is
    late, i.e. behind the watermark by more than the allowed lateness. ``partitions``,
    ``delay_ms`` and ``idleness_ms``: the source topic's partition count, the watermark
    delay and the idleness timeout (operators/shard_watermarks.py).
    """

    def __init__(
        self, view: FeatureView, allowed_lateness_ms: int, stage: str, flags_late: bool,
        partitions: int = 1, delay_ms: int = 0, idleness_ms: int = 0,
    ) -> None:
        self.view = view
        self.allowed_lateness_ms = allowed_lateness_ms
        self.stage = stage
        self.flags_late = flags_late
        self.partitions = partitions
        self.delay_ms = delay_ms
        self.idleness_ms = idleness_ms
        self._computer: ViewComputer | None = None
        self._map: Any = None
        self._shards: dict[int, dict[str, State]] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._computer = ViewComputer(self.view)
        self._map = runtime_context.get_map_state(state_descriptor(self.view))
        self._watermarks = ShardWatermarks(
            self.partitions, self.delay_ms,
            runtime_context.get_state(progress_descriptor(self.view)))
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
        partition = value["source"]["partition"]
        flink = ctx.timer_service().current_watermark() \
            if self._gate.passes(partition) else NO_WATERMARK
        watermark = self._watermarks.watermark(shard, flink)
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
        self._watermarks.observe(shard, partition, t)
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
