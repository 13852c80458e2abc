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

PATH_MODEL = "MODEL"
PATH_RULES_ONLY = "RULES_ONLY"
FALLBACK_REASONS = ("timeout", "unavailable", "shed", "error")


def decision_id_for(event_id: str) -> str:
    return str(uuid.uuid5(DECISION_ID_NAMESPACE, event_id))


@dataclass(frozen=True, slots=True)
class ModelResult:
    """What the model stage produced: a score, or the reason it has none."""

    score: float | None
    model_version: int | None
    fallback_reason: str | None
    latency_ms: float | None = None
    batch_size: int | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if (self.score is None) == (self.fallback_reason is None):
            raise ValueError("a model result has either a score or a fallback reason")
        if self.fallback_reason is not None and self.fallback_reason not in FALLBACK_REASONS:
            raise ValueError(f"unknown fallback reason {self.fallback_reason!r}")


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
    model's; on fallback the rules alone decide."""
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
