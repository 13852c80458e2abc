import pytest

from decisioning.decision import ModelResult, decide
from decisioning.rules import evaluate_rules, load_rules
from decisioning.trace import build_trace, coherence, is_complete, stage_durations
from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES
from tests.builders import T0, txn

pytestmark = pytest.mark.unit


def trace_for(kafka_timestamp=T0 - 40, card_computed=T0 + 3, customer_computed=T0 + 9):
    event = txn("c1", 25.0, at=T0)
    features = {name: 0 for name in FEATURE_NAMES}
    rules = load_rules()
    results = evaluate_rules(rules, event, features)
    model = ModelResult(0.2, 4, None, 2.5, 16)
    decision = decide(event, results, model, decline_at=0.9, review_at=0.6, late=False,
                      decided_at=T0 + 12)
    as_of = {"card_features": {"as_of_event_time": T0, "computed_at": card_computed},
             "customer_features": {"as_of_event_time": T0, "computed_at": customer_computed}}
    return build_trace(
        decision=decision,
        source={"topic": "transactions", "partition": 2, "offset": 7, "key": "c1",
                "raw": "{}", "kafka_timestamp": kafka_timestamp},
        event=event, views=ALL_VIEWS, features=features, as_of=as_of,
        rule_results=results, rules_version=rules.version,
        model_request={"name": "fraud", "inputs": {}}, model=model,
        thresholds={"decline": 0.9, "review": 0.6},
        timings={"received": T0, "validated": T0 + 1, "decided": T0 + 12},
        job={"name": "j"},
    )


def test_every_feature_carries_window_as_of_and_freshness():
    trace = trace_for()
    assert is_complete(trace, FEATURE_NAMES)
    assert [f["name"] for f in trace["features"]] == list(FEATURE_NAMES)
    for feature in trace["features"]:
        assert feature["as_of_event_time"] == T0
        assert feature["window_ms"] > 0
        # decided at T0+12, the event was appended to Kafka at T0-40
        assert feature["freshness_ms"] == 52


def test_coherence_records_the_skew_between_views():
    assert trace_for()["feature_coherence"]["event_time_skew_ms"] == 0
    assert trace_for()["feature_coherence"]["computed_skew_ms"] == 6
    skewed = coherence({"a": {"as_of_event_time": 10, "computed_at": 5},
                        "b": {"as_of_event_time": 4, "computed_at": 9}})
    assert skewed["event_time_skew_ms"] == 6 and skewed["computed_skew_ms"] == 4


def test_freshness_unknown_without_append_time():
    assert trace_for(kafka_timestamp=None)["features"][0]["freshness_ms"] is None


def test_stage_durations_skip_missing_stages():
    assert stage_durations({"received": 0, "validated": 2, "decided": 9}) == {
        "received->validated": 2, "validated->decided": 7, "total": 9}
