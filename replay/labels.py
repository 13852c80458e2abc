"""Point-in-time labels: what was known about each event at a chosen cutoff.

A label is known at cutoff C iff its ``labeled_at <= C``. An event may be labelled more
than once (a chargeback overturning an earlier "legit"); the row takes the latest label
known at C, ties broken by topic order. Labels written after C do not exist for a
training set cut at C: that is what makes a back-test honest about label delay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from rtd_core.config import RtdConfig
from rtd_core.topic_reader import iter_all


@dataclass(frozen=True, slots=True)
class Label:
    is_fraud: bool
    labeled_at: int


@dataclass
class LabelStats:
    read: int = 0
    known: int = 0  # distinct events with a label known at the cutoff
    after_cutoff: int = 0  # label records not yet known at the cutoff
    superseded: int = 0  # earlier labels of an event replaced by a later known one
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)


def parse_label(value: str | None) -> tuple[str, Label] | None:
    """(event_id, Label) from a `labels` record value, or None if it breaks the contract."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    event_id, is_fraud, labeled_at = doc.get("event_id"), doc.get("is_fraud"), doc.get("labeled_at")
    if not isinstance(event_id, str) or not event_id or not isinstance(is_fraud, bool):
        return None
    if isinstance(labeled_at, bool) or not isinstance(labeled_at, int):
        return None
    return event_id, Label(is_fraud, labeled_at)


def labels_as_of(values: Iterable[str | None], cutoff_ms: int) -> tuple[dict[str, Label],
                                                                         LabelStats]:
    """The latest label per event known at ``cutoff_ms``; ``values`` in topic order."""
    known: dict[str, Label] = {}
    stats = LabelStats()
    for value in values:
        stats.read += 1
        parsed = parse_label(value)
        if parsed is None:
            stats.malformed += 1
            if len(stats.malformed_examples) < 3:
                stats.malformed_examples.append((value or "<null>")[:120])
            continue
        event_id, label = parsed
        if label.labeled_at > cutoff_ms:
            stats.after_cutoff += 1
            continue
        previous = known.get(event_id)
        if previous is not None:
            stats.superseded += 1
            if label.labeled_at < previous.labeled_at:
                continue
        known[event_id] = label
    stats.known = len(known)
    return known, stats


def read_labels(config: RtdConfig, cutoff_ms: int) -> tuple[dict[str, Label], LabelStats]:
    """Read the whole `labels` topic (read_committed) and keep what was known at cutoff.

    Labels are keyed by event_id, so all labels of one event sit in one partition and
    the reader's per-partition order is their topic order."""
    records = iter_all(config, config.kafka.topics.labels, timeout_s=120.0)
    return labels_as_of((r.value for r in records), cutoff_ms)
