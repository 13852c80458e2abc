"""Ranking and threshold metrics in plain numpy (no scikit-learn in this environment).

Ties are handled as scikit-learn does: all rows sharing a score enter a curve together,
so a scorer with few distinct values (the rules' outcomes mapped to 0 / 0.6 / 0.9)
gets a step curve and an AUC with half credit for ties, not an optimistic one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curves:
    fpr: np.ndarray
    tpr: np.ndarray  # = recall
    precision: np.ndarray
    thresholds: np.ndarray  # descending; point i flags scores >= thresholds[i]


@dataclass(frozen=True)
class AtThreshold:
    threshold: float
    flagged: int
    precision: float  # nan when nothing is flagged
    recall: float  # nan when there is no positive


@dataclass(frozen=True)
class Scores:
    """A scorer's metrics on one labelled set."""

    name: str
    auc: float
    pr_auc: float  # average precision
    at: tuple[AtThreshold, ...]
    curves: Curves

    def at_threshold(self, threshold: float) -> AtThreshold:
        return next(a for a in self.at if a.threshold == threshold)


def _counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative false and true positives at each distinct score, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order].astype(np.float64)
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_each]
    fps = (last_of_each + 1) - tps
    return fps, tps, s[last_of_each]


def curves(labels: np.ndarray, scores: np.ndarray) -> Curves:
    if len(labels) == 0:
        empty = np.array([], dtype=np.float64)
        return Curves(empty, empty, empty, empty)
    fps, tps, thresholds = _counts(labels, scores)
    positives, negatives = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = np.r_[0.0, fps / negatives] if negatives else np.full(len(fps) + 1, np.nan)
        tpr = np.r_[0.0, tps / positives] if positives else np.full(len(tps) + 1, np.nan)
        precision = np.r_[1.0, tps / (tps + fps)]
    return Curves(fpr, tpr, precision, np.r_[np.inf, thresholds])


def roc_auc(c: Curves) -> float:
    """Area under the ROC curve; nan when one class is missing."""
    if len(c.fpr) == 0 or np.isnan(c.fpr).any() or np.isnan(c.tpr).any():
        return float("nan")
    return float(np.trapezoid(c.tpr, c.fpr))


def average_precision(c: Curves) -> float:
    """PR-AUC as average precision: sum over thresholds of precision x recall gained."""
    if len(c.tpr) == 0 or np.isnan(c.tpr).any():
        return float("nan")
    return float(np.sum(np.diff(c.tpr) * c.precision[1:]))


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> AtThreshold:
    flagged = scores >= threshold
    hits = int(np.sum(flagged & (labels > 0)))
    n_flagged, positives = int(np.sum(flagged)), int(np.sum(labels > 0))
    return AtThreshold(
        threshold=threshold,
        flagged=n_flagged,
        precision=hits / n_flagged if n_flagged else float("nan"),
        recall=hits / positives if positives else float("nan"),
    )


def score(name: str, labels: np.ndarray, scores: np.ndarray,
          thresholds: tuple[float, ...]) -> Scores:
    c = curves(labels, scores)
    return Scores(name, roc_auc(c), average_precision(c),
                  tuple(at_threshold(labels, scores, t) for t in thresholds), c)
