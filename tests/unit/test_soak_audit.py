"""The soak benchmark's exactly-once audit and its per-window rate."""

from __future__ import annotations

import pytest

from bench.soak import audit, per_window_rate

pytestmark = pytest.mark.unit


def test_audit_of_one_output_per_id_is_exactly_once():
    result = audit(["a", "b", "c"], ["c", "a", "b"])
    assert result.exactly_once
    assert (result.expected, result.received) == (3, 3)


def test_audit_counts_missing_repeated_and_unexpected_outputs():
    result = audit(["a", "b", "c"], ["a", "a", "a", "b", "z"])
    assert not result.exactly_once
    assert (result.missing, result.duplicated, result.unexpected) == (1, 2, 1)
    assert result.received == 5


def test_audit_of_nothing_received_misses_everything():
    result = audit(["a", "b"], [])
    assert (result.missing, result.exactly_once) == (2, False)


def test_per_window_rate_buckets_from_the_first_time_and_keeps_empty_windows():
    times = [1_000, 1_500, 9_999, 31_000]  # windows of 10 s from t=1,000
    assert per_window_rate(times, 10) == [(0, 0.3), (10, 0.0), (20, 0.0), (30, 0.1)]
    assert per_window_rate([], 10) == []
