"""The local replay engine on several partitions: out-of-order, late, malformed and
warm-up records, delivered in hostile interleavings, against the independent reference
(bench/reference_features.py) and a naive re-statement of the contract's watermark."""

from __future__ import annotations

from typing import Any

import pytest

from bench.reference_features import all_features
from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES
from feature_views.rows import row_columns
from replay.local_engine import LocalReplay, PartitionWatermarks, SourceRecord, run_local
from replay.offsets import ResolvedRange
from rtd_core.config import load_config
from tests.builders import HOUR, SEC, T0, encode, txn
from tests.replay_histories import PARTITIONS, delivery, history, partition_of

pytestmark = pytest.mark.unit

CONFIG = load_config(None)
DELAY, LATENESS = CONFIG.job.watermark_delay_ms, CONFIG.job.allowed_lateness_ms
COLUMNS = row_columns(ALL_VIEWS)
def resolved(per_partition, rows_from: dict[int, int] | None = None) -> ResolvedRange:
    return ResolvedRange("transactions", read_from=dict.fromkeys(per_partition, 0),
                         rows_from={p: (rows_from or {}).get(p, 0) for p in per_partition},
                         read_to={p: len(v) for p, v in per_partition.items()})


def naive_watermarks(records: list[SourceRecord], lengths: dict[int, int]) -> list[int | None]:
    """The contract's watermark before each record, recomputed from scratch: the minimum
    over partitions not yet read to their end of (highest valid event time delivered -
    delay), none until each of them has delivered a valid event; never moving back."""
    import json

    out: list[int | None] = []
    best: int | None = None
    for i in range(len(records)):
        seen = records[:i]
        latest: dict[int, int] = {}
        for r in seen:
            try:
                doc = json.loads(r.value)
                ok = doc.get("amount", 0) > 0
            except ValueError:
                ok = False
            if ok:
                latest[r.partition] = max(latest.get(r.partition, doc["event_time"]),
                                          doc["event_time"])
        active = {p for p in lengths
                  if not any(r.partition == p and r.offset == lengths[p] - 1 for r in seen)}
        if active and active <= set(latest):
            floor = min(latest[p] for p in active) - DELAY
            best = floor if best is None else max(best, floor)
        out.append(best)
    return out


def run(records: list[SourceRecord], per_partition, rows_from=None) -> LocalReplay:
    replay = LocalReplay(CONFIG, ALL_VIEWS, resolved(per_partition, rows_from))
    for record in records:
        replay.process(record)
    return replay


@pytest.mark.parametrize("seed,fetch", [(-1, 0), (0, 0), (1, 1), (2, 7), (3, 50)],
                         ids=["as-made", "backlog-per-partition", "one-by-one", "fetches-of-7",
                              "fetches-of-50"])
def test_every_event_not_late_has_the_reference_features_and_late_follows_the_watermark(
        seed, fetch):
    per_partition = history(seed=seed + 10)
    records = delivery(per_partition, seed, fetch)
    replay = run(records, per_partition)
    rows = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in replay.rows}

    events = [e for e in (_event(r) for r in records) if e is not None]
    assert sorted(rows) == sorted(e["event_id"] for e in events)
    expected = all_features(events)  # processing order = delivery order
    marks = naive_watermarks(records, {p: len(v) for p, v in per_partition.items()})
    late = 0
    for record, watermark in zip(records, marks, strict=True):
        event = _event(record)
        if event is None:
            continue
        row = rows[event["event_id"]]
        is_late = watermark is not None and event["event_time"] < watermark - LATENESS
        assert row["late"] == is_late, (event, watermark)
        assert row["card_features_watermark"] == watermark
        if is_late:
            late += 1
            continue
        assert {n: row[n] for n in FEATURE_NAMES} == expected[event["event_id"]], event
    assert late > 0 and late == replay.late  # the history does exercise lateness
    assert sum(replay.dead.values()) == sum(1 for r in records if _event(r) is None) > 0


def test_card_features_do_not_depend_on_how_partitions_interleave():
    per_partition = history(seed=21)
    by_order = []
    for seed, fetch in [(0, 0), (5, 1), (6, 13)]:
        replay = run(delivery(per_partition, seed, fetch), per_partition)
        by_order.append({r[0]: dict(zip(COLUMNS, r, strict=True)) for r in replay.rows})
    card_names = [n for n in FEATURE_NAMES if n.startswith("card_")]
    for event_id, row in by_order[0].items():
        if any(rows[event_id]["late"] for rows in by_order):
            continue
        assert all({n: rows[event_id][n] for n in card_names} ==
                   {n: row[n] for n in card_names} for rows in by_order[1:]), event_id


def test_the_contract_s_worked_example():
    """Four partitions; P0's backlog up to 10:00 is read first, then P1..P3 up to
    08:00. e (P1, 07:59:30) is not late; f (P2, 06:00) is about 2 h behind: late."""
    ten, eight = T0 + 10 * HOUR, T0 + 8 * HOUR
    cards = {p: next(f"c{i}" for i in range(200) if partition_of(f"c{i}") == p)
             for p in range(PARTITIONS)}
    per_partition = {0: [txn(cards[0], 1.0, at=ten - 60 * SEC + i * SEC) for i in range(61)]}
    for p in (1, 2, 3):
        per_partition[p] = [txn(cards[p], 1.0, at=eight - 60 * SEC + i * SEC)
                            for i in range(61)]
    e = txn(cards[1], 2.0, at=eight - 30 * SEC)
    f = txn(cards[2], 3.0, at=T0 + 6 * HOUR)
    per_partition[1].append(e)
    per_partition[2].append(f)
    for p in (0, 1, 2, 3):  # one more each, so no partition is done before e and f
        per_partition[p].append(txn(cards[p], 1.0, at=(ten if p == 0 else eight) + SEC))
    encoded = {p: [(ev["card_id"].encode(), encode(ev), 0) for ev in evs]
               for p, evs in per_partition.items()}
    records = [SourceRecord(k, v, p, o, ten + HOUR) for p in (0, 1, 2, 3)
               for o, (k, v, _) in enumerate(encoded[p][:61])]
    records += [SourceRecord(*encoded[1][61][:2], 1, 61, ten + HOUR),
                SourceRecord(*encoded[2][61][:2], 2, 61, ten + HOUR)]
    replay = run(records, encoded)
    rows = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in replay.rows}
    assert rows[e["event_id"]]["card_features_watermark"] == eight - DELAY
    assert rows[e["event_id"]]["late"] is False
    assert rows[f["event_id"]]["late"] is True
    assert not any(r["late"] for i, r in rows.items() if i not in (f["event_id"],))


def test_warm_up_builds_state_without_rows_and_out_of_range_records_are_ignored():
    per_partition = history(seed=31, n=200)
    records = delivery(per_partition, 4, 5)
    rows_from = {p: len(v) // 2 for p, v in per_partition.items()}
    full = {r[0]: r for r in run(records, per_partition).rows}
    # a record past the range's end (the topic grew after it was resolved)
    extra = SourceRecord(b"x", encode(txn("late-comer", at=T0)), 0, len(per_partition[0]), None)
    part = run(records + [extra], per_partition, rows_from)
    got = {r[0]: r for r in part.rows}
    in_range = {_event(r)["event_id"] for r in records
                if _event(r) is not None and r.offset >= rows_from[r.partition]}
    assert set(got) == in_range
    assert all(got[i] == full[i] for i in got)  # warm-up gave the same state


def test_run_local_drives_the_engine_and_ends_a_partition_at_its_end_marker():
    per_partition = history(seed=41, n=100)
    records = delivery(per_partition, 2, 3)
    rng = resolved(per_partition)
    # read_committed: partition 1's last offset is a transaction marker, never a record
    rng.read_to[1] += 1
    fed = records + [SourceRecord(None, None, 1, rng.read_to[1], None, end=True)]
    calls = []
    rows, _dead, took, steady, cpu = run_local(CONFIG, ALL_VIEWS, rng, lambda a, b: calls.append(a),
                                         records=lambda pending: iter(fed))
    assert len(rows) == sum(1 for r in records if _event(r) is not None)
    assert calls[-1] == len(rows) and took >= steady >= 0 and cpu > 0


def test_partition_watermarks_gate_and_drop_out():
    clock = PartitionWatermarks([0, 1], delay_ms=5)
    clock.observe(0, 100, valid=True)
    assert clock.watermark is None  # partition 1 has delivered nothing
    clock.observe(1, 500, valid=False)  # a rejected record: a row time, not the gate
    assert clock.watermark is None
    clock.observe(1, 50, valid=True)
    assert clock.watermark == 95  # min(100, 500) - 5
    clock.finish(0)
    assert clock.watermark == 495
    clock.observe(1, 10, valid=True)
    assert clock.watermark == 495  # never back


def _event(record: SourceRecord) -> dict[str, Any] | None:
    import json

    try:
        doc = json.loads(record.value)
    except ValueError:
        return None
    return doc if doc.get("amount", 0) > 0 else None
