"""Percentiles and small summaries for the benchmark: pure Python, no I/O.

Percentiles use the nearest-rank method (the smallest value such that at least q of the
samples are at or below it): every reported figure is a latency that was actually
observed, never an interpolation between two, and p99.9 of fewer than 1,000 samples is
simply the maximum. With n samples the p-th percentile is the ceil(p/100 * n)-th smallest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9),
)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values; ``pct`` in (0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 < pct <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    # A small epsilon: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, which
    # must not round up to rank 1000.
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values) - 1e-9))
    return float(sorted_values[rank - 1])


def latency_summary(values: Iterable[float]) -> dict[str, float | int | None]:
    """Count, mean, max and the standard quantiles; ``None`` figures when there is no sample."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, "max": None, **{name: None for name, _ in QUANTILES}}
    out: dict[str, float | int | None] = {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 2),
        "max": float(ordered[-1]),
    }
    for name, pct in QUANTILES:
        out[name] = percentile(ordered, pct)
    return out


def per_second_counts(times_ms: Iterable[int], start_ms: int, end_ms: int) -> list[int]:
    """How many of ``times_ms`` fall in each whole second of [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return []
    buckets = [0] * math.ceil((end_ms - start_ms) / 1000)
    for t in times_ms:
        if start_ms <= t < end_ms:
            buckets[(t - start_ms) // 1000] += 1
    return buckets


def linear_slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0.0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference rounded to 2 decimals, None when either is missing or zero."""
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 2)
