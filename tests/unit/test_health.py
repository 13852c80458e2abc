"""Health computations against numbers worked out by hand (audit/health.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from audit.health import (
    MINUTE_MS,
    HealthMonitor,
    Label,
    Tally,
    accuracy,
    at_threshold,
    ordinal_auc,
    percentile,
    read_label,
)
from audit.records import DecisionRef, read_trace
from bench.audit_traces import decision_and_trace
from model_training.score_distribution import ScoreDistribution, from_scores, psi
from rtd_core.config import AuditConfig, ThresholdsConfig

pytestmark = pytest.mark.unit
T = ThresholdsConfig()  # the contract's: decline 0.90, review 0.60
M0 = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE_MS


def test_nearest_rank_percentiles():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile([5, 1, 3], 50) == 3  # rank ceil(1.5) = 2 of [1, 3, 5]
    assert percentile([], 99) is None


def test_precision_recall_fpr_and_auc_by_hand():
    t = Tally()
    for fraud, score in ((True, 0.95), (True, 0.5), (False, 0.7), (False, 0.1),
                         (False, 0.65)):
        t.add(fraud, "APPROVE", "APPROVE", score, T)
    model = accuracy(t, T)["model_score"]
    review = model["review"]  # flags 0.95, 0.7, 0.65
    assert (review["tp"], review["fp"]) == (1, 2)
    assert review["precision"] == pytest.approx(1 / 3)
    assert review["recall"] == pytest.approx(1 / 2)
    assert review["fpr"] == pytest.approx(2 / 3)
    assert model["decline"]["precision"] == 1.0 and model["decline"]["fpr"] == 0.0
    # Fraud-legitimate pairs ranked right: 0.95 beats all three, 0.5 beats 0.1: 4 of 6.
    assert model["auc"] == pytest.approx(4 / 6)
    # Ordinal levels: fraud at REVIEW, DECLINE; legitimate at APPROVE, REVIEW.
    # Pairs: (R, A) right, (R, R) tie, (D, A) right, (D, R) right: 3.5 of 4.
    assert ordinal_auc(np.array([0, 1, 1]), np.array([1, 1, 0])) == pytest.approx(3.5 / 4)
    assert ordinal_auc(np.array([0, 0, 0]), np.array([1, 0, 0])) is None
    nothing = at_threshold(0.6, 0, 0, 0, 1)
    assert nothing["precision"] is None and nothing["recall"] is None and nothing["fpr"] == 0


def test_psi_by_hand_and_from_recorded_training_scores():
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    rng = np.random.default_rng(1)
    training = from_scores(rng.beta(1, 8, 20_000), "test")
    assert len(training.fractions) == 10
    assert all(f == pytest.approx(0.1, abs=0.01) for f in training.fractions)
    same = psi(training.fractions, training.shares(rng.beta(1, 8, 20_000)).tolist())
    shifted = psi(training.fractions, training.shares(rng.beta(4, 4, 20_000)).tolist())
    assert same < 0.01
    assert shifted > 0.25


def row(i: int, *, decided_at: int, appended_at: int | None = None, **kw: object):
    base = read_trace(decision_and_trace(i)[1])
    return dataclasses.replace(base, decided_at=decided_at,
                               appended_at=decided_at - 30 if appended_at is None else appended_at,
                               **kw)


def monitor(**settings: object) -> HealthMonitor:
    dist = ScoreDistribution((0.0, 0.5, 1.0), (0.5, 0.5), 100, "test")
    return HealthMonitor(AuditConfig(**settings), T, lambda v: dist if v == 3 else None)


def test_latency_fallback_freshness_and_visibility_per_minute():
    h = monitor(tile_window_min=5)
    rows = [row(i, decided_at=M0 + i, appended_at=M0 + i - (i + 1)) for i in range(100)]
    rows = [dataclasses.replace(r, fallback_reason="timeout" if i < 3 else
                                ("shed" if i < 5 else None)) for i, r in enumerate(rows)]
    h.observe_rows(rows)
    h.observe_decisions([DecisionRef(r.decision_id, r.event_id, r.card_id, r.decided_at)
                         for r in rows], seen_at_ms=M0 + 1_000)
    h.observe_completeness(0.5, M0 + 20_000)
    snap = h.snapshot(M0 + 30_000, None)
    assert snap["series"][-1]["completeness"] == 0.5
    assert snap["latency_ms"] == {"p50": 50.0, "p99": 99.0, "p999": 100.0}
    # seen at M0 + 1000, decided at M0 + 0..99: 901..1000
    assert snap["visibility_ms"]["p50"] == 950.0
    assert snap["fallback"] == {"rate": 0.05, "causes": {"timeout": 3, "shed": 2}}
    assert snap["traffic"]["decisions"] == 100
    assert set(snap["freshness_p99_ms"]) == set(rows[0].freshness_ms)
    assert snap["series"][-1]["decisions"] == 100


def test_accuracy_waits_for_maturity_and_compares_with_rules_only():
    h = monitor(label_maturity_ms=60_000, accuracy_windows_min=(5,))
    # Four labelled events, all on the model path of v3, decided in minute M0:
    #   fraud, model 0.95 (DECLINE), rules APPROVE   -> decision catches it, rules miss
    #   fraud, model 0.10, rules REVIEW (HIGH_AMOUNT) -> both flag it (decision REVIEW)
    #   legit, model 0.70 (REVIEW), rules APPROVE    -> decision false positive
    #   legit, model 0.05, rules APPROVE              -> true negative
    spec = [(True, 0.95, "DECLINE", "APPROVE"), (True, 0.10, "REVIEW", "REVIEW"),
            (False, 0.70, "REVIEW", "APPROVE"), (False, 0.05, "APPROVE", "APPROVE")]
    rows = [row(i, decided_at=M0 + 1_000 * i, score=s, outcome=o, rules_outcome=ro,
                path="MODEL", model_version=3) for i, (_, s, o, ro) in enumerate(spec)]
    h.observe_rows(rows)
    by_event = {r.event_id: r for r in rows}
    for r, (fraud, *_rest) in zip(rows, spec, strict=True):
        h.observe_label(Label(r.event_id, fraud, M0 + 40_000), M0 + 40_000)
    h.observe_label(Label("not-decided", True, M0), M0 + 40_000)
    assert h.join(by_event.get, M0 + 40_000) == 4
    assert h.snapshot(M0 + 50_000, None)["accuracy"]["windows"]["5"]["labelled"] == 0

    snap = h.snapshot(M0 + 2 * MINUTE_MS, None)  # minute M0 is now mature
    window = snap["accuracy"]["windows"]["5"]
    assert window["labelled"] == 4 and window["decided_seen"] == 4
    group = next(g for g in window["groups"] if g["model_version"] == 3)
    assert group["path"] == "MODEL" and group["fraud"] == 2
    assert group["decision"]["review"]["precision"] == pytest.approx(2 / 3)
    assert group["decision"]["review"]["recall"] == 1.0
    assert group["decision"]["review"]["fpr"] == 0.5
    assert group["rules_only"]["review"]["precision"] == 1.0
    assert group["rules_only"]["review"]["recall"] == 0.5
    assert group["rules_only"]["review"]["fpr"] == 0.0
    assert group["model_score"]["review"]["recall"] == 0.5
    # Model scores: fraud 0.95, 0.10; legit 0.70, 0.05: 3 of 4 pairs ranked right.
    assert group["model_score"]["auc"] == pytest.approx(3 / 4)
    assert snap["accuracy"]["labels_pending"] == 1
    assert h.join(by_event.get, M0 + 40_000 + AuditConfig().label_wait_ms + 1) == 0
    assert h.unmatched == 1 and not h.pending
    series = h.accuracy_series(M0 + 2 * MINUTE_MS, 3)
    assert series[-1]["minute"] == M0 and series[-1]["decision_recall"] == 1.0
    assert series[-1]["rules_only_recall"] == 0.5
    drift = snap["drift"]
    assert drift[0]["model_version"] == 3 and drift[0]["scores"] == 4
    # Live shares 2/4 below 0.5 and 2/4 above: the training distribution's, PSI 0.
    assert drift[0]["psi"] == 0.0


def test_history_is_pruned_and_bad_labels_raise_value_error():
    h = monitor(health_history_min=2)
    h.observe_rows([row(0, decided_at=M0)])
    h.prune(M0 + 10 * MINUTE_MS)
    assert not h.minutes
    assert read_label(b'{"event_id":"e","is_fraud":true,"labeled_at":5}') == Label("e", True, 5)
    for bad in (b"nope", b'{"event_id":"e"}', None):
        with pytest.raises(ValueError):
            read_label(bad)


def test_a_minute_keeps_a_bounded_uniform_sample(monkeypatch):
    from audit import health

    monkeypatch.setattr(health, "SAMPLE_CAP", 1_000)
    sample = health.Sample()
    for v in range(100_000):
        sample.add(v)
    assert len(sample) == 1_000 and sample.seen == 100_000
    # Uniform over 0..99,999: the median of the sample lands near 50,000.
    assert 40_000 < percentile(sample, 50) < 60_000
    small = health.Sample()
    for v in (3, 1, 2):
        small.add(v)
    assert sorted(small) == [1, 2, 3]


def test_score_bins_keep_the_order_of_small_scores():
    from audit.health import SCORE_BINS, score_bin

    scores = [0.0, 1e-10, 2e-8, 3e-8, 1.5e-5, 1.6e-5, 9.99e-4, 1e-3, 0.5, 0.999, 1.0]
    bins = [score_bin(x) for x in scores]
    assert bins == sorted(bins) and bins[-1] == SCORE_BINS - 1
    # Distinct bins where a fraud model's legitimate mass lies (within 1% relative).
    assert len(set(bins[2:7])) == 5
