"""The replay job on a local mini cluster, history injected as a collection.

The same history also runs through the live topology (no model server: rules only), so
verify can compare the replay with real traces, and fail when a definition changes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import zlib
from collections import Counter
from typing import Any

import pytest
from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment

from bench.reference_features import all_features
from decisioning.rules import load_rules
from feature_views.definitions import ALL_VIEWS, CARD_FEATURES, CUSTOMER_FEATURES, FEATURE_NAMES
from feature_views.model import MINUTE_MS
from feature_views.rows import row_columns
from flink_jobs.decision_job import job_configuration
from flink_jobs.replay_job import DEAD, build_replay, replay_configuration
from flink_jobs.topology import build_topology
from replay.dataset import build_table
from replay.labels import labels_as_of
from replay.local_engine import LocalReplay
from replay.offsets import ResolvedRange
from replay.verify import DIFFERING, compare, parse_traces
from rtd_core.config import load_config
from tests.builders import DAY, MIN, SEC, T0, encode, label, txn
from tests.pipeline.collection_source import collection_source
from tests.replay_histories import PARTITIONS as SHARED_PARTITIONS
from tests.replay_histories import delivery
from tests.replay_histories import history as shared_history

pytestmark = pytest.mark.pipeline

PARTITIONS = 2
CONFIG = load_config(None, serving={"port": 1, "timeout_ms": 200},
                     flink={"parallelism": 1, "bundle_time_ms": 5},
                     kafka={"partitions": PARTITIONS})


def history() -> tuple[list[dict[str, Any]], list[bytes]]:
    """Events in arrival order: a card-testing burst, a geo jump, a customer with cards
    in both partitions, and an event a few seconds out of order (not late)."""
    events = [txn("burst", 1.0 + i, at=T0 + i * 8 * SEC, merchant=f"m{i}", channel="ecom",
                  customer="alice") for i in range(6)]
    events += [txn("travel", 50.0, at=T0 + 1 * MIN, country="US", customer="alice"),
               txn("travel", 70.0, at=T0 + 2 * MIN + 30 * SEC, country="FR", customer="alice"),
               txn("ooo", 5.0, at=T0 + 3 * MIN + 30 * SEC, customer="carol"),
               txn("ooo", 6.0, at=T0 + 3 * MIN + 27 * SEC, customer="carol"),
               txn("bob1", 2500.0, at=T0 + 4 * MIN, customer="bob"),
               txn("bob2", 2600.0, at=T0 + 4 * MIN + 20 * SEC, customer="bob"),
               txn("bob1", 30.0, at=T0 + 4 * MIN + 40 * SEC, customer="bob")]
    malformed = [b"{not json", encode({**txn("bad"), "amount": -1})]
    return events, malformed


def partition_of(card: bytes) -> int:
    return zlib.crc32(card) % PARTITIONS


def raw_rows(events: list[dict[str, Any]], malformed: list[bytes]) -> list[Row]:
    """Kafka-like rows: partition by card, offsets per partition in arrival order."""
    offsets: Counter[int] = Counter()
    rows = []
    for key, value in [(e["card_id"].encode(), encode(e)) for e in events] + [
            (b"bad", m) for m in malformed]:
        p = partition_of(key)
        rows.append(Row(key, value, "transactions", p, offsets[p], T0 + DAY + len(rows),
                        None))
        offsets[p] += 1
    return rows


def environment(conf: Any) -> StreamExecutionEnvironment:
    conf.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    return env


def replay(rows: list[Row], views=(CARD_FEATURES, CUSTOMER_FEATURES),
           rows_from: dict[int, int] | None = None) -> tuple[list[tuple], Counter[str]]:
    env = environment(replay_configuration(CONFIG, bundle_size=1000, bundle_time_ms=50))
    raw = collection_source(env, rows)
    batches = build_replay(raw, CONFIG, views, rows_from or {}, batch_size=4)
    out: list[tuple] = []
    dead: Counter[str] = Counter()
    for batch in batches.execute_and_collect():
        assert len(batch) <= 4
        for tag, item in batch:
            if tag == DEAD:
                dead[item] += 1
            else:
                out.append(item)
    return out, dead


@pytest.fixture(scope="module")
def replayed():
    events, malformed = history()
    rows = raw_rows(events, malformed)
    # the first record of partition 0 is warm-up: it builds state but yields no row
    return events, rows, replay(rows, rows_from={0: 1})


def test_replay_rows_carry_the_reference_features_and_point_in_time_labels(replayed):
    events, _rows, (out, dead) = replayed
    warmup_id = next(e["event_id"] for e in events if partition_of(e["card_id"].encode()) == 0)
    expected = all_features(events)  # one reader: processing order = arrival order
    labels, _ = labels_as_of(
        [json.dumps(label(e["event_id"], e["card_id"] == "burst", at=e["event_time"] + MIN))
         for e in events], cutoff_ms=T0 + 4 * MIN)
    table = build_table(out, labels, ALL_VIEWS)
    got = {r["event_id"]: r for r in table.to_pylist()}

    assert sorted(got) == sorted(e["event_id"] for e in events if e["event_id"] != warmup_id)
    assert dead == Counter({"not_json": 1, "amount_out_of_range": 1})
    for event in events:
        if event["event_id"] == warmup_id:
            continue
        r = got[event["event_id"]]
        assert {n: r[n] for n in FEATURE_NAMES} == expected[event["event_id"]], event
        assert all(r[n + "_as_of"] == event["event_time"] for n in FEATURE_NAMES)
        assert r["event_time"] == event["event_time"] and not r["late"]
        # a label is known iff it was given at or before the cutoff
        known = event["event_time"] + MIN <= T0 + 4 * MIN
        assert (r["label_known"], r["is_fraud"]) == (
            (known, event["card_id"] == "burst") if known else (False, None))
    assert set(row_columns(ALL_VIEWS)) < set(table.schema.names)


def test_verify_finds_no_difference_to_live_traces_and_catches_a_changed_window(replayed):
    events, rows, (out, _) = replayed
    env = environment(job_configuration(CONFIG))
    outputs = build_topology(collection_source(env, rows), CONFIG, load_rules())
    # Every output is read, as the job sinks them: PyFlink fails a record sent to a side
    # output that nothing reads.
    out_row = Types.TUPLE([Types.STRING(), Types.STRING()])
    collected = list(outputs.traces.map(lambda r: ("trace", r[1].decode()), output_type=out_row)
                     .union(outputs.dead_letters.map(lambda r: ("dead", r[1].decode()),
                                                     output_type=out_row))
                     .execute_and_collect())
    traces = parse_traces([v for kind, v in collected if kind == "trace"])
    assert len(traces) == len(events)

    same = compare(build_table(out, {}, ALL_VIEWS).to_pylist(), traces, ALL_VIEWS)
    assert same.compared == len(events) - 1 and same.identical == same.compared
    assert same.ok(strict=True)

    # A card view whose 1-minute count looks back 2 minutes, passed in as data: the
    # repository's definitions stay as they are.
    wider = dataclasses.replace(CARD_FEATURES, features=tuple(
        dataclasses.replace(f, window_ms=2 * MINUTE_MS) if f.name == "card_txn_count_1m" else f
        for f in CARD_FEATURES.features))
    changed_out, _ = replay(rows, views=(wider, CUSTOMER_FEATURES))
    changed = compare(build_table(changed_out, {}, (wider, CUSTOMER_FEATURES)).to_pylist(),
                      traces, (wider, CUSTOMER_FEATURES))
    assert not changed.ok()
    assert changed.definition_mismatches == [
        "card_txn_count_1m: window_ms 60000 (live) vs 120000 (replay)"]
    differing = changed.of(DIFFERING)
    assert differing and set(changed.by_feature) == {"card_txn_count_1m"}
    # the travel card's second event, 90 s after its first, is where a 2-minute window
    # differs from the 1-minute one
    travel_second = events[7]["event_id"]
    diff = next(d for d in differing if d.event_id == travel_second)
    assert [(f.name, f.live, f.replay) for f in diff.features] == [
        ("card_txn_count_1m", 1, 2.0)]


def test_the_local_engine_gives_the_flink_job_s_rows():
    """Both engines over one history of four partitions (out of order, near the lateness
    bound, late, malformed) in one delivery order: every event neither flags late has
    the same row; so do the dead letters. (The engines' watermarks differ by design:
    this collection source has one watermark over the interleaved stream, the local
    engine the contract's per-partition one; what an event may see differs only for
    late events.)"""
    per_partition = shared_history(seed=51, n=400, ahead_ms=0)
    records = delivery(per_partition, seed=-1, fetch=0)
    config = load_config(None, serving={"port": 1, "timeout_ms": 200},
                         flink={"parallelism": 1, "bundle_time_ms": 5},
                         kafka={"partitions": SHARED_PARTITIONS})
    env = environment(replay_configuration(config, bundle_size=1000, bundle_time_ms=50))
    raw = collection_source(env, [Row(r.key, r.value, "transactions", r.partition, r.offset,
                                      r.timestamp_ms, None) for r in records])
    flink_rows: dict[str, tuple] = {}
    flink_dead: Counter[str] = Counter()
    for batch in build_replay(raw, config, ALL_VIEWS, {}, batch_size=100).execute_and_collect():
        for tag, item in batch:
            if tag == DEAD:
                flink_dead[item] += 1
            else:
                flink_rows[item[0]] = item
    local = LocalReplay(config, ALL_VIEWS, ResolvedRange(
        "transactions", read_from=dict.fromkeys(per_partition, 0),
        rows_from=dict.fromkeys(per_partition, 0),
        read_to={p: len(v) for p, v in per_partition.items()}))
    for record in records:
        local.process(record)
    local_rows = {r[0]: r for r in local.rows}

    assert local.dead == flink_dead and sum(flink_dead.values()) > 0
    assert sorted(local_rows) == sorted(flink_rows)
    columns = row_columns(ALL_VIEWS)
    compared = [i for i, name in enumerate(columns) if not name.endswith("_watermark")
                and name != "late"]
    late_at = columns.index("late")
    both_on_time = [e for e in flink_rows
                    if not flink_rows[e][late_at] and not local_rows[e][late_at]]
    for event_id in both_on_time:
        assert [local_rows[event_id][i] for i in compared] == \
            [flink_rows[event_id][i] for i in compared], event_id
    assert len(both_on_time) > 0.8 * len(flink_rows)
    assert any(r[late_at] for r in local_rows.values())  # lateness was exercised
