"""What the audit store reads from a trace and a decision, keyed on ``schema_version``.

Traces of two layouts are in the topic: version 1 (a full entry per feature) and the
compact version 2 (one block per feature view). Everything downstream (point index,
archive columns, completeness) works on ``AuditRow``, built through the version's
``TraceLayout`` (decisioning/trace.py), so a new layout is one more entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from decisioning.rules import Outcome
from decisioning.trace import (
    STAGES,
    TRACE_LAYOUTS,
    TraceLayout,
    is_complete,
    stage_durations,
    trace_version,
)
from feature_views.definitions import FEATURE_NAMES

T = TypeVar("T")


class UnknownSchemaVersion(ValueError):
    """A record of a layout this build cannot read: upgrade the audit service."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One decision as the store indexes and archives it, whatever the trace's version."""

    decision_id: str
    event_id: str
    card_id: str
    customer_id: str
    decided_at: int
    event_time: int
    outcome: str
    score: float | None
    path: str
    fallback_reason: str | None
    model_version: int | None
    late: bool
    reasons: tuple[str, ...]
    rules_fired: tuple[str, ...]
    features: Mapping[str, float | None]
    timings: Mapping[str, int | None]
    event: Mapping[str, Any]
    schema_version: int
    code_version: str | None
    rules_version: str | None
    # Carries every part the contract asks of a trace (decisioning.trace.is_complete).
    complete: bool
    # Kafka append time of the decided event (LogAppendTime on the stack's topics).
    appended_at: int | None = None
    # The most severe outcome of the fired rules alone: the rules-only baseline of the
    # same event, whatever the model said (health: accuracy beside the model).
    rules_outcome: str = "APPROVE"
    # Per feature: decided_at minus the Kafka append time of the newest event it reflects.
    freshness_ms: Mapping[str, int | None] = field(default_factory=dict)


def _trace_row(layout: TraceLayout, trace: Mapping[str, Any]) -> AuditRow:
    """``trace`` as a row, read through its version's layout (decisioning/trace.py)."""
    event = layout.event(trace)
    model = trace["model"]
    response, last = model.get("response"), model.get("last_score")
    used = response or last
    entries = layout.feature_entries(trace)
    values = {f["name"]: f["value"] for f in entries}
    freshness = {f["name"]: f.get("freshness_ms") for f in entries}
    timings = layout.timings(trace)
    fired = [r for r in layout.rules(trace) if r.get("fired")]
    return AuditRow(
        decision_id=trace["decision_id"],
        event_id=trace["event_id"],
        card_id=event["card_id"],
        customer_id=event["customer_id"],
        decided_at=int(trace["decided_at"]),
        event_time=int(trace["event_time"]),
        outcome=trace["outcome"],
        score=trace.get("score"),
        path=trace["path"],
        fallback_reason=model.get("fallback_reason"),
        model_version=used.get("model_version") if used else None,
        late=bool(trace.get("late")),
        reasons=tuple(trace.get("reasons", ())),
        rules_fired=tuple(r["id"] for r in fired),
        features={name: values.get(name) for name in FEATURE_NAMES},
        timings={stage: timings.get(stage) for stage in STAGES},
        event=event,
        schema_version=trace_version(trace),
        code_version=trace.get("job", {}).get("code_version"),
        rules_version=trace.get("rules_version"),
        complete=is_complete(trace, FEATURE_NAMES),
        appended_at=trace["input"].get("kafka_timestamp"),
        rules_outcome=most_severe(r["outcome"] for r in fired),
        freshness_ms={name: freshness.get(name) for name in FEATURE_NAMES},
    )


def most_severe(outcomes: Iterable[str]) -> str:
    """APPROVE unless an outcome says otherwise; DECLINE beats REVIEW."""
    return max((Outcome(o) for o in outcomes), key=lambda o: o.severity,
               default=Outcome.APPROVE).value


# A trace layout is added in decisioning.trace.TRACE_LAYOUTS, by its schema_version, and
# the store reads it from then on.
TRACE_READERS: dict[int, Callable[[Mapping[str, Any]], AuditRow]] = {
    version: partial(_trace_row, layout) for version, layout in TRACE_LAYOUTS.items()}


def _reader(readers: Mapping[int, Callable[[Mapping[str, Any]], T]], kind: str,
               record: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], T]:
    version = int(record.get("schema_version", 1))
    reader = readers.get(version)
    if reader is None:
        raise UnknownSchemaVersion(
            f"{kind} {record.get('decision_id')!r} has schema_version {version}; this audit "
            f"service reads {sorted(readers)}: upgrade it and restart")
    return reader


def read_trace(trace: Mapping[str, Any]) -> AuditRow:
    return _reader(TRACE_READERS, "trace", trace)(trace)


@dataclass(frozen=True, slots=True)
class DecisionRef:
    """What completeness needs of a decision record."""

    decision_id: str
    event_id: str
    card_id: str
    decided_at: int


def _read_decision_v1(decision: Mapping[str, Any]) -> DecisionRef:
    return DecisionRef(decision["decision_id"], decision["event_id"], decision["card_id"],
                       int(decision["decided_at"]))


DECISION_READERS: dict[int, Callable[[Mapping[str, Any]], DecisionRef]] = {
    1: _read_decision_v1}


def read_decision(decision: Mapping[str, Any]) -> DecisionRef:
    return _reader(DECISION_READERS, "decision", decision)(decision)


@dataclass(frozen=True, slots=True)
class FeatureLine:
    name: str
    value: float | None
    view: str | None
    aggregation: str | None
    window_ms: int | None
    as_of_event_time: int | None
    freshness_ms: int | None


@dataclass(frozen=True, slots=True)
class RuleLine:
    id: str
    when: str
    inputs: Mapping[str, Any]
    fired: bool
    outcome: str


@dataclass(frozen=True, slots=True)
class ModelLine:
    name: str | None
    score: float | None  # the live response's, or the remembered last score's
    model_version: int | None
    latency_ms: float | None
    batch_size: int | None
    fallback_reason: str | None
    fallback_detail: str | None
    last_score: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything `rtd explain` tells about one decision, as typed parts (the console's
    decision page), whatever the trace's version."""

    row: AuditRow
    input_topic: str | None
    input_partition: int | None
    input_offset: int | None
    features: tuple[FeatureLine, ...]
    rules: tuple[RuleLine, ...]
    model: ModelLine
    thresholds: Mapping[str, float]
    stage_ms: Mapping[str, int]
    job: Mapping[str, Any]


def _explain_trace(layout: TraceLayout, trace: Mapping[str, Any]) -> Explanation:
    """``trace`` as an explanation, read through its version's layout."""
    inp, model = trace["input"], trace["model"]
    response, last = model.get("response"), model.get("last_score")
    used = response or last or {}
    return Explanation(
        row=_trace_row(layout, trace),
        input_topic=inp.get("topic"), input_partition=inp.get("partition"),
        input_offset=inp.get("offset"),
        features=tuple(FeatureLine(f["name"], f.get("value"), f.get("view"),
                                   f.get("aggregation"), f.get("window_ms"),
                                   f.get("as_of_event_time"), f.get("freshness_ms"))
                       for f in layout.feature_entries(trace)),
        rules=tuple(RuleLine(r["id"], r.get("when", ""), r.get("inputs", {}),
                             bool(r.get("fired")), r.get("outcome", ""))
                    for r in layout.rules(trace)),
        model=ModelLine(model.get("name"), used.get("score"), used.get("model_version"),
                        (response or {}).get("latency_ms"), (response or {}).get("batch_size"),
                        model.get("fallback_reason"), model.get("fallback_detail"), last),
        thresholds=trace.get("thresholds", {}),
        stage_ms=stage_durations(layout.timings(trace)),
        job=trace.get("job", {}),
    )


EXPLANATION_READERS: dict[int, Callable[[Mapping[str, Any]], Explanation]] = {
    version: partial(_explain_trace, layout) for version, layout in TRACE_LAYOUTS.items()}


def explain_trace(trace: Mapping[str, Any]) -> Explanation:
    return _reader(EXPLANATION_READERS, "trace", trace)(trace)
