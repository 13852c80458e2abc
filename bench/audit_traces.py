"""Simulated decisions and traces, built by the job's own code (decide, build_trace), to
fill the audit store in tests and benchmarks without running the job."""

from __future__ import annotations

import random
from typing import Any

import orjson

from decisioning.decision import ModelResult, decide
from decisioning.rules import evaluate_rules, load_rules
from decisioning.trace import build_trace
from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES

_RULES = load_rules()
T0 = 1_700_000_000_000


def decision_and_trace(i: int, *, card: str | None = None, customer: str | None = None,
                       decided_at: int | None = None, offset: int = 0,
                       rng: random.Random | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The i-th simulated decision and its trace (as the job writes it now), deterministic
    in ``i``."""
    rng = rng or random.Random(i)
    at = decided_at if decided_at is not None else T0 + i * 1_000
    event = {
        "event_id": f"sim-{i:010d}", "card_id": card or f"card-{rng.randrange(100_000)}",
        "customer_id": customer or f"cust-{rng.randrange(50_000)}",
        "merchant_id": f"m-{rng.randrange(5_000)}", "merchant_category": "5411",
        "amount": round(rng.uniform(1, 3_000), 2), "currency": "USD", "country": "US",
        "channel": "ecom", "event_time": at - 20,
    }
    features = {name: float(rng.randrange(10)) for name in FEATURE_NAMES}
    results = evaluate_rules(_RULES, event, features)
    score = rng.random()
    model = ModelResult(score, 3, None, 2.5, 16) if i % 50 else ModelResult(None, None, "timeout")
    decision = decide(event, results, model, decline_at=0.9, review_at=0.6, late=False,
                      decided_at=at)
    as_of = {v.name: {"as_of_event_time": at - 20, "watermark": at - 5_000,
                      "computed_at": at - 5} for v in ALL_VIEWS}
    trace = build_trace(
        decision=decision,
        source={"topic": "transactions", "partition": i % 4, "offset": offset or i,
                "key": event["card_id"], "raw": orjson.dumps(event).decode(),
                "kafka_timestamp": at - 30},
        event=event, views=ALL_VIEWS, features=features, as_of=as_of, rule_results=results,
        rules_version=_RULES.version,
        model_request={"name": "fraud", "signature_name": "serving_default",
                       "inputs": {name: features[name] for name in FEATURE_NAMES}},
        model=model, thresholds={"decline": 0.9, "review": 0.6},
        timings={"received": at - 12, "validated": at - 11, "card_features": at - 9,
                 "customer_features": at - 7, "scored": at - 2, "decided": at},
        job={"name": "rtd-decision-job", "code_version": "0.1.0", "config_digest": "bench",
             "rules_version": _RULES.version, "feature_views": {"card_features": 1}},
    )
    return decision, trace
