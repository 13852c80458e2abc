"""The model-scoring metrics both scoring operators show in the Flink UI (group
``rtd.model``): rows scored, fallbacks by cause, Predict latency, rows per call, the
circuit breaker.

Gauges only. In process mode PyFlink runs ``async_invoke`` on its own asyncio thread
and ``timeout`` on timer threads, where Beam-backed counters and meters have no metrics
container and are silently dropped; gauges are read on the worker's main thread at the
end of each bundle, so figures kept in plain attributes reach the UI. Integer gauges
only (PyFlink), so latencies are in microseconds. Rates per cause are meters in the
fallback ladder operator, which runs on a main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decisioning.decision import FALLBACK_REASONS
from serving.call_stats import CallStats
from serving.predict_calls import Reason


class ScoringMetrics:
    def __init__(self, metrics_group: Any, breaker_open: Callable[[], bool]) -> None:
        self.stats = CallStats()
        self.scored = 0
        self.fallbacks: dict[str, int] = dict.fromkeys(FALLBACK_REASONS, 0)
        group = metrics_group.add_group("rtd").add_group("model")
        group.gauge("scored", lambda: self.scored)
        for reason in self.fallbacks:
            group.gauge(f"fallback_{reason}", self._fallback_count(reason))
        stats = self.stats
        group.gauge("call_latency_p50_us", lambda: int(stats.summary().call_p50_ms * 1000))
        group.gauge("call_latency_p99_us", lambda: int(stats.summary().call_p99_ms * 1000))
        group.gauge("row_latency_p50_us", lambda: int(stats.summary().row_p50_ms * 1000))
        group.gauge("row_latency_p99_us", lambda: int(stats.summary().row_p99_ms * 1000))
        group.gauge("rows_per_call", lambda: round(stats.summary().rows_per_call))
        group.gauge("predict_calls", lambda: stats.summary().calls)
        group.gauge("predict_rows", lambda: stats.summary().rows)
        group.gauge("breaker_open", lambda: int(breaker_open()))

    def _fallback_count(self, reason: str) -> Callable[[], int]:
        return lambda: self.fallbacks[reason]

    def on_call(self, latency_ms: float, rows: int, outcome: Reason | None) -> None:
        """A client's call hook: latency of answered calls (failures count by cause)."""
        if outcome is None:
            self.stats.record_call(latency_ms, rows)

    def row_scored(self, latency_ms: float) -> None:
        self.stats.record_row(latency_ms)
        self.scored += 1

    def row_fell_back(self, reason: str) -> None:
        self.fallbacks[reason] += 1
