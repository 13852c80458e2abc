"""One keyed operator per feature view: state in, features out, expiry on event time.

Per event it does one state read and one state write (the whole compact window state
of the key in one value), because each state access is the main per-record cost of
PyFlink's Python operators (shared/notes/measured-facts.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyflink.common import Time, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from feature_views.model import MINUTE_MS, FeatureView
from feature_views.window_state import ViewComputer, empty_state
from operators.clock import now_ms

NO_WATERMARK = -(2**63)
# Timers are rounded up to this granularity, so a busy key registers one timer per
# minute instead of one per event (Flink de-duplicates timers per key and time).
TIMER_GRANULARITY_MS = MINUTE_MS
# Processing-time TTL only as a memory safety net: expiry proper is on event time.
SAFETY_TTL_DAYS = 45


def state_descriptor(view: FeatureView) -> ValueStateDescriptor:
    descriptor = ValueStateDescriptor(f"{view.name}-v{view.version}", Types.PICKLED_BYTE_ARRAY())
    ttl = (
        StateTtlConfig.new_builder(Time.days(SAFETY_TTL_DAYS))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .build()
    )
    descriptor.enable_time_to_live(ttl)
    return descriptor


class FeatureViewFunction(KeyedProcessFunction):
    """Computes ``view``'s features for each record of its key.

    ``flags_late``: this operator (the first keyed one) decides whether the event is
    late, i.e. behind the watermark by more than the allowed lateness.
    """

    def __init__(
        self, view: FeatureView, allowed_lateness_ms: int, stage: str, flags_late: bool
    ) -> None:
        self.view = view
        self.allowed_lateness_ms = allowed_lateness_ms
        self.stage = stage
        self.flags_late = flags_late
        self._computer: ViewComputer | None = None
        self._state: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._computer = ViewComputer(self.view)
        self._state = runtime_context.get_state(state_descriptor(self.view))
        group = runtime_context.get_metrics_group().add_group("rtd").add_group(self.view.name)
        self._late_counter = group.counter("late_events")

    def process_element(self, value: dict[str, Any], ctx: KeyedProcessFunction.Context
                        ) -> Iterator[dict[str, Any]]:
        computer = self._computer
        assert computer is not None
        watermark = ctx.timer_service().current_watermark()
        state = self._state.value() or empty_state()
        if watermark != NO_WATERMARK:
            computer.prune(state, watermark, self.allowed_lateness_ms)
        event = value["event"]
        t = event["event_time"]
        if self.flags_late and watermark != NO_WATERMARK and t < watermark - self.allowed_lateness_ms:
            value["late"] = True
            self._late_counter.inc()
        value["features"].update(computer.apply(state, event))
        self._state.update(state)
        expiry = computer.expires_at(state, self.allowed_lateness_ms)
        ctx.timer_service().register_event_time_timer(
            -(-expiry // TIMER_GRANULARITY_MS) * TIMER_GRANULARITY_MS
        )
        value["as_of"][self.view.name] = {
            "as_of_event_time": t,
            "watermark": None if watermark == NO_WATERMARK else watermark,
            "computed_at": now_ms(),
        }
        value["timings"][self.stage] = now_ms()
        yield value

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        computer = self._computer
        assert computer is not None
        state = self._state.value()
        if state is None:
            return
        if computer.is_expired(state, timestamp, self.allowed_lateness_ms):
            self._state.clear()
        else:
            # Newer events pushed expiry on; their own timers cover it. Prune the rest.
            computer.prune(state, timestamp, self.allowed_lateness_ms)
            self._state.update(state)
        return
        yield  # pragma: no cover - makes this a generator, as PyFlink expects
