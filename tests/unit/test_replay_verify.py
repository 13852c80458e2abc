"""verify: exact comparison, and the causes it may and may not attribute a difference to."""

from __future__ import annotations

import dataclasses

import pytest

from bench.reference_features import all_features
from decisioning.trace import TRACE_SCHEMA_VERSION, view_blocks
from feature_views.definitions import ALL_VIEWS, CARD_FEATURES, CUSTOMER_FEATURES
from feature_views.model import HOUR_MS
from replay.verify import (
    DIFFERING,
    LATE,
    ORDER_DEPENDENT,
    check_definitions,
    compare,
    live_trace,
)
from tests.builders import SEC, T0, encode, txn

pytestmark = pytest.mark.unit

# Alice's two cards hash to different partitions; bob has one card.
A1 = [txn("a1", 10.0, at=T0, customer="alice"), txn("a1", 30.0, at=T0 + 2 * SEC, customer="alice")]
A2 = [txn("a2", 20.0, at=T0 + 1 * SEC, customer="alice")]
B1 = [txn("b1", 5.0, at=T0, customer="bob"), txn("b1", 6.0, at=T0 - 3 * SEC, customer="bob")]
PLACE = {e["event_id"]: (0, i) for i, e in enumerate(A1 + B1)} | {
    e["event_id"]: (1, i) for i, e in enumerate(A2)}
LIVE_ORDER = [A1[0], B1[0], A2[0], A1[1], B1[1]]  # interleaved by arrival
REPLAY_ORDER = [A1[0], B1[0], A1[1], B1[1], A2[0]]  # partition 0 first, then partition 1


def trace(event: dict, features: dict, late: bool = False, views=ALL_VIEWS) -> dict:
    partition, offset = PLACE[event["event_id"]]
    as_of = {v.name: {"as_of_event_time": event["event_time"]} for v in views}
    return {"schema_version": TRACE_SCHEMA_VERSION, "event_id": event["event_id"],
            "late": late, "event_time": event["event_time"],
            "input": {"partition": partition, "offset": offset, "raw": encode(event).decode()},
            "views": view_blocks(views, features, as_of)}


def row(event: dict, features: dict, late: bool = False) -> dict:
    return {"event_id": event["event_id"], "late": late, **features}


def live_and_replay(live_order=LIVE_ORDER, replay_order=REPLAY_ORDER):
    live, replay = all_features(live_order), all_features(replay_order)
    traces = {e["event_id"]: live_trace(trace(e, live[e["event_id"]])) for e in live_order}
    rows = [row(e, replay[e["event_id"]]) for e in replay_order]
    return traces, rows


def test_the_same_order_is_identical():
    traces, rows = live_and_replay(replay_order=LIVE_ORDER)
    report = compare(rows, traces, ALL_VIEWS)
    assert (report.compared, report.identical, report.diffs) == (5, 5, [])
    assert report.ok(strict=True)


def test_another_partition_interleaving_is_order_dependent_within_bounds():
    traces, rows = live_and_replay()
    report = compare(rows, traces, ALL_VIEWS)
    [diff] = report.diffs
    assert diff.event_id == A1[1]["event_id"] and diff.category == ORDER_DEPENDENT
    by_name = {f.name: f for f in diff.features}
    # live had a2's event before it; the replay read partition 0 first
    assert by_name["customer_txn_count_24h"].live == 3
    assert by_name["customer_txn_count_24h"].replay == 2
    assert by_name["customer_txn_count_24h"].bounds == (2, 3)
    assert report.ok() and not report.ok(strict=True)


def test_a_value_outside_the_interleaving_bounds_is_skew():
    traces, rows = live_and_replay()
    tampered = [dict(r) for r in rows]
    tampered[2]["customer_txn_count_24h"] = 4  # A1[1]: no interleaving gives 4
    report = compare(tampered, traces, ALL_VIEWS)
    assert [d.category for d in report.diffs] == [DIFFERING]
    assert not report.ok()


def test_a_card_feature_difference_is_always_skew():
    traces, rows = live_and_replay(replay_order=LIVE_ORDER)
    rows[0] = {**rows[0], "card_amount_sum_1h": rows[0]["card_amount_sum_1h"] + 0.01}
    report = compare(rows, traces, ALL_VIEWS)
    [diff] = report.diffs
    assert diff.category == DIFFERING
    assert [(f.name, f.live, f.replay) for f in diff.features] == [
        ("card_amount_sum_1h", 10.0, 10.01)]
    assert report.by_feature == {"card_amount_sum_1h": 1}


def test_late_events_are_reported_apart_and_a_late_flag_alone_is_not_a_difference():
    traces, rows = live_and_replay(replay_order=LIVE_ORDER)
    late_id = B1[1]["event_id"]
    traces[late_id] = dataclasses.replace(traces[late_id], late=True)
    report = compare(rows, traces, ALL_VIEWS)
    assert report.identical == 5 and report.late_flag_differs == 1
    rows[4] = {**rows[4], "card_txn_count_1h": 9.0}
    report = compare(rows, traces, ALL_VIEWS)
    assert [d.category for d in report.diffs] == [LATE]
    assert report.ok() and not report.ok(strict=True)


def test_rows_without_a_trace_are_counted_not_compared():
    traces, rows = live_and_replay(replay_order=LIVE_ORDER)
    del traces[A2[0]["event_id"]]
    report = compare(rows, traces, ALL_VIEWS)
    assert (report.compared, report.no_live_trace) == (4, 1)


def test_definition_changes_are_named():
    changed = dataclasses.replace(
        CARD_FEATURES,
        features=tuple(dataclasses.replace(f, window_ms=2 * HOUR_MS)
                       if f.name == "card_txn_count_1h" else f for f in CARD_FEATURES.features))
    traces, _ = live_and_replay()
    lines = check_definitions((changed, CUSTOMER_FEATURES), traces.values())
    assert lines == ["card_txn_count_1h: window_ms 3600000 (live) vs 7200000 (replay)"]
    assert check_definitions(ALL_VIEWS, traces.values()) == []


def test_a_verify_that_compared_no_event_fails():
    _, rows = live_and_replay()
    report = compare(rows, {}, ALL_VIEWS)
    assert (report.compared, report.no_live_trace) == (0, len(rows))
    assert not report.ok() and not report.ok(strict=True)
