"""The trace record (contract: "Trace record"): one per decision, self-contained.

Everything needed to explain a decision without another lookup: the input as received
(topic, partition, offset, raw bytes as text), each feature view with its version, its
features' definitions and values and the event time they are as of, each rule with
whether it fired, the model request and response or the fallback reason, thresholds,
outcome, per-stage timings, and the job's code and config version.

``build_trace`` writes ``schema_version`` 2: every fact once. Version 1 (until 0.1.x)
repeated 12 fields for each feature, the parsed event beside the raw payload, each
rule's input value, the model inputs and several sums of other fields (~5.3 KB against
~1.3 KB). Traces of both versions are in topics and stores, so every reader goes through
the functions below, which dispatch on ``schema_version`` (``layout``): the parsed event
(``trace_event``), the features (``feature_values``, ``feature_entries``), rules with
their inputs (``trace_rules``), timings and coherence. A new layout is one more
``TraceLayout`` in ``TRACE_LAYOUTS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from decisioning.decision import LastScore, ModelResult
from decisioning.rules import EVENT_INPUTS
from decisioning.transaction import contract_event
from feature_views.model import FeatureView

TRACE_SCHEMA_VERSION = 2
STAGES = ("received", "validated", "card_features", "customer_features", "scored", "decided")


class UnknownTraceVersion(ValueError):
    """A trace of a layout this build cannot read."""


# -- writing (schema_version 2) ---------------------------------------------------------

def definition(aggregation: str, field: str | None) -> str:
    """A feature's aggregation as one string: ``count``, ``sum(amount)``."""
    return aggregation if field is None else f"{aggregation}({field})"


def parse_definition(text: str) -> tuple[str, str | None]:
    aggregation, _, rest = text.partition("(")
    return aggregation, (rest[:-1] or None)


def view_blocks(views: Sequence[FeatureView], features: Mapping[str, float],
                as_of: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One block per view: name, version, entity key, the moment it is as of, then each
    feature as ``[value, aggregation(field), window_ms]``."""
    blocks = []
    for view in views:
        meta = as_of.get(view.name, {})
        blocks.append({
            "name": view.name,
            "version": view.version,
            "entity_key": view.entity_key,
            "as_of_event_time": meta.get("as_of_event_time"),
            "watermark": meta.get("watermark"),
            "computed_at": meta.get("computed_at"),
            "features": {
                f.name: [features[f.name], definition(f.aggregation.value, f.field), f.window_ms]
                for f in view.features
            },
        })
    return blocks


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
    """The ``ModelResult`` a trace (either version) records, to re-derive its decision."""
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


def _job_block(job: Mapping[str, Any], rules_version: str,
               views: Sequence[FeatureView]) -> dict[str, Any]:
    """The job info, less what the trace already says (rules and view versions), but
    only where it says the same: a disagreement stays visible."""
    said = {"rules_version": rules_version, "feature_views": {v.name: v.version for v in views}}
    return {k: v for k, v in job.items() if not (k in said and said[k] == v)}


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
    """The trace, ``schema_version`` 2. ``event`` is not written: it is the raw payload's
    contract fields with the decision's event time (``trace_event``). Nor are the model
    inputs (``model_request["inputs"]``): they are the feature values, amount and
    channel, all in the trace (``serving.model_signature.model_inputs``)."""
    response = None
    if model.live:
        response = {
            "score": model.score,
            "model_version": model.model_version,
            "latency_ms": model.latency_ms,
            "batch_size": model.batch_size,
        }
    received = timings.get("received")
    return {
        "schema_version": TRACE_SCHEMA_VERSION,
        "decision_id": decision["decision_id"],
        "event_id": decision["event_id"],
        "input": {
            "topic": source.get("topic"),
            "partition": source.get("partition"),
            "offset": source.get("offset"),
            "key": source.get("key"),
            "kafka_timestamp": source.get("kafka_timestamp"),
            "raw": source.get("raw"),
        },
        "views": view_blocks(views, features, as_of),
        "freshness_ms": _freshness(source, decision),
        "rules_version": rules_version,
        # each rule by id: [when, outcome, fired]; its input's value is in the features
        # or the event (the input is the expression's first word)
        "rules": {r["id"]: [r["when"], r["outcome"], r["fired"]] for r in rule_results},
        "model": {
            **{k: v for k, v in model_request.items() if k != "inputs"},
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
        # epoch ms of the first stage, then each later stage reached as ms after it
        "received_at": received,
        "since_received_ms": {stage: at - received for stage, at in timings.items()
                     if stage != "received" and received is not None},
        "job": _job_block(job, rules_version, views),
    }


# -- reading (every version) ------------------------------------------------------------

class TraceLayout(Protocol):
    def event(self, trace: Mapping[str, Any]) -> dict[str, Any]: ...
    def feature_entries(self, trace: Mapping[str, Any]) -> list[dict[str, Any]]: ...
    def values(self, trace: Mapping[str, Any]) -> dict[str, Any]: ...
    def rules(self, trace: Mapping[str, Any]) -> list[dict[str, Any]]: ...
    def timings(self, trace: Mapping[str, Any]) -> dict[str, int]: ...
    def as_of(self, trace: Mapping[str, Any]) -> dict[str, dict[str, Any]]: ...


class _V1:
    """Each feature a full entry; the parsed event, rule inputs and timings written."""

    def event(self, trace: Mapping[str, Any]) -> dict[str, Any]:
        return dict(trace["input"]["event"])

    def feature_entries(self, trace: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [dict(f) for f in trace["features"]]

    def values(self, trace: Mapping[str, Any]) -> dict[str, Any]:
        return {f["name"]: f["value"] for f in trace["features"]}

    def rules(self, trace: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in trace["rules"]]

    def timings(self, trace: Mapping[str, Any]) -> dict[str, int]:
        return dict(trace.get("timings", {}))

    def as_of(self, trace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for f in trace["features"]:
            out.setdefault(f["view"], {k: f.get(k) for k in
                                       ("as_of_event_time", "watermark", "computed_at")})
        return out


class _V2:
    """One block per view; the event rebuilt from the raw payload, rule inputs from the
    features and the event, timings from ``received_at`` and ``stage_ms``."""

    def event(self, trace: Mapping[str, Any]) -> dict[str, Any]:
        return contract_event(orjson.loads(trace["input"]["raw"]), trace["event_time"])

    def feature_entries(self, trace: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for view in trace["views"]:
            for name, (value, text, window_ms) in view["features"].items():
                aggregation, field = parse_definition(text)
                out.append({
                    "name": name, "value": value, "view": view["name"],
                    "view_version": view["version"], "entity_key": view["entity_key"],
                    "aggregation": aggregation, "field": field, "window_ms": window_ms,
                    "as_of_event_time": view.get("as_of_event_time"),
                    "watermark": view.get("watermark"),
                    "computed_at": view.get("computed_at"),
                    "freshness_ms": trace.get("freshness_ms"),
                })
        return out

    def values(self, trace: Mapping[str, Any]) -> dict[str, Any]:
        return {name: spec[0] for view in trace["views"]
                for name, spec in view["features"].items()}

    def rules(self, trace: Mapping[str, Any]) -> list[dict[str, Any]]:
        values: dict[str, Any] | None = None
        out = []
        for rule_id, (when, outcome, fired) in trace["rules"].items():
            # A rule's expression is "<input> <op> <constant>" (decisioning.rules.Rule).
            name = when.split(" ", 1)[0]
            if values is None:
                event = self.event(trace)
                values = {**{k: event[k] for k in EVENT_INPUTS}, **self.values(trace)}
            out.append({"id": rule_id, "when": when, "inputs": {name: values.get(name)},
                        "fired": fired, "outcome": outcome})
        return out

    def timings(self, trace: Mapping[str, Any]) -> dict[str, int]:
        received = trace.get("received_at")
        if received is None:
            return {}
        return {"received": received,
                **{stage: received + ms
                   for stage, ms in trace.get("since_received_ms", {}).items()}}

    def as_of(self, trace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {v["name"]: {k: v.get(k) for k in ("as_of_event_time", "watermark", "computed_at")}
                for v in trace["views"]}


TRACE_LAYOUTS: dict[int, TraceLayout] = {1: _V1(), 2: _V2()}
# The top-level keys ``trace_timings`` reads, in every version: what a reader that keeps
# only a trace's timings (the drills' audit, bench/drills/judges.py) must keep.
TIMING_KEYS = ("schema_version", "timings", "received_at", "since_received_ms")


def trace_version(trace: Mapping[str, Any]) -> int:
    return int(trace.get("schema_version", 1))


def layout(trace: Mapping[str, Any]) -> TraceLayout:
    version = trace_version(trace)
    found = TRACE_LAYOUTS.get(version)
    if found is None:
        raise UnknownTraceVersion(
            f"trace {trace.get('decision_id')!r} has schema_version {version}; this build "
            f"reads {sorted(TRACE_LAYOUTS)}")
    return found


def trace_event(trace: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed event the decision was made on."""
    return layout(trace).event(trace)


def feature_entries(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per feature, in view order: name, value, view, view_version,
    entity_key, aggregation, field, window_ms, as_of_event_time, watermark, computed_at,
    freshness_ms (version 1's layout, which version 2 writes once per view)."""
    return layout(trace).feature_entries(trace)


def feature_values(trace: Mapping[str, Any]) -> dict[str, Any]:
    """Feature name -> value."""
    return layout(trace).values(trace)


def trace_rules(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each rule: id, when, inputs {name: value}, fired, outcome."""
    return layout(trace).rules(trace)


def trace_timings(trace: Mapping[str, Any]) -> dict[str, int]:
    """Epoch ms per stage reached (``STAGES``)."""
    return layout(trace).timings(trace)


def trace_stage_durations(trace: Mapping[str, Any]) -> dict[str, int]:
    """Ms between consecutive stages reached, and ``total`` (version 1's ``stage_ms``)."""
    return stage_durations(trace_timings(trace))


def trace_coherence(trace: Mapping[str, Any]) -> dict[str, Any]:
    return coherence(layout(trace).as_of(trace))


# The parts the contract asks of a trace, by version.
_REQUIRED: dict[int, tuple[str, ...]] = {
    1: ("decision_id", "event_id", "input", "features", "rules", "model", "thresholds",
        "outcome", "reasons", "path", "late", "timings", "job"),
    2: ("decision_id", "event_id", "input", "views", "rules", "model", "thresholds",
        "outcome", "reasons", "path", "late", "event_time", "received_at",
        "since_received_ms", "job"),
}


def is_complete(trace: Mapping[str, Any], feature_names: Sequence[str]) -> bool:
    """A trace is complete when it carries every part the contract asks for."""
    required = _REQUIRED.get(trace_version(trace))
    if required is None or any(key not in trace for key in required):
        return False
    inp = trace["input"]
    if any(inp.get(k) is None for k in ("topic", "partition", "offset", "raw")):
        return False
    try:
        names = set(feature_values(trace))
        trace_event(trace)
    except (KeyError, TypeError, ValueError):
        return False
    if set(feature_names) - names:
        return False
    model = trace["model"]
    if (model.get("response") is not None) == (model.get("fallback_reason") is not None):
        return False
    # A MODEL decision names the score it used: the live response or the last score.
    used_score = model.get("response") is not None or model.get("last_score") is not None
    return used_score == (trace["path"] == "MODEL")
