import pytest

from decisioning.decision import ModelResult, decide, decision_id_for
from decisioning.rules import Rule, RuleSet, evaluate_rules, load_rules
from feature_views.definitions import FEATURE_NAMES

pytestmark = pytest.mark.unit

QUIET = {name: 0 for name in FEATURE_NAMES}
EVENT = {"event_id": "e1", "card_id": "c1", "customer_id": "u1", "amount": 10.0,
         "event_time": 1000}
RULES = load_rules()


def run(features=None, event=None, score=0.1, fallback=None):
    features = {**QUIET, **(features or {})}
    event = {**EVENT, **(event or {})}
    results = evaluate_rules(RULES, event, features)
    model = (ModelResult(score, 3, None, 1.0, 8) if fallback is None
             else ModelResult(None, None, fallback))
    return decide(event, results, model, decline_at=0.9, review_at=0.6, late=False,
                  decided_at=2000)


def test_default_rules_are_the_contracts():
    assert [(r.id, r.input, r.op, r.value, r.outcome.value) for r in RULES.rules] == [
        ("VELOCITY_1M", "card_txn_count_1m", ">=", 5, "DECLINE"),
        ("EXPOSURE_24H", "customer_amount_sum_24h", ">", 5000, "REVIEW"),
        ("GEO_JUMP_10M", "card_country_changed_10m", "==", 1, "REVIEW"),
        ("HIGH_AMOUNT", "amount", ">=", 2000, "REVIEW"),
    ]
    RULES.check_inputs(FEATURE_NAMES)


@pytest.mark.parametrize("features, event, fired, outcome", [
    ({"card_txn_count_1m": 4}, None, [], "APPROVE"),
    ({"card_txn_count_1m": 5}, None, ["VELOCITY_1M"], "DECLINE"),
    ({"customer_amount_sum_24h": 5000}, None, [], "APPROVE"),
    ({"customer_amount_sum_24h": 5000.01}, None, ["EXPOSURE_24H"], "REVIEW"),
    ({"card_country_changed_10m": 1}, None, ["GEO_JUMP_10M"], "REVIEW"),
    (None, {"amount": 1999.99}, [], "APPROVE"),
    (None, {"amount": 2000}, ["HIGH_AMOUNT"], "REVIEW"),
    ({"card_txn_count_1m": 9, "card_country_changed_10m": 1}, None,
     ["VELOCITY_1M", "GEO_JUMP_10M"], "DECLINE"),
])
def test_rule_thresholds_are_exact(features, event, fired, outcome):
    d = run(features, event)
    assert d["reasons"] == fired and d["outcome"] == outcome and d["path"] == "MODEL"


@pytest.mark.parametrize("score, outcome, reason", [
    (0.59999, "APPROVE", None), (0.6, "REVIEW", "MODEL_SCORE_REVIEW"),
    (0.89999, "REVIEW", "MODEL_SCORE_REVIEW"), (0.9, "DECLINE", "MODEL_SCORE_DECLINE"),
])
def test_model_thresholds(score, outcome, reason):
    d = run(score=score)
    assert d["outcome"] == outcome
    assert d["reasons"] == ([reason] if reason else [])
    assert d["score"] == score and d["model_version"] == 3


def test_most_severe_of_rules_and_model_wins():
    assert run({"card_country_changed_10m": 1}, score=0.95)["outcome"] == "DECLINE"
    assert run({"card_txn_count_1m": 5}, score=0.0)["outcome"] == "DECLINE"
    assert run({"card_country_changed_10m": 1}, score=0.0)["outcome"] == "REVIEW"


@pytest.mark.parametrize("reason", ["timeout", "unavailable", "shed", "error"])
def test_fallback_decides_by_rules_alone(reason):
    d = run({"card_country_changed_10m": 1}, fallback=reason)
    assert d["path"] == "RULES_ONLY" and d["fallback_reason"] == reason
    assert d["score"] is None and d["model_version"] is None
    assert d["outcome"] == "REVIEW" and d["reasons"] == ["GEO_JUMP_10M"]


def test_decision_record_has_every_contract_field():
    d = run()
    assert set(d) == {"decision_id", "event_id", "card_id", "customer_id", "outcome", "score",
                      "path", "fallback_reason", "model_version", "reasons", "late",
                      "event_time", "decided_at", "schema_version"}


def test_decision_id_is_deterministic_and_distinct():
    assert decision_id_for("e1") == decision_id_for("e1") == run()["decision_id"]
    assert decision_id_for("e1") != decision_id_for("e2")


def test_rule_sets_reject_bad_data():
    with pytest.raises(ValueError):
        Rule(id="X", input="amount", op=">=", value=1, outcome="APPROVE")
    with pytest.raises(ValueError):
        RuleSet(version="v", rules=(Rule(id="X", input="amount", op=">", value=1,
                                         outcome="REVIEW"),) * 2)
    bad = RuleSet(version="v", rules=(Rule(id="X", input="nope", op=">", value=1,
                                           outcome="REVIEW"),))
    with pytest.raises(ValueError, match="unknown inputs"):
        bad.check_inputs(FEATURE_NAMES)


def test_model_result_needs_score_xor_fallback():
    with pytest.raises(ValueError):
        ModelResult(0.5, 1, "timeout")
    with pytest.raises(ValueError):
        ModelResult(None, None, None)
    with pytest.raises(ValueError):
        ModelResult(None, None, "bogus")
