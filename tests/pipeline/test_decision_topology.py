"""The whole topology on a local Flink mini cluster, ends injected as collections.

No model server listens on the configured port, so every decision takes the
rules-only path with fallback ``unavailable``; the features of every decision are
checked against the independent reference.
"""

from __future__ import annotations

import json
import sys

import pytest
from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment

from bench.reference_features import all_features, customer_bounds
from decisioning.decision import ModelResult, decide
from decisioning.rules import load_rules
from decisioning.trace import feature_values, is_complete, trace_event, trace_rules
from feature_views.definitions import FEATURE_NAMES
from flink_jobs.decision_job import job_configuration
from flink_jobs.topology import build_topology
from rtd_core.config import load_config
from tests.builders import DAY, HOUR, MIN, SEC, T0, encode, txn
from tests.pipeline.collection_source import collection_source

pytestmark = pytest.mark.pipeline

OUT_ROW = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING()])


def scenario() -> tuple[list[dict], list[bytes]]:
    events = []
    # card-testing burst: 6 small ecom payments in 50 s, many merchants
    for i in range(6):
        events.append(txn("burst", 1.0 + i, at=T0 + i * 10 * SEC, merchant=f"m{i}",
                          channel="ecom", customer="alice"))
    # geo jump within 10 minutes, on a second card of the same customer
    events.append(txn("travel", 50.0, at=T0 + 2 * MIN, country="US", customer="alice"))
    events.append(txn("travel", 60.0, at=T0 + 7 * MIN, country="FR", customer="alice"))
    # exposure: large amounts over hours on one customer's cards
    for i in range(4):
        events.append(txn(f"big{i % 2}", 1800.0, at=T0 + i * HOUR, customer="bob"))
    # out of order: arrives after a later event of the same card
    events.append(txn("ooo", 5.0, at=T0 + 30 * SEC, customer="carol"))
    events.append(txn("ooo", 6.0, at=T0 + 10 * SEC, customer="carol"))
    # a card seen under a second customer: a separate card history there (contract)
    events.append(txn("moved", 8.0, at=T0 + 4 * MIN, customer="erin"))
    events.append(txn("moved", 9.0, at=T0 + 4 * MIN + 10 * SEC, customer="erin"))
    events.append(txn("moved", 10.0, at=T0 + 4 * MIN + 20 * SEC, customer="frank"))
    # no channel: optional, so a valid event the model input encodes like any other
    no_channel = txn("quiet", 7.0, at=T0 + 3 * MIN, customer="dave")
    del no_channel["channel"]
    events.append(no_channel)
    malformed = [b"{not json", encode({**txn("bad"), "amount": -1}),
                 encode({**txn("bad"), "channel": "phone"}),
                 # far ahead of its record timestamp (T0): a dead letter, no watermark move
                 encode(txn("future", at=T0 + 30 * DAY)),
                 b'{"a":' * 3000 + b"1" + b"}" * 3000]
    return events, malformed


@pytest.mark.parametrize("mode, parallelism, last_score_ms", [
    ("thread", 1, 0), ("process", 1, 0), ("thread", 2, 0),
    ("thread", 1, 600_000),  # the opt-in last-score rung: its own operator, keyed by card
])
def test_topology_decides_every_valid_event_with_reference_features(tmp_path, mode,
                                                                      parallelism,
                                                                      last_score_ms):
    events, malformed = scenario()
    config = load_config(None, serving={"port": 1, "timeout_ms": 200,
                                        "last_score_max_age_ms": last_score_ms},
                         flink={"parallelism": parallelism, "bundle_time_ms": 5},
                         job={"execution_mode": mode}, kafka={"partitions": 1})
    conf = job_configuration(config)
    conf.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(parallelism)
    rows = [Row(e["card_id"].encode(), encode(e), "transactions", 0, i, T0 + DAY, None)
            for i, e in enumerate(events)]
    rows += [Row(b"bad", m, "transactions", 1, i, T0, None) for i, m in enumerate(malformed)]
    raw = collection_source(env, rows)
    out = build_topology(raw, config, load_rules())
    tagged = out.decisions.map(lambda r: Row("decision", r[0], r[1].decode()), output_type=OUT_ROW).union(
        out.traces.map(lambda r: Row("trace", r[0], r[1].decode()), output_type=OUT_ROW),
        out.dead_letters.map(lambda r: Row("dlq", r[0], r[1].decode()), output_type=OUT_ROW),
    )
    results = list(tagged.execute_and_collect())

    decisions = {json.loads(v)["event_id"]: json.loads(v) for kind, _, v in results
                 if kind == "decision"}
    traces = {json.loads(v)["event_id"]: json.loads(v) for kind, _, v in results if kind == "trace"}
    dead = [json.loads(v) for kind, _, v in results if kind == "dlq"]

    assert sorted(decisions) == sorted(e["event_id"] for e in events)
    assert sorted(traces) == sorted(decisions)
    assert sorted(d["reason"] for d in dead) == [
        "amount_out_of_range", "event_time_in_future", "invalid_channel", "not_json", "too_deep"]
    assert all(d["topic"] == "transactions" and d["partition"] == 1 for d in dead)

    expected = all_features(events)
    for event_id, trace in traces.items():
        decision = decisions[event_id]
        assert is_complete(trace, FEATURE_NAMES)
        got = feature_values(trace)
        if parallelism == 1:
            assert got == expected[event_id], event_id
        else:
            # A customer's cards reach its operator over several channels, in an order
            # nobody records: card features exact, customer features within bounds.
            card = {n: v for n, v in expected[event_id].items() if n.startswith("card_")}
            assert {n: got[n] for n in card} == card, event_id
            e = trace_event(trace)
            mine = [x for x in events if x["customer_id"] == e["customer_id"]]
            before = mine[:mine.index(next(x for x in mine if x["event_id"] == event_id))]
            certain = [x for x in before if x["card_id"] == e["card_id"]]
            possible = [x for x in mine if x["card_id"] != e["card_id"]]
            for name, (low, high) in customer_bounds(certain, possible, e).items():
                assert low <= got[name] <= high, (event_id, name)
        assert decision["path"] == "RULES_ONLY" and decision["fallback_reason"] == "unavailable"
        # the outcome follows from what the trace recorded
        replayed = decide(trace_event(trace), trace_rules(trace),
                          ModelResult(None, None, "unavailable"), decline_at=0.9,
                          review_at=0.6, late=decision["late"],
                          decided_at=decision["decided_at"])
        assert replayed == decision

    burst = [e["event_id"] for e in events if e["card_id"] == "burst"]
    assert decisions[burst[4]]["outcome"] == "DECLINE"  # 5th in a minute: VELOCITY_1M
    assert "VELOCITY_1M" in decisions[burst[4]]["reasons"]
    travel_fr = [e["event_id"] for e in events if e["card_id"] == "travel"][1]
    assert decisions[travel_fr]["reasons"] == ["GEO_JUMP_10M"]
    last_big = [e["event_id"] for e in events if e["customer_id"] == "bob"][3]
    assert "EXPOSURE_24H" in decisions[last_big]["reasons"]
    moved = [e["event_id"] for e in events if e["card_id"] == "moved"]
    counts = [feature_values(traces[i])["card_txn_count_1m"]
              for i in moved]
    assert counts == [1, 2, 1]  # frank's first event with the card starts its history
