"""The trace record (contract: "Trace record"): one per decision, self-contained.

Everything needed to explain a decision without another lookup: the input as received
(topic, partition, offset, raw bytes as text), each feature with its window and the
event time it is as of, each rule with its inputs and whether it fired, the model
request and response or the fallback reason, thresholds, outcome, per-stage timings,
and the job's code and config version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from decisioning.decision import SCHEMA_VERSION, LastScore, ModelResult
from feature_views.model import FeatureView

STAGES = ("received", "validated", "card_features", "customer_features", "scored", "decided")


def feature_entries(
    views: Sequence[FeatureView],
    features: Mapping[str, float],
    as_of: Mapping[str, Mapping[str, Any]],
    freshness_ms: int | None = None,
) -> list[dict[str, Any]]:
    """One entry per feature: value, window, aggregation, the moment it is as of, and its
    freshness: how long after the newest event it reflects (the decided event itself,
    which every window includes) was appended to Kafka the decision read it."""
    out = []
    for view in views:
        meta = as_of.get(view.name, {})
        for feature in view.features:
            out.append({
                "name": feature.name,
                "value": features[feature.name],
                "view": view.name,
                "view_version": view.version,
                "entity_key": view.entity_key,
                "aggregation": feature.aggregation.value,
                "field": feature.field,
                "window_ms": feature.window_ms,
                "as_of_event_time": meta.get("as_of_event_time"),
                "watermark": meta.get("watermark"),
                "computed_at": meta.get("computed_at"),
                "freshness_ms": freshness_ms,
            })
    return out


def coherence(as_of: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Whether the views of one decision describe the same moment: the spread of their
    as-of event times (0 when all are as of the decided event) and of the wall-clock
    times they were computed at."""
    times = [m.get("as_of_event_time") for m in as_of.values()]
    computed = [m.get("computed_at") for m in as_of.values()]
    event_times = [t for t in times if t is not None]
    walls = [c for c in computed if c is not None]
    return {
        "as_of_event_time": {name: m.get("as_of_event_time") for name, m in as_of.items()},
        "event_time_skew_ms": (max(event_times) - min(event_times)) if event_times else None,
        "computed_skew_ms": (max(walls) - min(walls)) if walls else None,
    }


def stage_durations(timings: Mapping[str, int]) -> dict[str, int]:
    """Milliseconds spent between consecutive stages that were reached."""
    durations: dict[str, int] = {}
    previous: tuple[str, int] | None = None
    for stage in STAGES:
        at = timings.get(stage)
        if at is None:
            continue
        if previous is not None:
            durations[f"{previous[0]}->{stage}"] = at - previous[1]
        previous = (stage, at)
    first, last = timings.get("received"), timings.get("decided")
    if first is not None and last is not None:
        durations["total"] = last - first
    return durations


def _last_score_entry(last: LastScore | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {
        "score": last.score,
        "model_version": last.model_version,
        "event_id": last.event_id,
        "event_time": last.event_time,
        "age_ms": last.age_ms,
        "max_age_ms": last.max_age_ms,
    }


def model_result_from_trace(trace: Mapping[str, Any]) -> ModelResult:
    """The ``ModelResult`` a trace records, to re-derive its decision from it alone."""
    model = trace["model"]
    response, last = model.get("response"), model.get("last_score")
    if response is not None:
        return ModelResult(response["score"], response["model_version"], None,
                           response.get("latency_ms"), response.get("batch_size"))
    if last is not None:
        return ModelResult(last["score"], last["model_version"], model["fallback_reason"],
                           detail=model.get("fallback_detail"),
                           last_score=LastScore(**last))
    return ModelResult(None, None, model["fallback_reason"], detail=model.get("fallback_detail"))


def _freshness(source: Mapping[str, Any], decision: Mapping[str, Any]) -> int | None:
    appended = source.get("kafka_timestamp")
    return None if appended is None else int(decision["decided_at"]) - int(appended)


def build_trace(
    *,
    decision: Mapping[str, Any],
    source: Mapping[str, Any],
    event: Mapping[str, Any],
    views: Sequence[FeatureView],
    features: Mapping[str, float],
    as_of: Mapping[str, Mapping[str, Any]],
    rule_results: Sequence[Mapping[str, Any]],
    rules_version: str,
    model_request: Mapping[str, Any],
    model: ModelResult,
    thresholds: Mapping[str, float],
    timings: Mapping[str, int],
    job: Mapping[str, Any],
) -> dict[str, Any]:
    response = None
    if model.live:
        response = {
            "score": model.score,
            "model_version": model.model_version,
            "latency_ms": model.latency_ms,
            "batch_size": model.batch_size,
        }
    return {
        "decision_id": decision["decision_id"],
        "event_id": decision["event_id"],
        "schema_version": SCHEMA_VERSION,
        "input": {
            "topic": source.get("topic"),
            "partition": source.get("partition"),
            "offset": source.get("offset"),
            "key": source.get("key"),
            "kafka_timestamp": source.get("kafka_timestamp"),
            "raw": source.get("raw"),
            "event": dict(event),
        },
        "features": feature_entries(views, features, as_of, _freshness(source, decision)),
        "feature_coherence": coherence(as_of),
        "rules": [dict(r) for r in rule_results],
        "rules_version": rules_version,
        "model": {
            **model_request,
            "response": response,
            "fallback_reason": model.fallback_reason,
            "fallback_detail": model.detail,
            # The ladder's second step: the live call failed (response null,
            # fallback_reason set) and this earlier live score of the card decided.
            "last_score": _last_score_entry(model.last_score),
        },
        "thresholds": dict(thresholds),
        "outcome": decision["outcome"],
        "reasons": list(decision["reasons"]),
        "path": decision["path"],
        "score": decision["score"],
        "late": decision["late"],
        "event_time": decision["event_time"],
        "decided_at": decision["decided_at"],
        "timings": dict(timings),
        "stage_ms": stage_durations(timings),
        "job": dict(job),
    }


REQUIRED_TRACE_KEYS = (
    "decision_id", "event_id", "input", "features", "rules", "model", "thresholds",
    "outcome", "reasons", "path", "late", "timings", "job",
)


def is_complete(trace: Mapping[str, Any], feature_names: Sequence[str]) -> bool:
    """A trace is complete when it carries every part the contract asks for."""
    if any(key not in trace for key in REQUIRED_TRACE_KEYS):
        return False
    inp = trace["input"]
    if any(inp.get(k) is None for k in ("topic", "partition", "offset", "raw")):
        return False
    names = {f["name"] for f in trace["features"]}
    if set(feature_names) - names:
        return False
    model = trace["model"]
    if (model.get("response") is not None) == (model.get("fallback_reason") is not None):
        return False
    # A MODEL decision names the score it used: the live response or the last score.
    used_score = model.get("response") is not None or model.get("last_score") is not None
    return used_score == (trace["path"] == "MODEL")
