"""The decide stage's one tagged output: (DECISION, card_id, decision), (TRACE,
decision_id, trace) for a decided record, (DEAD_LETTER, key, letter) for a failed one.
The job splits the rows into its three sinks by kind (flink_jobs/topology.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from decisioning.decision import ModelResult
from decisioning.rules import load_rules
from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES
from operators.decide import DEAD_LETTER, DECISION, TRACE, Decider
from operators.failures import mark_failed
from operators.records import JobRecord
from operators.scored_records import model_request
from rtd_core.config import load_config
from serving.model_signature import model_inputs
from tests.builders import T0, encode, txn

pytestmark = pytest.mark.unit


class _Metrics:
    def add_group(self, _name: str) -> _Metrics:
        return self

    def counter(self, _name: str) -> Any:
        return self

    def inc(self, _n: int = 1) -> None:
        pass


class _Context:
    def get_metrics_group(self) -> _Metrics:
        return _Metrics()


def _decider() -> Decider:
    config = load_config(None)
    decider = Decider(load_rules(None), config.thresholds, ALL_VIEWS, {"name": "test"})
    decider.open(_Context())  # type: ignore[arg-type]
    return decider


def _record(event: dict[str, Any]) -> JobRecord:
    features = dict.fromkeys(FEATURE_NAMES, 0.0)
    source = {"key": event["card_id"], "raw": encode(event).decode(), "topic": "transactions",
              "partition": 2, "offset": 7, "kafka_timestamp": T0}
    return JobRecord(source=source, event=event, timings={"received": T0, "validated": T0},
                     features=features,
                     model_request=model_request(load_config(None).serving,
                                                 model_inputs(event, features)),
                     model=ModelResult(0.01, 3, None, 2.0, 1))


def test_a_decided_record_is_a_decision_row_then_its_trace_row() -> None:
    event = txn(card="c-9", amount=12.5)
    rows = list(_decider().outputs(_record(event)))
    assert [r[0] for r in rows] == [DECISION, TRACE]
    (_, card, decision_json), (_, decision_id, trace_json) = rows
    decision, trace = json.loads(decision_json), json.loads(trace_json)
    assert card == "c-9" == decision["card_id"]
    assert decision_id == decision["decision_id"] == trace["decision_id"]
    assert decision["event_id"] == event["event_id"] == trace["event_id"]
    assert decision["path"] == "MODEL"


def test_a_record_a_stage_failed_on_is_one_dead_letter_row() -> None:
    record = mark_failed(_record(txn(card="c-1")), "features", ValueError("boom"))
    (row,) = _decider().outputs(record)
    kind, key, letter = row
    assert kind == DEAD_LETTER and key == "c-1"
    doc = json.loads(letter)
    assert (doc["reason"], doc["stage"], doc["partition"], doc["offset"]) == (
        "internal_error", "features", 2, 7)
    assert "boom" in doc["detail"]
