"""The fallback ladder's pure logic, and how a last-score result shows in decision and trace."""

from __future__ import annotations

import pytest

from decisioning.decision import LAST_SCORE_USED, LastScore, ModelResult, decide
from decisioning.fallback_ladder import FallbackLadder, Remembered, Step
from decisioning.rules import evaluate_rules, load_rules
from decisioning.trace import (
    build_trace,
    is_complete,
    model_result_from_trace,
    trace_event,
    trace_rules,
)
from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES
from tests.builders import HOUR, MIN, T0, encode, txn

pytestmark = pytest.mark.unit

MAX_AGE = 10 * MIN
RULES = load_rules()
QUIET = {name: 0 for name in FEATURE_NAMES}


def live(score: float = 0.7, version: int = 3) -> ModelResult:
    return ModelResult(score, version, None, latency_ms=2.0, batch_size=4)


def failed(reason: str = "timeout") -> ModelResult:
    return ModelResult(None, None, reason, detail="no answer within 250 ms")


def remembered(at: int = T0, score: float = 0.7, event_id: str = "earlier") -> Remembered:
    return Remembered(score, 3, event_id, at)


def test_a_live_score_is_used_as_is_and_remembered() -> None:
    event = txn("c1", at=T0 + MIN)
    outcome = FallbackLadder(MAX_AGE).apply(live(0.42), event, remembered(T0))
    assert outcome.step is Step.LIVE
    assert outcome.model == live(0.42)
    assert outcome.remember == Remembered(0.42, 3, event["event_id"], T0 + MIN)


def test_a_live_score_of_an_earlier_event_does_not_replace_a_later_one() -> None:
    """Unordered scoring: the card's later event answered first; "last" is by event time."""
    outcome = FallbackLadder(MAX_AGE).apply(live(), txn("c1", at=T0), remembered(T0 + MIN))
    assert outcome.step is Step.LIVE and outcome.remember is None


@pytest.mark.parametrize("reason", ["timeout", "unavailable", "error", "shed"])
def test_a_failed_call_uses_a_recent_last_score_and_keeps_its_cause(reason: str) -> None:
    event = txn("c1", at=T0 + 4 * MIN)
    outcome = FallbackLadder(MAX_AGE).apply(failed(reason), event, remembered(T0, 0.93, "e0"))
    assert outcome.step is Step.LAST_SCORE and outcome.remember is None
    model = outcome.model
    assert (model.score, model.model_version, model.fallback_reason) == (0.93, 3, reason)
    assert model.last_score == LastScore(0.93, 3, "e0", T0, 4 * MIN, MAX_AGE)
    assert not model.live


@pytest.mark.parametrize("age, step", [
    (MAX_AGE, Step.LAST_SCORE),
    (MAX_AGE + 1, Step.TOO_OLD),
    (-MAX_AGE, Step.LAST_SCORE),  # a score of a later event of the card, within max age
    (-MAX_AGE - 1, Step.TOO_OLD),
])
def test_max_age_is_inclusive_and_on_event_time(age: int, step: Step) -> None:
    outcome = FallbackLadder(MAX_AGE).apply(failed(), txn("c1", at=T0 + age), remembered(T0))
    assert outcome.step is step
    if step is Step.TOO_OLD:
        assert outcome.model == failed()


def test_no_last_score_leaves_the_failure_to_the_rules() -> None:
    outcome = FallbackLadder(MAX_AGE).apply(failed("unavailable"), txn("c1"), None)
    assert (outcome.step, outcome.model, outcome.remember) == (
        Step.NO_LAST_SCORE, failed("unavailable"), None)


def test_max_age_zero_turns_the_ladder_off_state_included() -> None:
    ladder = FallbackLadder(0)
    assert not ladder.enabled
    assert ladder.apply(failed(), txn("c1", at=T0), remembered(T0)).step is Step.DISABLED
    outcome = ladder.apply(live(), txn("c1"), None)
    assert outcome.step is Step.LIVE and outcome.remember is None  # nothing to write
    with pytest.raises(ValueError):
        FallbackLadder(-1)


def test_expiry_keeps_what_an_event_on_time_can_still_use() -> None:
    ladder = FallbackLadder(MAX_AGE)
    lateness = MIN
    newest = T0 + HOUR
    oldest_on_time = newest - lateness
    assert not ladder.expired(remembered(oldest_on_time - MAX_AGE), newest, lateness)
    assert ladder.expired(remembered(oldest_on_time - MAX_AGE - 1), newest, lateness)



def decided(model: ModelResult, features: dict | None = None, amount: float = 10.0) -> dict:
    event = txn("c1", amount, at=T0)
    results = evaluate_rules(RULES, event, {**QUIET, **(features or {})})
    return decide(event, results, model, decline_at=0.9, review_at=0.6, late=False,
                  decided_at=T0 + 5)


def used_last_score(score: float, reason: str = "timeout") -> ModelResult:
    return FallbackLadder(MAX_AGE).apply(
        failed(reason), txn("c1", at=T0 + MIN), remembered(T0, score)).model


def test_a_last_score_decides_like_a_model_score_and_says_so() -> None:
    decision = decided(used_last_score(0.95, "unavailable"), {"card_country_changed_10m": 1})
    assert decision["path"] == "MODEL"
    assert decision["score"] == 0.95 and decision["model_version"] == 3
    assert decision["fallback_reason"] == "unavailable"
    assert decision["outcome"] == "DECLINE"
    assert decision["reasons"] == ["GEO_JUMP_10M", "MODEL_SCORE_DECLINE", LAST_SCORE_USED]


def test_a_low_last_score_still_marks_the_decision() -> None:
    decision = decided(used_last_score(0.1))
    assert (decision["outcome"], decision["reasons"]) == ("APPROVE", [LAST_SCORE_USED])


def test_rules_only_and_live_decisions_carry_no_ladder_mark() -> None:
    assert decided(failed())["path"] == "RULES_ONLY"
    assert LAST_SCORE_USED not in decided(failed())["reasons"]
    assert LAST_SCORE_USED not in decided(live(0.95))["reasons"]
    assert decided(live(0.95))["fallback_reason"] is None


def test_a_last_score_result_must_be_consistent() -> None:
    last = LastScore(0.5, 3, "e0", T0, MIN, MAX_AGE)
    with pytest.raises(ValueError):
        ModelResult(0.5, 3, None, last_score=last)  # no live cause
    with pytest.raises(ValueError):
        ModelResult(0.6, 3, "timeout", last_score=last)  # another score
    with pytest.raises(ValueError):
        ModelResult(0.5, 4, "timeout", last_score=last)  # another version


def trace_for(model: ModelResult) -> tuple[dict, dict]:
    event = txn("c1", at=T0)
    results = evaluate_rules(RULES, event, QUIET)
    decision = decide(event, results, model, decline_at=0.9, review_at=0.6, late=False,
                      decided_at=T0 + 5)
    as_of = {v.name: {"as_of_event_time": T0} for v in ALL_VIEWS}
    trace = build_trace(
        decision=decision,
        source={"topic": "t", "partition": 0, "offset": 1, "raw": encode(event).decode()},
        event=event, views=ALL_VIEWS, features=QUIET, as_of=as_of, rule_results=results,
        rules_version=RULES.version, model_request={"name": "fraud"}, model=model,
        thresholds={"decline": 0.9, "review": 0.6}, timings={}, job={})
    return decision, trace


@pytest.mark.parametrize("model", [live(0.3), failed("error"), used_last_score(0.8)],
                         ids=["live", "rules-only", "last-score"])
def test_the_trace_records_each_rung_and_rederives_its_decision(model: ModelResult) -> None:
    decision, trace = trace_for(model)
    assert is_complete(trace, FEATURE_NAMES)
    assert model_result_from_trace(trace).score == model.score
    again = decide(trace_event(trace), trace_rules(trace), model_result_from_trace(trace),
                   decline_at=0.9, review_at=0.6, late=False, decided_at=T0 + 5)
    assert again == decision


def test_a_last_score_trace_has_no_live_response_but_the_score_and_its_age() -> None:
    _, trace = trace_for(used_last_score(0.8))
    assert trace["model"]["response"] is None
    assert trace["model"]["fallback_reason"] == "timeout"
    assert trace["model"]["last_score"] == {"score": 0.8, "model_version": 3,
                                            "event_id": "earlier", "event_time": T0,
                                            "age_ms": MIN, "max_age_ms": MAX_AGE}
    assert trace["path"] == "MODEL" and trace["score"] == 0.8


def test_a_model_path_trace_without_a_score_source_is_incomplete() -> None:
    _, trace = trace_for(used_last_score(0.8))
    trace["model"]["last_score"] = None
    assert not is_complete(trace, FEATURE_NAMES)


def test_explain_says_which_last_score_decided() -> None:
    from rtd.explain import explanation_lines

    _, trace = trace_for(used_last_score(0.8))
    trace["model"]["name"] = "fraud"
    trace["job"] = {"name": "j", "code_version": "0", "config_digest": "d",
                    "rules_version": "r", "feature_views": {}}
    text = "\n".join(explanation_lines(trace))
    assert "Live model call failed: 'timeout'" in text
    assert "last score 0.8000 from model v3 (event earlier, 60 s of event time earlier" in text
    assert "rules alone decided" not in text


@pytest.mark.parametrize("reason", ["timeout", "unavailable", "error"])
def test_by_default_a_failed_call_is_decided_by_the_rules_alone(reason: str) -> None:
    """The shared contract: "On fallback the rules alone decide". The last-score rung is
    opt-in, so the default config gives RULES_ONLY with the cause, no score, no version."""
    from rtd_core.config import RtdConfig

    ladder = FallbackLadder(RtdConfig().serving.last_score_max_age_ms)
    assert not ladder.enabled
    event = txn("c1", at=T0 + MIN, amount=2_500.0)
    outcome = ladder.apply(failed(reason), event, remembered(T0, 0.99))
    assert outcome.step is Step.DISABLED and outcome.remember is None
    decision = decide(event, evaluate_rules(RULES, event, QUIET), outcome.model,
                      decline_at=0.9, review_at=0.6, late=False, decided_at=T0 + MIN)
    assert decision["path"] == "RULES_ONLY"
    assert decision["fallback_reason"] == reason
    assert decision["score"] is None and decision["model_version"] is None
    assert decision["outcome"] == "REVIEW" and decision["reasons"] == ["HIGH_AMOUNT"]
