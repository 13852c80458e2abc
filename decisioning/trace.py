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

from decisioning.decision import SCHEMA_VERSION, ModelResult
from feature_views.model import FeatureView

STAGES = ("received", "validated", "card_features", "customer_features", "scored", "decided")


def feature_entries(
    views: Sequence[FeatureView],
    features: Mapping[str, float],
    as_of: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One entry per feature: value, window, aggregation, and the moment it is as of."""
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
            })
    return out


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
    if model.score is not None:
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
        "features": feature_entries(views, features, as_of),
        "rules": [dict(r) for r in rule_results],
        "rules_version": rules_version,
        "model": {
            **model_request,
            "response": response,
            "fallback_reason": model.fallback_reason,
            "fallback_detail": model.detail,
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
    return (model.get("response") is not None) != (model.get("fallback_reason") is not None)
