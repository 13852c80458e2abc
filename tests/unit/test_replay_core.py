"""Replay's pure parts: range resolution, point-in-time labels, rows and the dataset."""

from __future__ import annotations

import json

import pytest

from feature_views.definitions import ALL_VIEWS, CARD_FEATURES, CUSTOMER_FEATURES, FEATURE_NAMES
from feature_views.rows import METADATA_KEY, row_columns, row_values, utc_date, view_definitions
from replay.dataset import (
    build_table,
    read_manifest,
    read_table,
    views_from_manifest,
    write_dataset,
)
from replay.labels import Label, labels_as_of
from replay.offsets import (
    ReplayRange,
    ResolvedRange,
    default_warmup_ms,
    parse_offsets,
    resolve_offsets,
)
from tests.builders import DAY, HOUR, MIN, T0, label, txn

pytestmark = pytest.mark.unit

LOW = {0: 0, 1: 10}
HIGH = {0: 100, 1: 60}


def at_time_of(appended: dict[int, list[int]]):
    """at_time() over per-partition append times (offset = low + index)."""

    def at_time(ms: int) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        for p, times in appended.items():
            later = [i for i, t in enumerate(times) if t >= ms]
            out[p] = LOW[p] + later[0] if later else None
        return out

    return at_time


# partition 0: offsets 0..99 appended at T0 + offset s; partition 1: 10..59 at T0 + 2*i s
APPENDED = {0: [T0 + i * 1000 for i in range(100)], 1: [T0 + i * 2000 for i in range(50)]}


def test_whole_topic_by_default():
    read_from, rows_from, read_to = resolve_offsets(
        low=LOW, high=HIGH, request=ReplayRange(), warmup_ms=0, at_time=at_time_of(APPENDED))
    assert read_from == LOW and rows_from == LOW and read_to == HIGH


def test_time_range_resolves_per_partition_with_warmup_before_it():
    request = ReplayRange(since_ms=T0 + 40_000, until_ms=T0 + 80_000)
    read_from, rows_from, read_to = resolve_offsets(
        low=LOW, high=HIGH, request=request, warmup_ms=30_000, at_time=at_time_of(APPENDED))
    assert rows_from == {0: 40, 1: 30} and read_to == {0: 80, 1: 50}
    assert read_from == {0: 10, 1: 15}  # appended at/after since - warm-up


def test_offsets_bound_the_range_and_unknown_partitions_are_refused():
    request = ReplayRange(from_offsets={0: 20}, to_offsets={1: 40})
    read_from, rows_from, read_to = resolve_offsets(
        low=LOW, high=HIGH, request=request, warmup_ms=0, at_time=at_time_of(APPENDED))
    assert rows_from == {0: 20, 1: 10} and read_to == {0: 100, 1: 40}
    assert read_from == LOW  # explicit offsets warm up from the start of the topic
    with pytest.raises(ValueError, match="partition 7"):
        resolve_offsets(low=LOW, high=HIGH, request=ReplayRange(to_offsets={7: 1}),
                        warmup_ms=0, at_time=at_time_of(APPENDED))


def test_since_after_the_end_gives_an_empty_range():
    request = ReplayRange(since_ms=T0 + 10 * DAY)
    read_from, rows_from, read_to = resolve_offsets(
        low=LOW, high=HIGH, request=request, warmup_ms=0, at_time=at_time_of(APPENDED))
    resolved = ResolvedRange("t", read_from, rows_from, read_to)
    assert resolved.records_in_range == 0 and resolved.warmup_records == 0


def test_source_options_name_every_partition_in_flink_syntax():
    resolved = ResolvedRange("t", {0: 5, 1: 10}, {0: 7, 1: 12}, {0: 9, 1: 20})
    assert resolved.source_options() == {
        "scan.startup.specific-offsets": "partition:0,offset:5;partition:1,offset:10",
        "scan.bounded.specific-offsets": "partition:0,offset:9;partition:1,offset:20",
    }
    assert resolved.records_in_range == 2 + 8 and resolved.warmup_records == 2 + 2


def test_parse_offsets():
    assert parse_offsets("0:120, 1:98") == {0: 120, 1: 98}
    with pytest.raises(ValueError):
        parse_offsets("0=120")


def test_default_warmup_covers_the_longest_window_and_lateness():
    assert default_warmup_ms(ALL_VIEWS) == 30 * DAY + 5_000 + 60_000


def test_labels_known_at_cutoff_take_the_latest_known_one():
    values = [json.dumps(v) for v in (
        label("e1", False, at=T0),
        label("e1", True, at=T0 + HOUR),  # chargeback: overturns the first label
        label("e2", True, at=T0 + 2 * HOUR),  # known only after the cutoff
        label("e3", False, at=T0 + HOUR),
        label("e3", True, at=T0 + 3 * HOUR),  # the overturn comes after the cutoff
    )] + ["{not json", json.dumps({"event_id": "e4", "is_fraud": "yes", "labeled_at": 1})]
    known, stats = labels_as_of(values, cutoff_ms=T0 + HOUR)
    assert known == {"e1": Label(True, T0 + HOUR), "e3": Label(False, T0 + HOUR)}
    assert (stats.read, stats.after_cutoff, stats.superseded, stats.malformed) == (7, 2, 1, 2)
    # the boundary: labeled_at == cutoff is known
    known, _ = labels_as_of(values[:1], cutoff_ms=T0)
    assert known == {"e1": Label(False, T0)}


def record(event: dict, features: dict, partition: int = 0, offset: int = 0,
           late: bool = False) -> dict:
    event = {**event, "event_time": int(event["event_time"])}
    return {
        "source": {"partition": partition, "offset": offset, "kafka_timestamp": T0 + 5},
        "event": event,
        "features": features,
        "as_of": {v.name: {"as_of_event_time": event["event_time"], "watermark": T0 - 5}
                  for v in ALL_VIEWS},
        "late": late,
    }


def test_row_values_follow_the_column_order_with_as_of_times():
    features = {name: float(i) for i, name in enumerate(FEATURE_NAMES)}
    e = txn("c1", 12.5, at=T0 + MIN)
    row = dict(zip(row_columns(ALL_VIEWS), row_values(**record(e, features, 3, 42), views=ALL_VIEWS),
                   strict=True))
    assert row["event_id"] == e["event_id"] and row["amount"] == 12.5
    assert (row["kafka_partition"], row["kafka_offset"], row["late"]) == (3, 42, False)
    for name in FEATURE_NAMES:
        assert row[name] == features[name]
        assert row[name + "_as_of"] == T0 + MIN
    assert row["card_features_watermark"] == T0 - 5


def test_dataset_round_trip_is_partitioned_by_date_and_labelled(tmp_path):
    features = {name: 1.0 for name in FEATURE_NAMES}
    events = [txn("c1", at=T0 + DAY), txn("c2", at=T0), txn("c3", at=T0 + 2 * MIN)]
    rows = [row_values(**record(e, features, 0, i), views=ALL_VIEWS) for i, e in enumerate(events)]
    labels = {events[0]["event_id"]: Label(True, T0 + DAY + MIN),
              events[1]["event_id"]: Label(False, T0 + MIN)}
    manifest = {"views": view_definitions(ALL_VIEWS), "cutoff_ms": T0 + 2 * DAY}
    table = build_table(rows, labels, ALL_VIEWS, metadata=manifest)
    files = write_dataset(table, tmp_path / "ds", manifest)
    assert sorted(f.parent.name for f in files) == [f"event_date={utc_date(T0)}",
                                                    f"event_date={utc_date(T0 + DAY)}"]
    back = read_table(tmp_path / "ds").sort_by("event_time").to_pylist()
    assert [r["event_id"] for r in back] == [events[1]["event_id"], events[2]["event_id"],
                                             events[0]["event_id"]]
    assert [(r["label_known"], r["is_fraud"]) for r in back] == [(True, False), (False, None),
                                                                 (True, True)]
    assert json.loads(table.schema.metadata[METADATA_KEY])["cutoff_ms"] == T0 + 2 * DAY
    assert views_from_manifest(read_manifest(tmp_path / "ds")) == (CARD_FEATURES,
                                                                   CUSTOMER_FEATURES)
    with pytest.raises(FileExistsError):
        write_dataset(table, tmp_path / "ds", manifest)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
