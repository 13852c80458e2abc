"""Card and customer features of a record in one keyed context: the customer's shard.

A card belongs to one customer, so both views' state can live under the customer's
shard (``shard_of(customer_id, job.state_shards)``, rtd_core/sharding.py) and one keyed
operator computes both, with no shuffle between them. The card view's state is scoped to
the customer: its key is (customer id, card id), so a card seen under a second customer
starts a separate history there (docs/contract.md, "Features").

State: per view, one ``MapState`` per shard (entity key -> compact window state) in
RocksDB, the store of record that checkpoints and restores see; every write goes through
to it. In Python only a bounded working set of recently used entities stays
(operators/working_set.py, ``job.working_set_entities`` states and
``job.working_set_history`` history entries per view): a miss reads the store. Expiry
is on event time: one timer per shard and minute sweeps the shard's stored entities
that can no longer affect any window.
"""

from __future__ import annotations

from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from feature_views.model import MINUTE_MS, FeatureView
from feature_views.window_state import ViewComputer, empty_state, history_size
from operators.clock import now_ms
from operators.metric_values import PublishedValue, Throttle
from operators.process_memory import native_memory_kib
from operators.records import JobRecord
from operators.shard_watermarks import NO_WATERMARK, PartitionGate, ShardWatermarks
from operators.state_ttl import safety_ttl
from operators.working_set import WorkingSet

# Expiry timers are rounded up to this granularity: one timer per shard and minute.
TIMER_GRANULARITY_MS = MINUTE_MS
# Processing-time TTL only as a memory safety net: expiry proper is on event time.
SAFETY_TTL_DAYS = 45
PROGRESS_STATE = "customer-shard-partition-progress-v1"
# mallinfo2 walks every malloc arena under its lock: every few seconds, not every record.
MEMORY_PUBLISH_S = 5.0


def state_descriptor(view: FeatureView) -> MapStateDescriptor:
    descriptor = MapStateDescriptor(
        f"{view.name}-v{view.version}", Types.STRING(), Types.PICKLED_BYTE_ARRAY()
    )
    # ReturnExpiredIfNotCleanedUp on purpose: PyFlink turns off its Python-side state
    # caches for NeverReturnExpired TTL state (process mode: every write a blocking
    # round trip). Window semantics do not depend on this TTL; event-time expiry does.
    descriptor.enable_time_to_live(safety_ttl(SAFETY_TTL_DAYS))
    return descriptor


class _View:
    __slots__ = ("computer", "entities", "latest_timer", "view")

    def __init__(self, view: FeatureView, store: Any, capacity: int, key_capacity: int,
                 history_capacity: int) -> None:
        self.view = view
        self.computer = ViewComputer(view)
        self.entities = WorkingSet(store, capacity, key_capacity, weigh=history_size,
                                   weight_capacity=history_capacity)
        # Per shard, the latest expiry timer set since (re)start; after a restore the
        # checkpointed timers stand, and the first record of a shard sets one again.
        self.latest_timer: dict[int, int] = {}


class ShardFeatures:
    """Both views' features for records keyed by the customer's shard.

    ``views``: the card view (state scoped to the customer), then the customer view (its
    entity key is the shard's); the first view flags late events, i.e. behind the
    watermark by more than the allowed lateness. ``partitions``, ``delay_ms`` and
    ``idleness_ms``: the source topic's partition count, the watermark delay and the
    idleness timeout (operators/shard_watermarks.py). ``capacity`` and
    ``history_capacity``: states and their history entries per view held in Python;
    ``key_capacity``: entity keys per view held to know new ones
    (operators/working_set.py).
    """

    def __init__(self, views: tuple[FeatureView, FeatureView], allowed_lateness_ms: int,
                 partitions: int, delay_ms: int, idleness_ms: int, capacity: int,
                 key_capacity: int = 500_000, history_capacity: int = 250_000) -> None:
        card_view, customer_view = views
        if card_view.scope != customer_view.entity_key or customer_view.scope is not None:
            raise ValueError(f"{card_view.name} must be scoped to {customer_view.entity_key}, "
                             f"the key of {customer_view.name}, the operator's shard key")
        self.views = views
        self.allowed_lateness_ms = allowed_lateness_ms
        self.partitions = partitions
        self.delay_ms = delay_ms
        self.idleness_ms = idleness_ms
        self.capacity = capacity
        self.key_capacity = key_capacity
        self.history_capacity = history_capacity

    def open(self, runtime_context: RuntimeContext) -> None:
        card_view = self.views[0]
        self._views = tuple(
            _View(view, runtime_context.get_map_state(state_descriptor(view)), self.capacity,
                  self.key_capacity, self.history_capacity)
            for view in self.views)
        self._watermarks = ShardWatermarks(
            self.partitions, self.delay_ms,
            runtime_context.get_state(ValueStateDescriptor(PROGRESS_STATE,
                                                           Types.PICKLED_BYTE_ARRAY())))
        self._gate = PartitionGate(self.partitions, self.idleness_ms)
        rtd = runtime_context.get_metrics_group().add_group("rtd")
        self._late_counter = rtd.add_group(card_view.name).counter("late_events")
        # Pushed, not gauges: operators/metric_values.py.
        self._published = [
            {name: PublishedValue(rtd.add_group(v.view.name), name)
             for name in ("entities_in_memory", "history_in_memory", "keys_tracked",
                          "working_set_hits", "working_set_misses", "working_set_miss_us")}
            for v in self._views]
        self._publish = Throttle(1.0)
        # The process's native memory (operators/process_memory.py): once per subtask is
        # enough, and here is where what Python holds for features is bounded.
        memory = rtd.add_group("memory")
        self._memory = {name: PublishedValue(memory, name) for name in native_memory_kib()}
        self._publish_memory = Throttle(MEMORY_PUBLISH_S)

    def apply(self, value: JobRecord, shard: int, ctx: KeyedProcessFunction.Context
              ) -> None:
        """Adds both views' features to ``value`` and folds its event into their state."""
        event = value.event
        partition = value.source["partition"]
        timers = ctx.timer_service()
        flink = timers.current_watermark() if self._gate.passes(partition) else NO_WATERMARK
        watermark = self._watermarks.watermark(shard, flink)
        t = event["event_time"]
        if watermark != NO_WATERMARK and t < watermark - self.allowed_lateness_ms:
            value.late = True
            self._late_counter.inc()
        features = value.features
        as_of = value.as_of
        lateness = self.allowed_lateness_ms
        for view in self._views:
            computer = view.computer
            key = view.view.state_key(event)
            state = view.entities.get(key, shard)
            if state is None:
                state = empty_state()
            elif watermark != NO_WATERMARK:
                computer.prune(state, watermark, lateness)
            features.update(computer.apply(state, event))
            view.entities.put(key, state, shard)
            # One expiry timer per shard and minute, registered only when it moves past
            # the shard's latest one (a registration per record was 6% of a process-mode
            # profile): a later timer also sweeps what an earlier one would have. A late
            # event's already-due expiry is registered anyway, to be swept at once.
            timer = -(-computer.expires_at(state, lateness)
                      // TIMER_GRANULARITY_MS) * TIMER_GRANULARITY_MS
            latest = view.latest_timer.get(shard, NO_WATERMARK)
            if timer > latest or timer <= watermark:
                timers.register_event_time_timer(timer)
                view.latest_timer[shard] = max(timer, latest)
            as_of[view.view.name] = {
                "as_of_event_time": t,
                "watermark": None if watermark == NO_WATERMARK else watermark,
                "computed_at": now_ms(),
            }
        self._watermarks.observe(shard, partition, t)
        timings = value.timings
        timings["card_features"] = timings["customer_features"] = now_ms()
        if self._publish.due():
            self._publish_figures()

    def _publish_figures(self) -> None:
        for view, published in zip(self._views, self._published, strict=True):
            published["entities_in_memory"].set(len(view.entities))
            published["history_in_memory"].set(view.entities.weight)
            published["keys_tracked"].set(view.entities.keys_tracked)
            published["working_set_hits"].set(view.entities.hits)
            published["working_set_misses"].set(view.entities.misses)
            published["working_set_miss_us"].set(int(view.entities.miss_seconds * 1e6))
        if self._publish_memory.due():  # checked here, once a second, not per record
            for name, figure in native_memory_kib().items():
                self._memory[name].set(figure)

    def expire(self, timestamp: int, shard: int) -> None:
        """Drop the current shard's entities that can no longer affect any window."""
        lateness = self.allowed_lateness_ms
        for view in self._views:
            computer = view.computer
            view.entities.remove_all(
                [k for k, s in view.entities.stored_items()
                 if computer.is_expired(s, timestamp, lateness)], shard)
