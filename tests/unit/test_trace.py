import orjson
import pytest

from decisioning.decision import ModelResult, decide
from decisioning.rules import evaluate_rules, load_rules
from decisioning.trace import (
    TRACE_SCHEMA_VERSION,
    UnknownTraceVersion,
    build_trace,
    coherence,
    feature_entries,
    feature_values,
    is_complete,
    model_result_from_trace,
    stage_durations,
    trace_coherence,
    trace_event,
    trace_rules,
    trace_stage_durations,
    trace_timings,
)
from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES
from tests.builders import T0, encode, txn, v1_traces, v2_of_v1

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
                "raw": encode(event).decode(), "kafka_timestamp": kafka_timestamp},
        event=event, views=ALL_VIEWS, features=features, as_of=as_of,
        rule_results=results, rules_version=rules.version,
        model_request={"name": "fraud", "inputs": {}}, model=model,
        thresholds={"decline": 0.9, "review": 0.6},
        timings={"received": T0, "validated": T0 + 1, "decided": T0 + 12},
        job={"name": "j"},
    )


def test_every_feature_carries_window_as_of_and_freshness():
    trace = trace_for()
    assert trace["schema_version"] == TRACE_SCHEMA_VERSION == 2
    assert is_complete(trace, FEATURE_NAMES)
    entries = feature_entries(trace)
    assert [f["name"] for f in entries] == list(FEATURE_NAMES)
    declared = {f.name: (v.name, v.version, f.aggregation.value, f.field, f.window_ms)
                for v in ALL_VIEWS for f in v.features}
    for feature in entries:
        assert feature["as_of_event_time"] == T0
        assert (feature["view"], feature["view_version"], feature["aggregation"],
                feature["field"], feature["window_ms"]) == declared[feature["name"]]
        # decided at T0+12, the event was appended to Kafka at T0-40
        assert feature["freshness_ms"] == 52


def test_coherence_records_the_skew_between_views():
    assert trace_coherence(trace_for())["event_time_skew_ms"] == 0
    assert trace_coherence(trace_for())["computed_skew_ms"] == 6
    skewed = coherence({"a": {"as_of_event_time": 10, "computed_at": 5},
                        "b": {"as_of_event_time": 4, "computed_at": 9}})
    assert skewed["event_time_skew_ms"] == 6 and skewed["computed_skew_ms"] == 4


def test_freshness_unknown_without_append_time():
    assert feature_entries(trace_for(kafka_timestamp=None))[0]["freshness_ms"] is None


def test_stage_durations_skip_missing_stages():
    assert stage_durations({"received": 0, "validated": 2, "decided": 9}) == {
        "received->validated": 2, "validated->decided": 7, "total": 9}


def test_version_2_is_compact_on_the_job_s_own_traces():
    """The same decisions as version 1 traces the job wrote, in well under half the bytes."""
    for v1 in v1_traces():
        v2 = v2_of_v1(v1)
        assert len(orjson.dumps(v2)) < 0.45 * len(orjson.dumps(v1))
        assert "features" not in v2 and "event" not in v2["input"]


@pytest.mark.parametrize("index", [0, 1], ids=["live-with-rule", "late-rules-only"])
def test_a_version_2_trace_reads_back_everything_its_version_1_said(index):
    v1 = v1_traces()[index]
    v2 = orjson.loads(orjson.dumps(v2_of_v1(v1)))  # through JSON, as readers get it
    assert is_complete(v1, FEATURE_NAMES) and is_complete(v2, FEATURE_NAMES)
    assert trace_event(v2) == v1["input"]["event"]
    assert feature_entries(v2) == v1["features"]
    assert feature_values(v2) == feature_values(v1)
    assert trace_rules(v2) == v1["rules"]
    assert trace_timings(v2) == v1["timings"]
    assert trace_stage_durations(v2) == v1["stage_ms"]
    assert trace_coherence(v2) == v1["feature_coherence"]
    assert model_result_from_trace(v2) == model_result_from_trace(v1)
    for key in ("decision_id", "event_id", "outcome", "reasons", "path", "score", "late",
                "event_time", "decided_at", "thresholds", "rules_version"):
        assert v2[key] == v1[key], key
    assert {k: v for k, v in v1["input"].items() if k != "event"} == v2["input"]
    assert {**v2["job"], "rules_version": v2["rules_version"],
            "feature_views": {b["name"]: b["version"] for b in v2["views"]}} == v1["job"]
    assert {k: v for k, v in v1["model"].items() if k != "inputs"} == v2["model"]


def test_a_trace_missing_a_part_is_incomplete_and_an_unknown_version_is_refused():
    trace = trace_for()
    assert is_complete(trace, FEATURE_NAMES)
    for broken in ({**trace, "views": trace["views"][:1]},
                   {**trace, "input": {**trace["input"], "raw": "{not json"}},
                   {k: v for k, v in trace.items() if k != "received_at"}):
        assert not is_complete(broken, FEATURE_NAMES)
    future = {**trace, "schema_version": 9}
    assert not is_complete(future, FEATURE_NAMES)
    with pytest.raises(UnknownTraceVersion):
        trace_event(future)
