"""The drills' own judgements (bench/drills/judges.py, bench/reference_features.py) and
the hostile-input drill's payloads (simulator/hostile.py), on hand-made outputs: each
check must fail on the fault it is there to catch."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from bench.drills.core import DrillSettings
from bench.drills.judges import (
    DECISION_PARTS,
    JUDGES,
    TRACE_PARTS,
    Outputs,
    _slope_per_min,
    hostile_input,
    keep,
)
from bench.reference_features import all_features, judge_rows
from simulator.hostile import VALID, fuzzed_payloads
from tests.builders import SEC, T0, txn, v1_traces, v2_of_v1

pytestmark = pytest.mark.unit


def _event(event_id: str) -> dict:
    return txn("c1", 12.5, at=T0, event_id=event_id)


def test_fuzzed_payloads_have_unique_untouched_ids_and_the_corpus_outcomes():
    payloads = fuzzed_payloads(_event, 3_000, seed=4, now_ms=T0)
    assert len(payloads) == 3_000
    assert len({p.event_id for p in payloads}) == 3_000
    kinds = {p.name.split(":")[0] for p in payloads}
    assert {"corpus", "flip", "truncate", "garbage", "nest"} <= kinds
    for p in payloads:
        if p.name in ("flip", "odd-value", "drop-field", "extra-fields", "duplicate-key"):
            assert p.event_id.encode() in p.value, p  # no mutation touches the id
    corpus = [p for p in payloads if p.name.startswith("corpus:")]
    assert all(p.expected is not None for p in corpus)
    assert any(p.expected == VALID for p in corpus) and any(p.expected != VALID for p in corpus)
    # the same seed gives the same payloads
    again = fuzzed_payloads(_event, 3_000, seed=4, now_ms=T0)
    assert [p.value for p in again] == [p.value for p in payloads]


def _rows(events: list[dict], partition_of: dict[str, int]) -> list[dict]:
    """Rows as the job would decide them when it processes ``events`` in this order."""
    features = all_features(events)
    offsets: dict[int, int] = {}
    rows = []
    for e in events:
        p = partition_of[e["card_id"]]
        offsets[p] = offsets.get(p, -1) + 1
        rows.append({"event_id": e["event_id"], "partition": p, "offset": offsets[p],
                     "event": e, "features": dict(features[e["event_id"]]), "late": False})
    return rows


def _history() -> tuple[list[dict], dict[str, int]]:
    rng = random.Random(3)
    cards = {"a1": "cust-a", "a2": "cust-a", "b1": "cust-b"}
    partition_of = {"a1": 0, "a2": 1, "b1": 0}
    events = [txn(card, round(rng.uniform(1, 90), 2), at=T0 + i * 7 * SEC,
                  customer=cards[card], merchant=f"m{rng.randint(0, 3)}", event_id=f"e{i}")
              for i, card in enumerate(rng.choice(sorted(cards)) for _ in range(60))]
    return events, partition_of


def test_reference_judge_accepts_any_interleaving_of_partitions_and_catches_a_wrong_value():
    events, partition_of = _history()
    # The job may interleave partitions 0 and 1 differently from production order.
    on0 = [e for e in events if partition_of[e["card_id"]] == 0]
    on1 = [e for e in events if partition_of[e["card_id"]] == 1]
    interleaved = on1[:10] + on0[:25] + on1[10:] + on0[25:]
    verdict = judge_rows(_rows(interleaved, partition_of))
    assert verdict["mismatches"] == 0 and verdict["judged"] == 60
    assert verdict["customer_within_bounds"] > 0 and verdict["customer_exact"] > 0

    rows = _rows(events, partition_of)
    rows[30]["features"]["card_txn_count_1h"] += 1
    rows[40]["features"]["customer_txn_count_24h"] = 10_000
    verdict = judge_rows(rows)
    assert verdict["mismatches"] == 2
    assert {m["feature"] for m in verdict["first_mismatches"]} == {
        "card_txn_count_1h", "customer_txn_count_24h"}


def test_reference_judge_catches_card_order_broken_within_a_partition():
    events, partition_of = _history()
    rows = _rows(events, partition_of)
    b1 = [r for r in rows if r["event"]["card_id"] == "b1"]
    # Two events of one card decided as if processed the other way round.
    first, second = b1[3], b1[4]
    first["offset"], second["offset"] = second["offset"], first["offset"]
    assert judge_rows(rows)["mismatches"] > 0


def _hostile_ctx(payloads, placed):
    config = SimpleNamespace(kafka=SimpleNamespace(topics=SimpleNamespace(
        transactions="tx")))
    return SimpleNamespace(config=config, settings=DrillSettings(), actions=[], extra={
        "hostile": {"payloads": payloads, "placed": placed, "errors": [], "undelivered": 0}})


def test_hostile_judge_wants_exactly_one_outcome_per_payload():
    payloads = fuzzed_payloads(_event, 200, seed=9, now_ms=T0)
    placed = {i: (i % 2, i // 2) for i in range(len(payloads))}
    decisions, dead = [], []
    for i, p in enumerate(payloads):
        valid = p.expected == VALID or (p.expected is None and i % 3 == 0)
        if valid:
            decisions.append({"event_id": p.event_id})
        else:
            reason = p.expected or "not_json"
            dead.append({"topic": "tx", "partition": placed[i][0], "offset": placed[i][1],
                         "reason": reason})
    traces = [{"event_id": d["event_id"]} for d in decisions]
    ok = Outputs(decisions, [0] * len(decisions), traces, dead, {})
    checks, figures = hostile_input(ok, _hostile_ctx(payloads, placed))
    assert all(checks.values()), (checks, figures)

    untraced = Outputs(decisions, [0] * len(decisions), traces[1:], dead, {})
    checks, _ = hostile_input(untraced, _hostile_ctx(payloads, placed))
    assert not checks["every hostile decision has exactly one trace"]

    lost = Outputs(decisions[1:], [0] * (len(decisions) - 1), traces, dead, {})
    checks, _ = hostile_input(lost, _hostile_ctx(payloads, placed))
    assert not checks["every hostile payload: exactly one decision or one dead letter"]

    doubled = Outputs(decisions + decisions[:1], [0] * (len(decisions) + 1), traces, dead, {})
    checks, _ = hostile_input(doubled, _hostile_ctx(payloads, placed))
    assert not checks["every hostile payload: exactly one decision or one dead letter"]

    corpus_dead = next(d for d, p in zip(dead, [p for i, p in enumerate(payloads)
                                                if p.expected not in (VALID,)
                                                and not (p.expected is None and i % 3 == 0)],
                                         strict=False) if p.expected is not None)
    corpus_dead["reason"] = "wrong_reason"
    checks, _ = hostile_input(ok, _hostile_ctx(payloads, placed))
    assert not checks["corpus cases end as the contract says"]
    assert json.dumps(figures)  # the figures go to the JSON report


def test_slope_per_minute():
    assert _slope_per_min([(0, 100.0), (60, 110.0), (120, 120.0)]) == pytest.approx(10.0)
    assert _slope_per_min([(0, 1.0)]) is None


@pytest.mark.parametrize("trace", [*v1_traces(), *(v2_of_v1(t) for t in v1_traces())])
def test_a_trace_kept_for_a_judge_still_reads_back_what_that_judge_reads(trace):
    """The audit keeps only the parts of each output its drill's judge reads (an hour's
    soak held whole ran out of memory): what is kept must read back the same."""
    from decisioning.trace import trace_timings

    assert set(TRACE_PARTS) == set(JUDGES)
    assert trace_timings(trace), "a trace with no timings would prove nothing below"
    for name, parts in TRACE_PARTS.items():
        kept = keep(trace, parts)
        assert kept["event_id"] == trace["event_id"]
        if name in ("soak", "model-chaos"):
            assert trace_timings(kept) == trace_timings(trace)
            assert len(json.dumps(kept)) < len(json.dumps(trace)) / 3
    chaos = keep(trace, TRACE_PARTS["model-chaos"])
    assert (chaos["path"], chaos["model"]) == (trace["path"], trace["model"])
    assert keep(trace, TRACE_PARTS["rescale"]) is trace


def test_a_decision_keeps_what_the_audit_and_the_soak_read():
    decision = {"event_id": "e1", "decided_at": 5, "card_id": "c1", "outcome": "APPROVE",
                "reasons": []}
    assert keep(decision, DECISION_PARTS) == {"event_id": "e1", "decided_at": 5,
                                              "card_id": "c1"}
