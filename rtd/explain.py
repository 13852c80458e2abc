"""Audit: explain one decision from its trace alone ("why was this declined?")."""

from __future__ import annotations

import json
from typing import Any

from decisioning.decision import decision_id_for
from decisioning.trace import (
    feature_entries,
    trace_event,
    trace_rules,
    trace_stage_durations,
    trace_version,
)
from rtd_core.config import RtdConfig
from rtd_core.topic_reader import iter_all


def find_trace(config: RtdConfig, event_or_decision_id: str,
               timeout_s: float = 60.0) -> dict[str, Any] | None:
    """The trace of an event id or a decision id, read from `decision-traces`."""
    wanted = {event_or_decision_id, decision_id_for(event_or_decision_id)}
    for record in iter_all(config, config.kafka.topics.traces, timeout_s=timeout_s):
        if record.key in wanted and record.value:
            return json.loads(record.value)
    return None


def explanation_lines(trace: dict[str, Any]) -> list[str]:
    """A human explanation built only from the trace's own content (either version)."""
    lines = [
        f"Decision {trace['decision_id']} for event {trace['event_id']}: {trace['outcome']} "
        f"via {trace['path']}" + (" (LATE event)" if trace.get("late") else ""),
    ]
    inp = trace["input"]
    event = trace_event(trace)
    lines.append(
        f"Input: {inp['topic']}[{inp['partition']}]@{inp['offset']}, card {event['card_id']}, "
        f"customer {event['customer_id']}, {event['amount']} {event['currency']} at merchant "
        f"{event['merchant_id']} ({event.get('channel')}, {event['country']}), "
        f"event time {event['event_time']}"
    )
    fired = [r for r in trace_rules(trace) if r["fired"]]
    if fired:
        lines.append("Rules that fired:")
        for rule in fired:
            lines.append(f"  {rule['id']}: {rule['when']} with {rule['inputs']} -> {rule['outcome']}")
    else:
        lines.append("No rule fired.")
    model = trace["model"]
    thresholds = trace["thresholds"]
    if model.get("response"):
        resp = model["response"]
        lines.append(
            f"Model {model['name']} v{resp['model_version']}: score {resp['score']:.4f} "
            f"(DECLINE >= {thresholds['decline']}, REVIEW >= {thresholds['review']}), "
            f"{resp['latency_ms']:.1f} ms, batch of {resp['batch_size']}"
        )
    elif model.get("last_score"):
        last = model["last_score"]
        lines.append(
            f"Live model call failed: '{model['fallback_reason']}' ({model.get('fallback_detail')}); "
            f"used the card's last score {last['score']:.4f} from model v{last['model_version']} "
            f"(event {last['event_id']}, {last['age_ms'] / 1000:.0f} s of event time earlier, "
            f"limit {last['max_age_ms'] / 1000:.0f} s) "
            f"(DECLINE >= {thresholds['decline']}, REVIEW >= {thresholds['review']})"
        )
    else:
        lines.append(
            f"No model score: fallback '{model['fallback_reason']}' ({model.get('fallback_detail')}); "
            "the rules alone decided."
        )
    lines.append("Reasons: " + (", ".join(trace["reasons"]) or "none (approved)"))
    lines.append("Features:")
    entries = feature_entries(trace)
    for feature in entries:
        field = f"({feature['field']})" if feature.get("field") else ""
        lines.append(
            f"  {feature['name']} = {feature['value']} ({feature['aggregation']}{field} over "
            f"{feature['window_ms'] // 1000} s, as of event time {feature['as_of_event_time']})"
        )
    lines.append(f"Stage times (ms): {json.dumps(trace_stage_durations(trace))}")
    job = trace["job"]
    # A version 2 trace says the rules and view versions once, outside the job block.
    views = job.get("feature_views") or {f["view"]: f["view_version"] for f in entries}
    lines.append(
        f"Job {job.get('name')} code {job.get('code_version')} config "
        f"{job.get('config_digest')} rules {job.get('rules_version', trace.get('rules_version'))}"
        f" views {views} (trace schema {trace_version(trace)})"
    )
    return lines
