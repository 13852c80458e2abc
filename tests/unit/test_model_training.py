"""Training on a replay dataset: metrics, the time split, the export gate and rollout.

The end-to-end test trains a small model (seconds) on a synthetic replay dataset whose
feature vectors come from the bootstrap generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feature_views.definitions import ALL_VIEWS, FEATURE_NAMES
from feature_views.rows import row_values, view_definitions
from model_training.bootstrap import simulate_feature_rows
from model_training.dataset import load_labelled, time_split
from model_training.metrics import (
    Scores,
    at_threshold,
    average_precision,
    curves,
    roc_auc,
    score,
)
from model_training.train import better
from replay.dataset import build_table, write_dataset
from replay.labels import Label
from serving.model_signature import CHANNELS, MODEL_INPUT_NAMES
from serving.model_store import list_versions
from tests.builders import SEC, T0

pytestmark = pytest.mark.unit


def test_auc_and_average_precision_on_known_cases():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(curves(y, np.array([0.1, 0.2, 0.8, 0.9]))) == 1.0
    assert average_precision(curves(y, np.array([0.1, 0.2, 0.8, 0.9]))) == 1.0
    assert roc_auc(curves(y, np.array([0.9, 0.8, 0.2, 0.1]))) == 0.0
    assert roc_auc(curves(y, np.full(4, 0.5))) == 0.5  # ties earn half credit
    # ranks: 1 (pos), 0 (neg), 1 (pos), 0 -> AP = (1/1 * 1/2) + (2/3 * 1/2)
    y = np.array([1, 0, 1, 0])
    assert average_precision(curves(y, np.array([0.9, 0.8, 0.7, 0.1]))) == pytest.approx(
        0.5 + (2 / 3) * 0.5)
    assert np.isnan(roc_auc(curves(np.zeros(3), np.array([0.1, 0.2, 0.3]))))


def test_precision_and_recall_at_a_threshold():
    y = np.array([1, 0, 1, 1, 0])
    s = np.array([0.95, 0.91, 0.7, 0.2, 0.1])
    decline = at_threshold(y, s, 0.9)
    assert (decline.flagged, decline.precision, decline.recall) == (2, 0.5, 1 / 3)
    nothing = at_threshold(y, s, 0.99)
    assert nothing.flagged == 0 and np.isnan(nothing.precision) and nothing.recall == 0.0
    assert score("x", y, s, (0.9, 0.6)).at_threshold(0.6).recall == 2 / 3


def scores(pr_auc: float) -> Scores:
    return Scores("s", 0.9, pr_auc, (), curves(np.array([0, 1]), np.array([0.1, 0.9])))


def test_export_gate_wants_a_strictly_higher_holdout_pr_auc():
    assert better(scores(0.71), scores(0.70))[0]
    assert not better(scores(0.70), scores(0.70))[0]
    assert not better(scores(0.60), scores(0.70))[0]
    assert better(scores(0.1), None) == (True, "no serving model to compare with")
    assert not better(scores(float("nan")), None)[0]


def write_synthetic_dataset(path: Path, rows: int = 3000, seed: int = 3) -> None:
    """A replay dataset whose feature vectors and labels come from the bootstrap
    generator; event time increases with the row index."""
    matrix, fraud = simulate_feature_rows(rows, fraud_rate=0.08, seed=seed)
    col = {name: matrix[:, i] for i, name in enumerate(MODEL_INPUT_NAMES)}
    records, labels = [], {}
    for i in range(rows):
        channel = CHANNELS[int(np.argmax([col[f"channel_{c}"][i] for c in CHANNELS]))]
        event = {"event_id": f"e{i:05d}", "event_time": T0 + i * SEC, "card_id": f"c{i % 97}",
                 "customer_id": f"u{i % 89}", "merchant_id": "m1", "merchant_category": "5411",
                 "amount": float(col["amount"][i]), "currency": "USD", "country": "US",
                 "channel": channel}
        records.append(row_values(
            event, {"partition": 0, "offset": i, "kafka_timestamp": T0},
            {n: float(col[n][i]) for n in FEATURE_NAMES}, {}, False, ALL_VIEWS))
        if i % 50:  # every 50th label is not known yet at the cutoff
            labels[event["event_id"]] = Label(bool(fraud[i]), event["event_time"] + SEC)
    manifest = {"views": view_definitions(ALL_VIEWS), "cutoff_ms": T0 + rows * SEC,
                "summary": {"rows": rows}}
    write_dataset(build_table(records, labels, ALL_VIEWS, manifest), path, manifest)


def test_time_split_trains_on_the_past_and_holds_out_the_future(tmp_path):
    write_synthetic_dataset(tmp_path / "ds", rows=500)
    data, _ = load_labelled(tmp_path / "ds")
    assert len(data) == 490 and data.skipped == {"no label known at the cutoff": 10}
    train, holdout, cut = time_split(data, 0.2)
    assert len(train) + len(holdout) == len(data) and len(holdout) == 98
    assert train.event_time.max() < cut <= holdout.event_time.min()
    # the inputs are serving's: column order of MODEL_INPUT_NAMES
    assert data.inputs.shape == (490, len(MODEL_INPUT_NAMES))


def test_train_exports_only_a_better_model_unless_forced(tmp_path):
    from model_training.report import write_report
    from model_training.train import TrainSettings, train_and_evaluate

    write_synthetic_dataset(tmp_path / "ds")
    base = tmp_path / "models"
    settings = TrainSettings(dataset=tmp_path / "ds", base_path=base, epochs=3, seed=5)
    first = train_and_evaluate(settings)
    assert first.exported and first.published == base / "1" and list_versions(base) == [1]
    assert first.serving is None and first.candidate.auc > 0.8

    # the same data and seed: usually the same model, so usually not exported; either
    # way the gate follows the holdout PR-AUC and leaves no partial version behind
    second = train_and_evaluate(settings)
    assert second.candidate_version == 2 and second.serving_version == 1
    assert second.exported == (second.candidate.pr_auc > second.serving.pr_auc)
    assert list_versions(base) == ([1, 2] if second.exported else [1])
    if second.exported:
        return
    assert "<=" in second.reason

    forced = train_and_evaluate(TrainSettings(**{**settings.__dict__, "force": True}))
    assert forced.exported and list_versions(base) == [1, 2]
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no staging left

    report = tmp_path / "docs" / "model_evaluation.md"
    roc, pr = write_report(forced, report, "rtd train --force")
    text = report.read_text()
    assert roc.stat().st_size > 1000 and pr.stat().st_size > 1000
    for expected in ("candidate v2", "serving v1", "rules only", "precision @0.9",
                     "recall @0.6", "Exported as version 2", "img/model_roc.png"):
        assert expected in text
