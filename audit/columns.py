"""One decision's archive row (the columns of audit/archive.py's SCHEMA), computed
once, when the store indexes its trace: the store keeps it in its ingest log until a
Parquet file holds it, so archiving never reads or parses a trace a second time. Plain
Python, so that the store (and `rtd explain`) does not import pyarrow."""

from __future__ import annotations

from typing import Any

from audit.records import AuditRow


def row_dict(row: AuditRow, partition: int, offset: int) -> dict[str, Any]:
    event = row.event
    received, decided = row.timings.get("received"), row.timings.get("decided")
    return {
        "decision_id": row.decision_id, "event_id": row.event_id, "card_id": row.card_id,
        "customer_id": row.customer_id, "merchant_id": event.get("merchant_id"),
        "merchant_category": event.get("merchant_category"),
        "amount": event.get("amount"), "currency": event.get("currency"),
        "country": event.get("country"), "channel": event.get("channel"),
        "event_time": row.event_time, "decided_at": row.decided_at, "outcome": row.outcome,
        "score": row.score, "path": row.path, "fallback_reason": row.fallback_reason,
        "model_version": row.model_version, "late": row.late, "reasons": list(row.reasons),
        "rules_fired": list(row.rules_fired), **row.features,
        **{f"at_{stage}": at for stage, at in row.timings.items()},
        "total_ms": (decided - received) if received is not None and decided is not None
        else None,
        "trace_partition": partition, "trace_offset": offset,
        "schema_version": row.schema_version, "code_version": row.code_version,
        "rules_version": row.rules_version,
    }
