"""The batched peer's pure parts: batching, the LRU over entity state, dead letters and
one model call per batch. No broker, no model server: a dict stands in for rocksdict."""

from __future__ import annotations

import json

import pytest

from bench.peers.batch_decisions import BatchDecider, InputRecord
from bench.peers.batched_service import next_batch
from bench.peers.entity_store import EntityCache, Progress, entity_key
from decisioning.rules import load_rules
from decisioning.trace import feature_values, is_complete
from feature_views.definitions import FEATURE_NAMES
from serving.predict_calls import ModelCallError
from tests.builders import MIN, T0, encode, txn
from tests.conftest import stack_config_for

pytestmark = pytest.mark.unit


# -- batching -------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_stops_at_its_size_limit():
    calls = []

    def consume(n, timeout):
        calls.append(n)
        return list(range(min(n, 300)))

    batch = next_batch(consume, 500, 0.02, FakeClock())
    assert len(batch) == 500
    assert calls == [500, 200]


def test_a_batch_stops_at_its_time_limit_with_what_came():
    clock = FakeClock()

    def consume(n, timeout):
        clock.now += timeout / 2 + 0.001  # each call waits, brings one record
        return ["r"]

    batch = next_batch(consume, 500, 0.02, clock)
    assert 1 <= len(batch) < 500
    assert clock.now >= 0.02


def test_an_idle_topic_gives_an_empty_batch():
    clock = FakeClock()

    def consume(n, timeout):
        clock.now += timeout
        return []

    assert next_batch(consume, 500, 0.02, clock) == []


# -- the LRU over entity state --------------------------------------------------------

def test_cache_loads_lazily_and_evicts_least_recently_used_once_clean():
    import pickle

    db = {entity_key("v", "a"): pickle.dumps([5, [(5, 1.0)], -1])}
    cache = EntityCache(db, capacity=2)
    assert cache.get("v", "a") == [5, [(5, 1.0)], -1]
    cache.get("v", "b")
    cache.get("v", "c")
    assert len(cache) == 3  # dirty entities are never evicted before their flush
    for k, v in cache.dirty_items():
        db[k] = v
    cache.mark_clean()
    assert len(cache) == 2
    cache.get("v", "a")  # evicted (least recent), read again from the store
    assert cache.loads == 4 and cache.hits == 0


def test_aborted_batch_changes_are_discarded():
    cache = EntityCache({}, capacity=10)
    cache.get("v", "a").__setitem__(0, 99)
    cache.discard_dirty()
    assert cache.get("v", "a") == [-1, [], -1]


# -- a batch through the decider ------------------------------------------------------

def record(value: bytes | None, offset: int, partition: int = 0, key: bytes | None = b"c1"):
    return InputRecord(key, value, "tx", partition, offset, T0 + MIN)


@pytest.fixture
def decider():
    config = stack_config_for("unit")
    return BatchDecider(config, load_rules(None), EntityCache({}, 100), Progress(),
                        {"name": "batched-service"})


def test_one_model_call_per_batch_and_a_decision_and_trace_per_valid_event(decider):
    calls = []

    def scorer(rows):
        calls.append(len(rows))
        return [0.1] * len(rows), 3, 1.5

    records = [record(encode(txn("c1", 10.0, at=T0 + i * 1000)), i) for i in range(5)]
    outputs = decider.decide_batch(records, scorer)
    assert calls == [5]
    topics = decider.config.kafka.topics
    decisions = [json.loads(o.value) for o in outputs if o.topic == topics.decisions]
    traces = [json.loads(o.value) for o in outputs if o.topic == topics.traces]
    assert len(decisions) == len(traces) == 5
    assert [d["path"] for d in decisions] == ["MODEL"] * 5
    assert all(is_complete(t, FEATURE_NAMES) for t in traces)
    assert [feature_values(t)["card_txn_count_1m"] for t in traces] == [1, 2, 3, 4, 5]
    assert decider.progress.offsets == {0: 5}


def test_malformed_records_become_dead_letters_of_the_jobs_shape(decider):
    records = [record(b"{not json", 0), record(None, 1, key=None),
               record(encode(txn("c1")), 2)]
    outputs = decider.decide_batch(records, lambda rows: ([0.2] * len(rows), 1, 1.0))
    dead = [json.loads(o.value) for o in outputs if o.topic == decider.config.kafka.topics.dlq]
    assert [d["reason"] for d in dead] == ["not_json", "not_json"]  # bad JSON, null value
    assert set(dead[0]) == {"reason", "detail", "stage", "raw", "topic", "partition",
                            "offset", "seen_at"}
    assert dead[0]["stage"] == "validate" and dead[0]["offset"] == 0
    assert dead[0]["raw"] == "{not json"
    assert sum(o.topic == decider.config.kafka.topics.decisions for o in outputs) == 1


def test_a_failed_call_leaves_every_row_to_the_rules(decider):
    def scorer(rows):
        raise ModelCallError("timeout", "DEADLINE_EXCEEDED: slow")

    outputs = decider.decide_batch([record(encode(txn("c1")), 0)], scorer)
    decision = json.loads(outputs[0].value)
    assert decision["path"] == "RULES_ONLY" and decision["fallback_reason"] == "timeout"
    trace = json.loads(outputs[1].value)
    assert trace["model"]["response"] is None and trace["model"]["fallback_reason"] == "timeout"


# -- the bench reports ours ÷ it --------------------------------------------------------

def test_the_report_shows_ours_over_the_batched_peer():
    from bench.report import goal_rows, system_rows, throughput_ratios

    systems = {"ours": {"peak_decisions_per_s": 1000.0},
               "batched": {"peak_decisions_per_s": 2500.0}}
    assert throughput_ratios(systems)["batched"] == 0.4
    assert any("batched Python service" in row and "0.40" in row for row in goal_rows(systems))
    assert any(row.startswith("| batched Python service") for row in system_rows(systems))
