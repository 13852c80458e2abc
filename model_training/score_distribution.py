"""The score distribution a model version was trained on, recorded beside its SavedModel.

Score drift is measured against it: the health monitor (audit/health.py) compares
the live scores of a serving version with this histogram by their population stability
index. Bins are the training scores' deciles, so each holds about a tenth of them and a
shift anywhere in the range shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

FILE_NAME = "score_distribution.json"
BINS = 10
# Floor of a bin's share in the PSI: an empty bin would make ln(a/e) infinite.
PSI_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class ScoreDistribution:
    edges: tuple[float, ...]  # ascending, len(fractions) + 1; the outer ones are 0 and 1
    fractions: tuple[float, ...]
    rows: int
    source: str

    def shares(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """The share of ``scores`` in each bin (scores outside [0, 1] clipped in)."""
        values = np.clip(np.asarray(scores, dtype=np.float64), self.edges[0], self.edges[-1])
        counts, _ = np.histogram(values, bins=np.asarray(self.edges))
        return counts / max(len(values), 1)


def from_scores(scores: np.ndarray, source: str, bins: int = BINS) -> ScoreDistribution:
    quantiles = np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1]) if len(scores) else []
    edges = np.unique(np.r_[0.0, np.asarray(quantiles, dtype=np.float64), 1.0])
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=edges)
    total = max(int(counts.sum()), 1)
    return ScoreDistribution(tuple(float(e) for e in edges),
                             tuple(float(c) / total for c in counts), len(scores), source)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index: sum of (a - e) * ln(a / e) over the bins."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, PSI_FLOOR), max(a, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def write(version_dir: Path, distribution: ScoreDistribution) -> Path:
    target = version_dir / FILE_NAME
    target.write_bytes(orjson.dumps({
        "edges": distribution.edges, "fractions": distribution.fractions,
        "rows": distribution.rows, "source": distribution.source,
    }, option=orjson.OPT_INDENT_2))
    return target


def read(version_dir: Path) -> ScoreDistribution | None:
    """The recorded distribution, or None for a version trained before it was recorded."""
    try:
        data = orjson.loads((version_dir / FILE_NAME).read_bytes())
    except FileNotFoundError:
        return None
    return ScoreDistribution(tuple(data["edges"]), tuple(data["fractions"]), int(data["rows"]),
                             str(data.get("source", "")))


def record_training_scores(export_dir: Path, inputs: np.ndarray, source: str) -> Path:
    """Score ``inputs`` through the exported SavedModel (as serving will) and record them."""
    from model_training.train import predict  # TensorFlow: imported by training only
    from serving.model_store import TfSavedModel

    return write(export_dir, from_scores(predict(TfSavedModel(export_dir), inputs), source))
