"""The record a valid event is while it crosses the job's operators.

Validation makes it (operators/validation.py), in the keyed operator, which adds the
features, the model request and the model's answer; the decider turns it into a
decision and its trace, or, when a stage failed on it (``failure``), into a dead letter.
One slotted class rather than a dict: the fields are fixed and named, a typo is an
AttributeError rather than a new key, and the record pickles as a tuple of its fields
where it crosses operators (process mode, the opt-in last-score rung, the replay) and
into the pending-record state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decisioning.decision import ModelResult


@dataclass(slots=True)
class JobRecord:
    # The Kafka record: key, raw (the payload as text), topic, partition, offset,
    # kafka_timestamp (ms).
    source: dict[str, Any]
    # The validated event (decisioning/transaction.py: the contract's fields).
    event: dict[str, Any]
    # Stage name -> epoch ms when the stage finished (the trace's timings).
    timings: dict[str, int]
    features: dict[str, float] = field(default_factory=dict)
    # View name -> as_of_event_time, watermark and computed_at of its features.
    as_of: dict[str, dict[str, Any]] = field(default_factory=dict)
    late: bool = False
    # What the trace shows was asked of the model (operators/scored_records.py).
    model_request: dict[str, Any] | None = None
    model: ModelResult | None = None
    # The stage that failed on the record and its error (operators/failures.py).
    failure: dict[str, str] | None = None

    def __reduce__(self) -> tuple[type[JobRecord], tuple[Any, ...]]:
        # The constructor with the fields in order: a slotted dataclass's default pickle
        # goes through a Python-level __getstate__/__setstate__ pair per record.
        return (JobRecord, (self.source, self.event, self.timings, self.features, self.as_of,
                            self.late, self.model_request, self.model, self.failure))
