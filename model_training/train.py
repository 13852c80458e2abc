"""Train on a replay dataset, evaluate against the serving model and the rules, and roll
out the next SavedModel version only when it is better on the holdout (or forced).

The candidate is exported first, into a dot-named staging folder inside the model
base path (the model server skips dot-names), and evaluated from that export through
its ``serving_default`` signature, i.e. exactly what the server would run. Rollout
is one ``rename`` of the staging folder to ``<base>/<N+1>``: the server's poll sees all
of the version or none of it, loads it, and new decisions carry version N+1.

"Better" means a higher PR-AUC (average precision) on the holdout: fraud is rare, and
ROC-AUC barely moves when a model ranks the few positives better or worse.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from decisioning.decision import ModelResult, decide
from decisioning.rules import RuleSet, evaluate_rules, load_rules
from model_training.dataset import LabelledRows, TrainingDataError, load_labelled, time_split
from model_training.metrics import Scores, score
from model_training.score_distribution import record_training_scores
from rtd_core.config import ThresholdsConfig
from serving.model_signature import MODEL_INPUT_NAMES, SCORE_OUTPUT, SIGNATURE_NAME
from serving.model_store import TfSavedModel, list_versions

DEFAULT_EPOCHS = 8


@dataclass(frozen=True)
class TrainSettings:
    dataset: Path
    base_path: Path
    holdout_fraction: float = 0.2
    epochs: int = DEFAULT_EPOCHS
    seed: int = 7
    force: bool = False
    serving_version: int | None = None  # None: the latest version under base_path
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    rules: RuleSet | None = None  # None: the default rules


@dataclass(frozen=True)
class TrainResult:
    dataset: Path
    manifest: dict
    train_rows: int
    train_fraud: int
    holdout_rows: int
    holdout_fraud: int
    cut_ms: int
    skipped: dict[str, int]
    candidate_version: int
    serving_version: int | None
    candidate: Scores
    serving: Scores | None
    rules: Scores
    system_candidate: Scores
    system_serving: Scores | None
    exported: bool
    reason: str
    published: Path | None


def predict(model: TfSavedModel, inputs: np.ndarray) -> np.ndarray:
    """Scores through the SavedModel's serving signature, one named input per column."""
    if len(inputs) == 0:
        return np.zeros(0, dtype=np.float32)
    feed = {name: inputs[:, i].astype(np.float32) for i, name in enumerate(MODEL_INPUT_NAMES)}
    return model.run(SIGNATURE_NAME, feed, [SCORE_OUTPUT])[SCORE_OUTPUT].reshape(-1)


def outcome_scores(data: LabelledRows, rules: RuleSet, thresholds: ThresholdsConfig,
                   model_scores: np.ndarray | None, version: int | None) -> np.ndarray:
    """The decided outcome per row as a score: DECLINE -> the decline threshold, REVIEW
    -> the review threshold, APPROVE -> 0. Decided by ``decide``, the job's own code,
    with the rules alone (``model_scores`` None) or rules and model together."""
    level = {"APPROVE": 0.0, "REVIEW": thresholds.review, "DECLINE": thresholds.decline}
    out = np.zeros(len(data), dtype=np.float64)
    for i, (event, features) in enumerate(zip(data.events, data.features, strict=True)):
        model = (ModelResult(None, None, "unavailable") if model_scores is None
                 else ModelResult(float(model_scores[i]), version, None))
        decision = decide(event, evaluate_rules(rules, event, features), model,
                          decline_at=thresholds.decline, review_at=thresholds.review,
                          late=False, decided_at=0)
        out[i] = level[decision["outcome"]]
    return out


def better(candidate: Scores, serving: Scores | None) -> tuple[bool, str]:
    if np.isnan(candidate.pr_auc):
        return False, "the holdout has no fraud (or no legitimate) rows: nothing to compare"
    if serving is None:
        return True, "no serving model to compare with"
    if candidate.pr_auc > serving.pr_auc:
        return True, (f"holdout PR-AUC {candidate.pr_auc:.4f} > serving model's "
                      f"{serving.pr_auc:.4f}")
    return False, (f"holdout PR-AUC {candidate.pr_auc:.4f} <= serving model's "
                   f"{serving.pr_auc:.4f}")


def train_and_evaluate(settings: TrainSettings) -> TrainResult:
    # Imported here: TensorFlow takes seconds to import.
    from model_training.keras_model import export_saved_model, train_model

    rules = settings.rules or load_rules()
    thresholds = settings.thresholds
    cuts = (thresholds.decline, thresholds.review)
    data, manifest = load_labelled(settings.dataset)
    train, holdout, cut = time_split(data, settings.holdout_fraction)
    if train.positives == 0 or train.positives == len(train):
        raise TrainingDataError(
            f"the training part ({len(train):,} rows before the cut) has "
            f"{train.positives:,} fraud rows: a model cannot learn from one class")

    base = settings.base_path
    base.mkdir(parents=True, exist_ok=True)
    versions = list_versions(base)
    serving_version = settings.serving_version or (versions[-1] if versions else None)
    candidate_version = (versions[-1] if versions else 0) + 1
    staging = base / f".train-{os.getpid()}-{candidate_version}"
    shutil.rmtree(staging, ignore_errors=True)
    published: Path | None = None
    try:
        model = train_model(train.inputs, train.labels, epochs=settings.epochs,
                            seed=settings.seed)
        export_saved_model(model, staging)
        # Score drift of this version, once it serves, is measured against these.
        record_training_scores(staging, train.inputs,
                               f"{settings.dataset}: {len(train):,} training rows")
        candidate_scores = predict(TfSavedModel(staging), holdout.inputs)
        serving_scores = None
        if serving_version is not None:
            serving_scores = predict(TfSavedModel(base / str(serving_version)), holdout.inputs)

        y = holdout.labels
        candidate = score(f"candidate v{candidate_version}", y, candidate_scores, cuts)
        serving = (None if serving_scores is None else
                   score(f"serving v{serving_version}", y, serving_scores, cuts))
        rules_only = score("rules only", y,
                           outcome_scores(holdout, rules, thresholds, None, None), cuts)
        system_candidate = score(
            f"rules + candidate v{candidate_version}", y,
            outcome_scores(holdout, rules, thresholds, candidate_scores, candidate_version), cuts)
        system_serving = (None if serving_scores is None else score(
            f"rules + serving v{serving_version}", y,
            outcome_scores(holdout, rules, thresholds, serving_scores, serving_version), cuts))

        wins, reason = better(candidate, serving)
        exported = wins or settings.force
        if settings.force and not wins:
            reason = f"forced (--force); {reason}"
        if exported:
            target = base / str(candidate_version)
            # rename(2) in one directory is atomic: the server sees all or nothing.
            staging.rename(target)
            published = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return TrainResult(
        dataset=settings.dataset, manifest=manifest,
        train_rows=len(train), train_fraud=train.positives,
        holdout_rows=len(holdout), holdout_fraud=holdout.positives, cut_ms=cut,
        skipped=dict(data.skipped), candidate_version=candidate_version,
        serving_version=serving_version, candidate=candidate, serving=serving,
        rules=rules_only, system_candidate=system_candidate, system_serving=system_serving,
        exported=exported, reason=reason, published=published)
