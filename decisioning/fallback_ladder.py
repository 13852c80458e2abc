"""The fallback ladder: live model score -> the card's last model score -> rules only.

Each step has its own mark on the decision (see docs/contract.md, "Fallback ladder"):

1. live score: path ``MODEL``, ``fallback_reason`` null;
2. last score: the live call failed, but the card had a live score for an event within
   ``max_age_ms`` of this one's event time: path ``MODEL``, ``score``/``model_version``
   the remembered ones, ``fallback_reason`` the live call's cause, reason code
   ``LAST_SCORE_USED``; the trace's ``model.last_score`` says which event it came from
   and how old it is;
3. rules only: path ``RULES_ONLY``, ``fallback_reason`` the live call's cause.

Why event time for the age: the question is whether the card's behaviour since that
score can have moved far from it, and the events between are what move it. Wall-clock
age would treat a score from an hour-old backlog event as fresh while a job catches up.
Why the absolute age: under unordered async scoring a card's later event can be scored
before an earlier one; a score of a nearby later event is as representative.

The Flink shell (operators/fallback_ladder.py) keeps one ``Remembered`` per card in keyed
state; this module decides what to remember, what to use and what may be forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from decisioning.decision import LastScore, ModelResult


@dataclass(frozen=True, slots=True)
class Remembered:
    """The last live model score of a card: what keyed state holds per card."""

    score: float
    model_version: int
    event_id: str
    event_time: int


class Step(Enum):
    """Which rung decided the model part, for metrics and tests."""

    LIVE = "live"  # the live call answered (and its score may be remembered)
    LAST_SCORE = "last_score"  # the live call failed; the remembered score was used
    NO_LAST_SCORE = "no_last_score"  # failed, and nothing remembered for the card
    TOO_OLD = "too_old"  # failed, and the remembered score is beyond max age
    DISABLED = "disabled"  # failed, and the ladder is off (max age 0)


@dataclass(frozen=True, slots=True)
class LadderOutcome:
    model: ModelResult  # what the decision uses
    step: Step
    remember: Remembered | None  # a new value for the card's state; None: leave it


class FallbackLadder:
    """Pure ladder logic; ``max_age_ms`` 0 turns the second step (and its state) off."""

    def __init__(self, max_age_ms: int) -> None:
        if max_age_ms < 0:
            raise ValueError(f"max_age_ms must be >= 0, got {max_age_ms}")
        self.max_age_ms = max_age_ms

    @property
    def enabled(self) -> bool:
        return self.max_age_ms > 0

    def apply(
        self, model: ModelResult, event: Mapping[str, Any], last: Remembered | None
    ) -> LadderOutcome:
        """The model result to decide ``event`` with, given the card's remembered score."""
        if model.score is not None:
            return LadderOutcome(model, Step.LIVE, self._to_remember(model, event, last))
        if not self.enabled:
            return LadderOutcome(model, Step.DISABLED, None)
        if last is None:
            return LadderOutcome(model, Step.NO_LAST_SCORE, None)
        age_ms = int(event["event_time"]) - last.event_time
        if abs(age_ms) > self.max_age_ms:
            return LadderOutcome(model, Step.TOO_OLD, None)
        used = ModelResult(
            score=last.score,
            model_version=last.model_version,
            fallback_reason=model.fallback_reason,
            detail=model.detail,
            last_score=LastScore(
                score=last.score,
                model_version=last.model_version,
                event_id=last.event_id,
                event_time=last.event_time,
                age_ms=age_ms,
                max_age_ms=self.max_age_ms,
            ),
        )
        return LadderOutcome(used, Step.LAST_SCORE, None)

    def _to_remember(
        self, model: ModelResult, event: Mapping[str, Any], last: Remembered | None
    ) -> Remembered | None:
        """A live score replaces the card's remembered one unless that is of a later event
        (unordered scoring can finish a card's events out of order): "last" is by event
        time, so the state does not depend on which call happened to answer first."""
        if not self.enabled or not model.live:
            return None
        assert model.score is not None and model.model_version is not None
        event_time = int(event["event_time"])
        if last is not None and last.event_time > event_time:
            return None
        return Remembered(model.score, model.model_version, str(event["event_id"]), event_time)

    def expired(self, remembered: Remembered, newest_event_time: int, lateness_ms: int) -> bool:
        """Whether no event that is not late can use ``remembered`` any more: it is older
        than max age before the oldest event time still on time, ``newest_event_time``
        (the newest seen) minus the allowed lateness. Late events beyond that fall back
        to rules only, which is what they would get after a restart anyway."""
        return remembered.event_time < newest_event_time - lateness_ms - self.max_age_ms
