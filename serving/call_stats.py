"""Recent model-call figures for metrics: latency percentiles and rows per Predict call.

PyFlink metric gauges are integers read once per bundle, and PyFlink has no histogram
type, so the scoring operator keeps the latest calls in bounded rings and reports their
p50/p99 as gauges. Rings are fed from the asyncio loop thread and read from the worker's
main thread; a lock keeps a read from seeing a ring mid-append.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

RECENT = 2_048


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when it is empty."""
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


@dataclass(frozen=True)
class Summary:
    calls: int  # Predict calls recorded in total
    rows: int  # rows in those calls
    call_p50_ms: float  # over the recent calls: RPC round trip of one Predict
    call_p99_ms: float
    row_p50_ms: float  # over the recent rows: from the row's predict() to its answer
    row_p99_ms: float
    rows_per_call: float  # mean over the recent calls


class CallStats:
    def __init__(self, recent: int = RECENT) -> None:
        self._lock = threading.Lock()
        self._calls: deque[tuple[float, int]] = deque(maxlen=recent)
        self._rows: deque[float] = deque(maxlen=recent)
        self._total_calls = 0
        self._total_rows = 0
        self._version = 0
        self._cached: tuple[int, Summary] | None = None

    def record_call(self, latency_ms: float, rows: int) -> None:
        with self._lock:
            self._calls.append((latency_ms, rows))
            self._total_calls += 1
            self._total_rows += rows
            self._version += 1

    def record_row(self, latency_ms: float) -> None:
        with self._lock:
            self._rows.append(latency_ms)
            self._version += 1

    def totals(self) -> tuple[int, int]:
        """(calls, rows) recorded in total: cheap, no percentiles."""
        with self._lock:
            return self._total_calls, self._total_rows

    def summary(self) -> Summary:
        """The figures now; recomputed only when something was recorded since."""
        with self._lock:
            if self._cached is not None and self._cached[0] == self._version:
                return self._cached[1]
            version = self._version
            calls = list(self._calls)
            rows = sorted(self._rows)
            totals = (self._total_calls, self._total_rows)
        call_ms = sorted(c[0] for c in calls)
        summary = Summary(
            calls=totals[0],
            rows=totals[1],
            call_p50_ms=percentile(call_ms, 0.50),
            call_p99_ms=percentile(call_ms, 0.99),
            row_p50_ms=percentile(rows, 0.50),
            row_p99_ms=percentile(rows, 0.99),
            rows_per_call=sum(c[1] for c in calls) / len(calls) if calls else 0.0,
        )
        with self._lock:
            self._cached = (version, summary)
        return summary
