"""Outcome of one event from its rules and model score (contract: "Decision record")."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decisioning.rules import Outcome

SCHEMA_VERSION = 1
# Fixed namespace: decision ids are uuid5(namespace, event_id), the same on every
# run, replay and restart, so a reprocessed event keeps its decision id.
DECISION_ID_NAMESPACE = uuid.UUID("6f1c9a52-7d1e-4c33-9a0e-2b8f0c7d5e41")

MODEL_DECLINE = "MODEL_SCORE_DECLINE"
MODEL_REVIEW = "MODEL_SCORE_REVIEW"
# The second step of the fallback ladder (decisioning/fallback_ladder.py): the live model
# call failed and the card's last model score, recent enough, decided in its place.
LAST_SCORE_USED = "LAST_SCORE_USED"

PATH_MODEL = "MODEL"
PATH_RULES_ONLY = "RULES_ONLY"
FALLBACK_REASONS = ("timeout", "unavailable", "shed", "error")


def decision_id_for(event_id: str) -> str:
    return str(uuid.uuid5(DECISION_ID_NAMESPACE, event_id))


@dataclass(frozen=True, slots=True)
class LastScore:
    """A card's earlier live model score, used when the live call for this event failed."""

    score: float
    model_version: int
    event_id: str  # the event that score was computed for
    event_time: int  # its event time, epoch ms
    age_ms: int  # this event's event time minus that one's (negative: scored a later event)
    max_age_ms: int  # the configured limit it was within


@dataclass(frozen=True, slots=True)
class ModelResult:
    """What the model stage produced: a live score, or the reason there is none.

    With ``last_score`` set (the ladder's second step) it carries both: the failed live
    call's ``fallback_reason`` and, as ``score``/``model_version``, the remembered score.
    """

    score: float | None
    model_version: int | None
    fallback_reason: str | None
    latency_ms: float | None = None
    batch_size: int | None = None
    detail: str | None = None
    last_score: LastScore | None = None

    def __post_init__(self) -> None:
        if self.fallback_reason is not None and self.fallback_reason not in FALLBACK_REASONS:
            raise ValueError(f"unknown fallback reason {self.fallback_reason!r}")
        if self.last_score is None:
            if (self.score is None) == (self.fallback_reason is None):
                raise ValueError("a model result has either a score or a fallback reason")
        elif (self.fallback_reason is None or self.score != self.last_score.score
              or self.model_version != self.last_score.model_version):
            raise ValueError("a last-score result keeps the live call's fallback reason "
                             "and the remembered score and version")

    @property
    def live(self) -> bool:
        """Scored by the model for this very event."""
        return self.score is not None and self.last_score is None


def model_outcome(score: float, decline_at: float, review_at: float) -> tuple[Outcome, str | None]:
    if score >= decline_at:
        return Outcome.DECLINE, MODEL_DECLINE
    if score >= review_at:
        return Outcome.REVIEW, MODEL_REVIEW
    return Outcome.APPROVE, None


def decide(
    event: Mapping[str, Any],
    rule_results: Sequence[Mapping[str, Any]],
    model: ModelResult,
    *,
    decline_at: float,
    review_at: float,
    late: bool,
    decided_at: int,
) -> dict[str, Any]:
    """The decision record. The outcome is the most severe of the fired rules' and the
    model's; a remembered last score counts as the model's (path MODEL, reason
    ``LAST_SCORE_USED``, ``fallback_reason`` the live call's); otherwise on fallback the
    rules alone decide."""
    outcome = Outcome.APPROVE
    reasons: list[str] = []
    for result in rule_results:
        if result["fired"]:
            reasons.append(result["id"])
            proposed = Outcome(result["outcome"])
            if proposed.severity > outcome.severity:
                outcome = proposed
    if model.score is not None:
        proposed, reason = model_outcome(model.score, decline_at, review_at)
        if reason is not None:
            reasons.append(reason)
        if proposed.severity > outcome.severity:
            outcome = proposed
        if model.last_score is not None:
            reasons.append(LAST_SCORE_USED)
    return {
        "decision_id": decision_id_for(event["event_id"]),
        "event_id": event["event_id"],
        "card_id": event["card_id"],
        "customer_id": event["customer_id"],
        "outcome": outcome.value,
        "score": model.score,
        "path": PATH_MODEL if model.score is not None else PATH_RULES_ONLY,
        "fallback_reason": model.fallback_reason,
        "model_version": model.model_version if model.score is not None else None,
        "reasons": reasons,
        "late": late,
        "event_time": event["event_time"],
        "decided_at": decided_at,
        "schema_version": SCHEMA_VERSION,
    }
