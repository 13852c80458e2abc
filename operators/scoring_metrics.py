"""The model-scoring metrics both scoring operators show in the Flink UI (group
``rtd.model``): rows scored, fallbacks by cause, Predict latency, rows per call, the
circuit breaker.

How they reach Flink depends on the execution mode:
- thread mode (``push=True``): pushed by the task thread into JVM counters
  (operators/metric_values.py); a Python gauge there is called on Flink's metrics
  thread and crashes the TaskManager. Counts are pushed as they change, the latency
  percentiles, rows per call and the breaker state at most once a second.
- process mode: gauges. PyFlink runs ``async_invoke`` on its own asyncio thread and
  ``timeout`` on timer threads, where Beam-backed counters and meters have no metrics
  container and are silently dropped; gauges are read on the worker's main thread at
  the end of each bundle, so figures kept in plain attributes reach the UI.
Integers only (PyFlink gauges), so latencies are in microseconds, under the same names in
both modes. Rates per cause are meters in the fallback ladder operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decisioning.decision import FALLBACK_REASONS
from operators.metric_values import PublishedValue, Throttle
from serving.call_stats import CallStats, Summary
from serving.predict_calls import Reason

COUNTS = ("scored", "predict_calls", "predict_rows", *(f"fallback_{r}" for r in FALLBACK_REASONS))
FIGURES: dict[str, Callable[[Summary], int]] = {
    "call_latency_p50_us": lambda s: int(s.call_p50_ms * 1000),
    "call_latency_p99_us": lambda s: int(s.call_p99_ms * 1000),
    "row_latency_p50_us": lambda s: int(s.row_p50_ms * 1000),
    "row_latency_p99_us": lambda s: int(s.row_p99_ms * 1000),
    "rows_per_call": lambda s: round(s.rows_per_call),
}


class ScoringMetrics:
    def __init__(self, metrics_group: Any, breaker_open: Callable[[], bool], *,
                 push: bool = False) -> None:
        self.stats = CallStats()
        self.scored = 0
        self.fallbacks: dict[str, int] = dict.fromkeys(FALLBACK_REASONS, 0)
        self._breaker_open = breaker_open
        group = metrics_group.add_group("rtd").add_group("model")
        self._push = push
        if push:
            self._values = {name: PublishedValue(group, name)
                            for name in (*COUNTS, *FIGURES, "breaker_open")}
            self._throttle = Throttle(1.0)
            return
        group.gauge("scored", lambda: self.scored)
        for reason in self.fallbacks:
            group.gauge(f"fallback_{reason}", self._fallback_count(reason))
        stats = self.stats
        for name, figure in FIGURES.items():
            group.gauge(name, self._figure(figure))
        group.gauge("predict_calls", lambda: stats.totals()[0])
        group.gauge("predict_rows", lambda: stats.totals()[1])
        group.gauge("breaker_open", lambda: int(breaker_open()))

    def _fallback_count(self, reason: str) -> Callable[[], int]:
        return lambda: self.fallbacks[reason]

    def _figure(self, figure: Callable[[Summary], int]) -> Callable[[], int]:
        return lambda: figure(self.stats.summary())

    def _refresh(self) -> None:
        """Push mode: the figures that need a summary, at most once a second (the
        counts are pushed as they change)."""
        if not self._throttle.due():
            return
        summary = self.stats.summary()
        values = self._values
        for name, figure in FIGURES.items():
            values[name].set(figure(summary))
        values["breaker_open"].set(int(self._breaker_open()))

    def on_call(self, latency_ms: float, rows: int, outcome: Reason | None) -> None:
        """A client's call hook: latency of answered calls (failures count by cause)."""
        if outcome is None:
            self.stats.record_call(latency_ms, rows)
            if self._push:
                calls, rows_total = self.stats.totals()
                self._values["predict_calls"].set(calls)
                self._values["predict_rows"].set(rows_total)
        if self._push:
            self._refresh()

    def row_scored(self, latency_ms: float) -> None:
        self.stats.record_row(latency_ms)
        self.scored += 1
        if self._push:
            self._values["scored"].set(self.scored)
            self._refresh()

    def row_fell_back(self, reason: str) -> None:
        self.fallbacks[reason] += 1
        if self._push:
            self._values[f"fallback_{reason}"].set(self.fallbacks[reason])
            self._refresh()
