"""Trace completeness, reconciled continuously: every decision has its trace.

The store keeps a ledger in the same write batches as the data (``pd|`` decisions whose
trace it has not seen, ``pt|`` the reverse, ``pi|`` incomplete traces), so the report is
a read of that ledger, not a scan. A record younger than the grace period is reported as
in flight: the two topics are consumed independently and one may be read ahead.

The service writes the report to ``completeness.json`` beside the store (temp file and
rename) after every archive flush: the health checks read it with ``read_report``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from audit.store import AuditStore

REPORT_FILE = "completeness.json"


def _entries(items: list[tuple[str, list[int]]], topic: str) -> list[dict[str, Any]]:
    return [{"decision_id": did, "topic": topic, "partition": where[0], "offset": where[1],
             "decided_at": where[2] if len(where) > 2 else None} for did, where in items]


def completeness_report(store: AuditStore, *, decisions_topic: str, traces_topic: str,
                        grace_ms: int, now_ms: int) -> dict[str, Any]:
    counts = store.counts
    unique = counts["decisions"] - counts["duplicate_decisions"]
    cutoff = now_ms - grace_ms

    def split(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        old = [e for e in entries if e["decided_at"] is None or e["decided_at"] < cutoff]
        return old, len(entries) - len(old)

    no_trace, no_trace_in_flight = split(_entries(store.pending("pd"), decisions_topic))
    no_decision, no_decision_in_flight = split(_entries(store.pending("pt"), traces_topic))
    incomplete = _entries(store.pending("pi"), traces_topic)
    incomplete_ids = {e["decision_id"] for e in incomplete}
    missing = len(no_trace) + sum(1 for e in incomplete_ids
                                  if e not in {m["decision_id"] for m in no_trace})
    settled = unique - no_trace_in_flight
    return {
        "share_complete": 1.0 if settled <= 0 else (settled - missing) / settled,
        "decisions": unique,
        "traces": counts["traces"] - counts["duplicate_traces"],
        "decisions_without_trace": no_trace,
        "traces_without_decision": no_decision,
        "incomplete_traces": incomplete,
        "in_flight": {"decisions_without_trace": no_trace_in_flight,
                      "traces_without_decision": no_decision_in_flight},
        "duplicates": {"decisions": counts["duplicate_decisions"],
                       "traces": counts["duplicate_traces"]},
        "unreadable_records": counts["unreadable"],
        "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(store.offsets().items())},
        "grace_ms": grace_ms,
        "computed_at": now_ms,
    }


def write_report(folder: Path, report: dict[str, Any]) -> Path:
    target = folder / REPORT_FILE
    temp = folder / f".{REPORT_FILE}.tmp"
    temp.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    os.replace(temp, target)
    return target


def read_report(folder: Path) -> dict[str, Any] | None:
    """The last report the service wrote, or None before its first."""
    try:
        return orjson.loads((folder / REPORT_FILE).read_bytes())
    except FileNotFoundError:
        return None
