"""The fallback ladder's Flink shell: the card's last live model score in keyed state.

Only in the job when the last-score rung is on (``serving.last_score_max_age_ms`` > 0,
off by default): then it runs after scoring, keyed by ``shard_of(card_id, job.state_shards)``
(the card's last score is state per card, and the scoring operator is keyed by customer).
In PyFlink's process mode a keyed-state read the Python-side cache cannot serve is a
blocking round trip to the JVM, and card ids miss that cache almost always. So each shard
keeps its cards in one ``MapState`` (card id -> last live score), loaded into memory by
the shard's first record after (re)start; from then on reads come from memory and only
writes go to the MapState, which PyFlink batches per bundle. Only a live score is
written (one put per scored record); a failed call reads memory only. With
``serving.last_score_max_age_ms`` 0 the operator touches no state at all.

Forgetting is on event time, without timers (a timer is a state access too): each shard
sweeps its cards once it has seen as many records as it holds cards, dropping scores no
event that is not late can use. A processing-time TTL on the MapState is only a safety
net for shards that stop receiving records.

Metrics (group ``rtd.fallback_ladder``) live here rather than in the async scoring
operator: PyFlink runs ``async_invoke`` and the operator that follows it on threads of
their own, where Beam-backed counters and meters have no metrics container and are
dropped. This operator's ``process_element`` runs on the worker's main thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from decisioning.decision import FALLBACK_REASONS, ModelResult
from decisioning.fallback_ladder import FallbackLadder, Remembered, Step
from operators.failures import has_failed, mark_failed
from operators.metric_values import PublishedValue, Throttle
from operators.records import JobRecord
from operators.state_ttl import safety_ttl

STATE_NAME = "last-model-score-v1"
STAGE = "fallback_ladder"
REMEMBERED_ROW = Types.ROW_NAMED(
    ["score", "model_version", "event_id", "event_time"],
    [Types.DOUBLE(), Types.INT(), Types.STRING(), Types.LONG()],
)
SAFETY_TTL_DAYS = 2
# A shard sweeps once it has seen max(this, its card count) records since the last sweep.
MIN_RECORDS_BETWEEN_SWEEPS = 1_000


def state_descriptor() -> MapStateDescriptor:
    descriptor = MapStateDescriptor(STATE_NAME, Types.STRING(), REMEMBERED_ROW)
    # Not NeverReturnExpired: for that visibility PyFlink turns its Python-side state
    # cache off (for the operator's whole state backend), making every put a blocking
    # JVM round trip. Whether a score may be used is decided on event time anyway.
    descriptor.enable_time_to_live(safety_ttl(SAFETY_TTL_DAYS))
    return descriptor


def _from_row(row: Row) -> Remembered:
    return Remembered(float(row[0]), int(row[1]), str(row[2]), int(row[3]))


def _to_row(remembered: Remembered) -> Row:
    return Row(remembered.score, remembered.model_version, remembered.event_id,
               remembered.event_time)


class _Shard:
    __slots__ = ("cards", "newest_event_time", "since_sweep")

    def __init__(self, cards: dict[str, Remembered]) -> None:
        self.cards = cards
        self.newest_event_time = max((r.event_time for r in cards.values()), default=0)
        self.since_sweep = 0


class LadderMetrics:
    """Group ``rtd.fallback_ladder``: the rung each record took and live-call failures by
    cause (counters the totals, meters the rate). Also kept where the last-score rung is
    off and this operator is not in the job (operators/customer_shard.py)."""

    def __init__(self, runtime_context: RuntimeContext) -> None:
        group = runtime_context.get_metrics_group().add_group("rtd").add_group("fallback_ladder")
        self.group = group
        self.steps = {step: group.counter(step.value) for step in Step}
        self._failed = {reason: group.counter(f"live_call_{reason}") for reason in
                        FALLBACK_REASONS}
        self._failed_rate = {reason: group.meter(f"live_call_{reason}_per_s", 60)
                             for reason in FALLBACK_REASONS}

    def live_call(self, model: ModelResult) -> None:
        if model.fallback_reason is not None:
            self._failed[model.fallback_reason].inc()
            self._failed_rate[model.fallback_reason].mark_event()

    def without_ladder(self, model: ModelResult) -> None:
        """A record decided with the last-score rung off."""
        self.live_call(model)
        self.steps[Step.LIVE if model.score is not None else Step.DISABLED].inc()


class FallbackLadderFunction(KeyedProcessFunction):
    """Replaces a failed live call's ``ModelResult`` by the card's recent last score."""

    def __init__(self, max_age_ms: int, allowed_lateness_ms: int) -> None:
        self.max_age_ms = max_age_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self._ladder: FallbackLadder | None = None
        self._map: Any = None
        self._shards: dict[int, _Shard] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._ladder = FallbackLadder(self.max_age_ms)
        self._map = runtime_context.get_map_state(state_descriptor()) \
            if self._ladder.enabled else None
        self._shards = {}
        self._metrics = LadderMetrics(runtime_context)
        group = self._metrics.group
        self._steps = self._metrics.steps
        self._last_score_rate = group.meter("last_score_used_per_s", time_span_in_seconds=60)
        # Pushed, not a gauge: operators/metric_values.py.
        self._cards_remembered = PublishedValue(group, "cards_remembered")
        self._publish = Throttle(1.0)
        self._internal_errors = runtime_context.get_metrics_group().add_group("rtd") \
            .add_group("internal_errors").counter(STAGE)

    def _shard(self, shard: int) -> _Shard:
        state = self._shards.get(shard)
        if state is None:
            state = _Shard({key: _from_row(row) for key, row in self._map.items()})
            self._shards[shard] = state
        return state

    def process_element(self, value: JobRecord, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[JobRecord]:
        if not has_failed(value):
            try:
                self._apply(value, ctx)
            except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
                self._internal_errors.inc()
                mark_failed(value, STAGE, exc)
        yield value

    def _apply(self, value: JobRecord, ctx: KeyedProcessFunction.Context) -> None:
        ladder = self._ladder
        assert ladder is not None
        model = value.model
        assert model is not None, "the model stage runs before the ladder"
        if not ladder.enabled:
            self._metrics.without_ladder(model)
            return
        self._metrics.live_call(model)
        event = value.event
        card = event["card_id"]
        shard = self._shard(ctx.get_current_key())
        outcome = ladder.apply(model, event, shard.cards.get(card))
        self._steps[outcome.step].inc()
        if outcome.step is Step.LAST_SCORE:
            value.model = outcome.model
            self._last_score_rate.mark_event()
        if outcome.remember is not None:
            shard.cards[card] = outcome.remember
            self._map.put(card, _to_row(outcome.remember))
        shard.newest_event_time = max(shard.newest_event_time, int(event["event_time"]))
        shard.since_sweep += 1
        if shard.since_sweep >= max(MIN_RECORDS_BETWEEN_SWEEPS, len(shard.cards)):
            self._sweep(shard)
        if self._publish.due():
            self._cards_remembered.set(sum(len(s.cards) for s in self._shards.values()))

    def _sweep(self, shard: _Shard) -> None:
        ladder = self._ladder
        assert ladder is not None
        shard.since_sweep = 0
        expired = [card for card, remembered in shard.cards.items()
                   if ladder.expired(remembered, shard.newest_event_time,
                                     self.allowed_lateness_ms)]
        for card in expired:
            del shard.cards[card]
            self._map.remove(card)
