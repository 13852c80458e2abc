"""Joining what the benchmark saw into per-decision latencies: pure, no I/O.

Three independent observations meet here, all on this machine's wall clock:
  - the broker's append time of each event in the `transactions` topic (LogAppendTime,
    read back after the run), keyed by event id;
  - when each decision was first received by a read_uncommitted consumer and by a
    read_committed consumer of the system's decisions topic, keyed by decision id
    (``decision_id = uuid5(namespace, event_id)``, the same for every system);
  - the decision record's own ``decided_at`` (the deciding process's clock).

Definitions (docs/BENCHMARKS.md repeats them):
  decision latency        first read_uncommitted receipt - event append time
  commit-visible latency  first read_committed receipt   - event append time
  feature freshness       decided_at - event append time: how old the newest input the
                          features fold in (the event itself, which every windowed
                          feature includes) is when the decision is made, i.e. the age of
                          the feature values at the moment they are used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.stats import latency_summary
from decisioning.decision import decision_id_for


@dataclass(frozen=True, slots=True)
class DecisionMeta:
    """What the read_uncommitted consumer keeps of each decision record."""

    decided_at: int
    fallback_reason: str | None
    late: bool


@dataclass
class PhaseJoin:
    """Latencies (ms) of the decisions of one phase's events."""

    events: int = 0  # valid events sent in the phase
    without_append_time: int = 0  # never read back from `transactions` (should be 0)
    decision_ms: list[int] = field(default_factory=list)
    commit_visible_ms: list[int] = field(default_factory=list)
    freshness_ms: list[int] = field(default_factory=list)
    fallbacks: Counter[str] = field(default_factory=Counter)
    late: int = 0

    @property
    def decided(self) -> int:
        return len(self.decision_ms)

    @property
    def committed(self) -> int:
        return len(self.commit_visible_ms)

    def summary(self) -> dict[str, Any]:
        decided = self.decided
        return {
            "events": self.events,
            "decided_uncommitted": decided,
            "decided_committed": self.committed,
            "missing_uncommitted": self.events - decided,
            "missing_committed": self.events - self.committed,
            "without_append_time": self.without_append_time,
            "decision_latency_ms": latency_summary(self.decision_ms),
            "commit_visible_latency_ms": latency_summary(self.commit_visible_ms),
            "feature_freshness_ms": latency_summary(self.freshness_ms),
            "fallback_rate": round(sum(self.fallbacks.values()) / decided, 4) if decided else None,
            "fallbacks": dict(self.fallbacks),
            "late_share": round(self.late / decided, 4) if decided else None,
        }


def join_phase(
    event_ids: Iterable[str],
    appends: Mapping[str, int],
    uncommitted: Mapping[str, int],
    committed: Mapping[str, int],
    meta: Mapping[str, DecisionMeta],
    decision_id_of: Callable[[str], str] = decision_id_for,
) -> PhaseJoin:
    """Latencies for the decisions of ``event_ids``; events without a receipt count as
    missing (not decided, or not visible, before the consumers stopped)."""
    out = PhaseJoin()
    for event_id in event_ids:
        out.events += 1
        appended = appends.get(event_id)
        if appended is None:
            out.without_append_time += 1
            continue
        did = decision_id_of(event_id)
        seen = uncommitted.get(did)
        if seen is not None:
            out.decision_ms.append(seen - appended)
            info = meta.get(did)
            if info is not None:
                out.freshness_ms.append(info.decided_at - appended)
                if info.fallback_reason is not None:
                    out.fallbacks[info.fallback_reason] += 1
                out.late += info.late
        visible = committed.get(did)
        if visible is not None:
            out.commit_visible_ms.append(visible - appended)
    return out


def first_receipts(receipts: Iterable[tuple[str, int]]) -> tuple[dict[str, int], int]:
    """Earliest receipt per decision id, and how many receipts were duplicates (an
    at-least-once system may write a decision twice; a read_uncommitted consumer also sees
    records of transactions that were later aborted)."""
    first: dict[str, int] = {}
    duplicates = 0
    for did, at in receipts:
        previous = first.get(did)
        if previous is None:
            first[did] = at
        else:
            duplicates += 1
            if at < previous:
                first[did] = at
    return first, duplicates
