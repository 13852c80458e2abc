"""Figures for the Flink UI that Flink's metrics thread reads without calling Python.

A PyFlink gauge is a Python callable that Flink invokes on its own metrics thread
whenever the REST API, the web UI or a reporter asks for it. In thread mode that call
enters the TaskManager's embedded interpreter from a thread PyFlink did not set up for
it, concurrently with the task thread, and the TaskManager dies in native code: a soak
run (bench/soak.py, 600 events/s with the REST API polled every 5 s) lost its
TaskManager after 8 minutes to a SIGSEGV in ``_PyEval_EvalFrameDefault`` under
``MetricGauge.getValue`` on a ``flink-metrics`` thread. So the operators push their
figures instead: a Flink counter holds each value in the JVM and the task thread sets
it. Counters and meters are JVM objects in both execution modes; only process mode's
asynchronous scoring, whose Python threads have no metrics container, keeps gauges
(operators/scoring_metrics.py), which process mode reads on the worker's main thread.
"""

from __future__ import annotations

import time
from typing import Any


class PublishedValue:
    """An integer metric the task thread sets; shown like a gauge, held by a counter."""

    __slots__ = ("_counter", "_value")

    def __init__(self, group: Any, name: str) -> None:
        self._counter = group.counter(name)
        self._value = 0

    def set(self, value: int) -> None:
        delta = int(value) - self._value
        if delta:
            self._counter.inc(delta)
            self._value += delta

    @property
    def value(self) -> int:
        return self._value


class Throttle:
    """True at most once per ``interval_s`` (the first call is due), to refresh figures
    that cost more than a counter increment from the per-record path."""

    __slots__ = ("_clock", "_interval_s", "_next")

    def __init__(self, interval_s: float = 1.0, clock: Any = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._next = float("-inf")

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._interval_s
        return True
