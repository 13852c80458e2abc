"""Recent model-call figures behind the scoring operator's gauges."""

from __future__ import annotations

import pytest

from serving.call_stats import CallStats, percentile

pytestmark = pytest.mark.unit


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


def test_summary_of_calls_and_rows() -> None:
    stats = CallStats()
    for ms, rows in [(1.0, 10), (2.0, 30), (3.0, 20), (50.0, 20)]:
        stats.record_call(ms, rows)
    for ms in range(1, 101):
        stats.record_row(float(ms))
    summary = stats.summary()
    assert (summary.calls, summary.rows) == (4, 80)
    assert summary.rows_per_call == 20.0
    assert (summary.call_p50_ms, summary.call_p99_ms) == (2.0, 50.0)
    assert (summary.row_p50_ms, summary.row_p99_ms) == (50.0, 99.0)


def test_only_recent_calls_count_for_percentiles_but_totals_keep_growing() -> None:
    stats = CallStats(recent=3)
    for ms in (100.0, 1.0, 1.0, 1.0):
        stats.record_call(ms, 2)
    summary = stats.summary()
    assert summary.call_p99_ms == 1.0
    assert (summary.calls, summary.rows) == (4, 8)


def test_summary_is_recomputed_after_new_records_only() -> None:
    stats = CallStats()
    stats.record_call(5.0, 1)
    first = stats.summary()
    assert stats.summary() is first
    stats.record_call(7.0, 3)
    assert stats.summary().rows_per_call == 2.0
