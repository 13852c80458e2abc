"""The system's health, computed continuously from what the audit service reads.

Four numbers define a decision system's health: latency, accuracy against what really
happened, fallback rate and trace completeness; feature freshness and score drift go
beside them. The service feeds this monitor every batch it stores (the ``AuditRow`` of
each new trace, the ``DecisionRef`` of each new decision) and every label from the
`labels` topic; the console and /metrics read ``snapshot()``.

- Latency per minute of decided_at: decision latency is decided_at minus the Kafka
  append time of the event; commit visibility is the moment this read_committed
  consumer received the decision minus decided_at (so it includes the service's own
  lag, and reads high while it catches up on a backlog).
- Accuracy joins each label to its decision through the store (event_id -> trace). A
  decision counts once it is older than the maturity window, so that a minute is not
  judged before its labels can have arrived. Three scorers on the same labelled events:
  the decision as made, the rules alone (the fired rules' most severe outcome) and the
  model score, per model version and path, at the contract's thresholds.
- Percentiles are nearest-rank: the smallest value with at least p% of values at or
  below it (so p99 of 100 values is the 99th smallest).

State is kept in memory for ``health_history_min`` minutes. After a restart the
latency, fallback and freshness history starts again (the service resumes from its
stored offsets); accuracy is rebuilt as far as the `labels` topic goes back, since it
is read from its start and joined through the store.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from model_training.metrics import curves, roc_auc
from model_training.score_distribution import ScoreDistribution, psi
from rtd.audit.records import AuditRow, DecisionRef
from rtd.config import AuditConfig, ThresholdsConfig

MINUTE_MS = 60_000
# Values kept per minute and metric: exact percentiles up to ~330 decisions/s, a
# uniform sample above (p99.9 then rests on the sample's top 10).
SAMPLE_CAP = 20_000
QUANTILES = (("p50", 50.0), ("p99", 99.0), ("p999", 99.9))


def minute_of(ms: int) -> int:
    return ms - ms % MINUTE_MS


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def quantiles(values: Sequence[float]) -> dict[str, float | None]:
    return {name: percentile(values, p) for name, p in QUANTILES}


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def threshold_metrics(labels: np.ndarray, scores: np.ndarray,
                      threshold: float) -> dict[str, Any]:
    """Precision, recall and false-positive rate of flagging ``scores >= threshold``."""
    flagged = scores >= threshold
    positives = labels.astype(bool)
    tp = int(np.sum(flagged & positives))
    fp = int(np.sum(flagged & ~positives))
    p, n = int(positives.sum()), int((~positives).sum())
    return {
        "threshold": threshold, "flagged": int(flagged.sum()), "tp": tp, "fp": fp,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / p if p else None,
        "fpr": fp / n if n else None,
    }


def scorer_metrics(labels: np.ndarray, scores: np.ndarray,
                   thresholds: ThresholdsConfig) -> dict[str, Any]:
    """AUC and the metrics at the review and decline thresholds (the contract's)."""
    auc = roc_auc(curves(labels, scores)) if len(labels) else float("nan")
    return {
        "n": len(labels), "auc": _finite(auc),
        "review": threshold_metrics(labels, scores, thresholds.review),
        "decline": threshold_metrics(labels, scores, thresholds.decline),
    }


def outcome_score(outcome: str, thresholds: ThresholdsConfig) -> float:
    """An outcome as a score at the thresholds, as training evaluates the rules
    (model_training/train.py): flagged at review means REVIEW or DECLINE."""
    return {"DECLINE": thresholds.decline, "REVIEW": thresholds.review}.get(outcome, 0.0)


@dataclass(frozen=True, slots=True)
class Labelled:
    """A decision joined to its label."""

    event_id: str
    decided_at: int
    is_fraud: bool
    outcome: str
    rules_outcome: str
    path: str
    model_version: int | None
    score: float | None


def accuracy(pairs: Sequence[Labelled], thresholds: ThresholdsConfig) -> dict[str, Any]:
    """The decision, the rules alone, and the model score, on the same labelled events."""
    y = np.array([p.is_fraud for p in pairs], dtype=np.float64)
    decision = np.array([outcome_score(p.outcome, thresholds) for p in pairs])
    rules = np.array([outcome_score(p.rules_outcome, thresholds) for p in pairs])
    scored = [i for i, p in enumerate(pairs) if p.score is not None]
    model = np.array([pairs[i].score for i in scored], dtype=np.float64)
    return {
        "n": len(pairs), "fraud": int(y.sum()),
        "decision": scorer_metrics(y, decision, thresholds),
        "rules_only": scorer_metrics(y, rules, thresholds),
        # Only the events that had a score (MODEL path): a fallback has none.
        "model_score": scorer_metrics(y[scored], model, thresholds) if scored else None,
    }


def breakdown(pairs: Sequence[Labelled], thresholds: ThresholdsConfig) -> list[dict[str, Any]]:
    """``accuracy`` of every (model version, path) group, then of all events."""
    groups: dict[tuple[int | None, str], list[Labelled]] = defaultdict(list)
    for p in pairs:
        groups[(p.model_version, p.path)].append(p)
    out = [{"model_version": v, "path": path, **accuracy(items, thresholds)}
           for (v, path), items in sorted(groups.items(), key=lambda g: (g[0][0] or 0, g[0][1]))]
    out.append({"model_version": None, "path": "ALL", **accuracy(pairs, thresholds)})
    return out


class Sample(list):  # type: ignore[type-arg]
    """A minute's values, exact up to ``SAMPLE_CAP``, then a uniform reservoir of that
    size (Vitter's algorithm R): memory stays bounded at any decision rate."""

    __slots__ = ("seen",)
    _rng = random.Random(0)

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self) < SAMPLE_CAP:
            self.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < SAMPLE_CAP:
            self[slot] = value


@dataclass
class Minute:
    """What one minute of decided_at holds."""

    decisions: int = 0
    # The last completeness share the service computed in this minute (wall clock).
    completeness: float | None = None
    latency_ms: Sample = field(default_factory=Sample)
    visibility_ms: Sample = field(default_factory=Sample)
    paths: Counter[str] = field(default_factory=Counter)
    fallback: Counter[str] = field(default_factory=Counter)
    freshness_ms: dict[str, Sample] = field(default_factory=lambda: defaultdict(Sample))
    scores: dict[int, Sample] = field(default_factory=lambda: defaultdict(Sample))


@dataclass(frozen=True, slots=True)
class Label:
    """A record of the `labels` topic (contract: ``{"event_id","is_fraud","labeled_at"}``)."""

    event_id: str
    is_fraud: bool
    labeled_at: int


def read_label(value: bytes | None) -> Label:
    """Raises ValueError on a record that is not a label."""
    try:
        obj = orjson.loads(value or b"null")
        if not isinstance(obj["is_fraud"], bool) or not isinstance(obj["event_id"], str):
            raise TypeError("event_id must be a string and is_fraud a boolean")
        return Label(obj["event_id"], obj["is_fraud"], int(obj["labeled_at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a label: {exc}") from exc


class HealthMonitor:
    def __init__(self, settings: AuditConfig, thresholds: ThresholdsConfig,
                 training: Callable[[int], ScoreDistribution | None]) -> None:
        self.settings = settings
        self.thresholds = thresholds
        self.training = training
        self.minutes: dict[int, Minute] = defaultdict(Minute)
        self.labelled: dict[str, Labelled] = {}
        self.pending: dict[str, tuple[Label, int]] = {}  # event_id -> (label, first seen)
        self.unmatched = 0
        self.labels_seen = 0

    # ---- input -------------------------------------------------------------------

    def observe_rows(self, rows: Iterable[AuditRow]) -> None:
        for row in rows:
            minute = self.minutes[minute_of(row.decided_at)]
            minute.decisions += 1
            minute.paths[row.path] += 1
            if row.appended_at is not None:
                minute.latency_ms.add(row.decided_at - row.appended_at)
            if row.fallback_reason is not None:
                minute.fallback[row.fallback_reason] += 1
            for name, fresh in row.freshness_ms.items():
                if fresh is not None:
                    minute.freshness_ms[name].add(fresh)
            if row.score is not None and row.model_version is not None:
                minute.scores[row.model_version].add(row.score)

    def observe_decisions(self, refs: Iterable[DecisionRef], seen_at_ms: int) -> None:
        for ref in refs:
            self.minutes[minute_of(ref.decided_at)].visibility_ms.add(
                seen_at_ms - ref.decided_at)

    def observe_completeness(self, share: float, now_ms: int) -> None:
        self.minutes[minute_of(now_ms)].completeness = share

    def observe_label(self, label: Label, now_ms: int) -> None:
        self.labels_seen += 1
        self.pending[label.event_id] = (label, now_ms)

    def join(self, lookup: Callable[[str], AuditRow | None], now_ms: int) -> int:
        """Join pending labels to their decisions; returns how many joined."""
        joined = 0
        for event_id, (label, since) in list(self.pending.items()):
            row = lookup(event_id)
            if row is None:
                if now_ms - since > self.settings.label_wait_ms:
                    del self.pending[event_id]
                    self.unmatched += 1
                continue
            del self.pending[event_id]
            self.labelled[event_id] = Labelled(
                event_id, row.decided_at, label.is_fraud, row.outcome, row.rules_outcome,
                row.path, row.model_version, row.score)
            joined += 1
        return joined

    def prune(self, now_ms: int) -> None:
        settings = self.settings
        keep_from = minute_of(now_ms) - settings.health_history_min * MINUTE_MS
        # Labelled decisions are kept as far back as the longest window, or the history
        # plus the series' window, behind the mature end.
        windows = settings.accuracy_windows_min or (5,)
        horizon = self.mature_before(now_ms) - max(
            max(windows), settings.health_history_min + min(windows)) * MINUTE_MS
        for minute in [m for m in self.minutes if m < keep_from]:
            del self.minutes[minute]
        for event_id in [e for e, p in self.labelled.items() if p.decided_at < horizon]:
            del self.labelled[event_id]

    # ---- output ------------------------------------------------------------------

    def _recent(self, now_ms: int, minutes: int) -> list[Minute]:
        start = minute_of(now_ms) - (minutes - 1) * MINUTE_MS
        return [m for at, m in self.minutes.items() if at >= start]

    def mature_before(self, now_ms: int) -> int:
        """Decisions before this time are judged: their labels have had time to come."""
        return minute_of(now_ms - self.settings.label_maturity_ms)

    def accuracy_window(self, now_ms: int, minutes: int,
                        version: int | None = None) -> list[Labelled]:
        end = self.mature_before(now_ms)
        start = end - minutes * MINUTE_MS
        return [p for p in self.labelled.values() if start <= p.decided_at < end
                and (version is None or p.model_version == version)]

    def series(self, now_ms: int) -> list[dict[str, Any]]:
        """One point per minute: traffic, latency, fallback rate (the sparklines)."""
        out = []
        first = minute_of(now_ms) - (self.settings.health_history_min - 1) * MINUTE_MS
        for at in range(first, minute_of(now_ms) + MINUTE_MS, MINUTE_MS):
            m = self.minutes.get(at)
            if m is None:
                out.append({"minute": at, "decisions": 0})
                continue
            fallbacks = sum(m.fallback.values())
            out.append({
                "minute": at, "decisions": m.decisions, "completeness": m.completeness,
                "latency_ms": quantiles(m.latency_ms),
                "visibility_ms": quantiles(m.visibility_ms),
                "fallback_rate": fallbacks / m.decisions if m.decisions else None,
                "fallback": dict(m.fallback),
            })
        return out

    def drift(self, now_ms: int) -> list[dict[str, Any]]:
        scores: dict[int, list[float]] = defaultdict(list)
        for m in self._recent(now_ms, self.settings.tile_window_min):
            for version, values in m.scores.items():
                scores[version].extend(values)
        out = []
        for version in sorted(scores):
            reference = self.training(version)
            entry: dict[str, Any] = {"model_version": version, "scores": len(scores[version])}
            if reference is None:
                entry.update(psi=None, reason="no training score distribution recorded "
                             "for this version (model_training/score_distribution.py)")
            else:
                shares = reference.shares(scores[version])
                entry.update(psi=psi(reference.fractions, shares.tolist()),
                             edges=list(reference.edges), training=list(reference.fractions),
                             live=shares.tolist())
            out.append(entry)
        return out

    def versions(self) -> list[int]:
        return sorted({p.model_version for p in self.labelled.values()
                       if p.model_version is not None})

    def accuracy_series(self, now_ms: int, version: int | None) -> list[dict[str, Any]]:
        """Per mature minute, the metrics over the shortest rolling window ending with it
        (``version`` None: every event, fallbacks included)."""
        window = min(self.settings.accuracy_windows_min, default=5)
        end = self.mature_before(now_ms)
        by_minute: dict[int, list[Labelled]] = defaultdict(list)
        for p in self.labelled.values():
            if version is None or p.model_version == version:
                by_minute[minute_of(p.decided_at)].append(p)
        out = []
        first = end - self.settings.health_history_min * MINUTE_MS
        for at in range(first, end, MINUTE_MS):
            inside = [p for m in range(at - (window - 1) * MINUTE_MS, at + MINUTE_MS, MINUTE_MS)
                      for p in by_minute.get(m, ())]
            if not inside:
                continue
            a = accuracy(inside, self.thresholds)
            out.append({"minute": at, "window_min": window, "n": a["n"],
                        "fraud": a["fraud"], **{
                            f"{scorer}_{metric}": (a[scorer] or {}).get("review", {}).get(metric)
                            for scorer in ("decision", "rules_only", "model_score")
                            for metric in ("precision", "recall")}})
        return out

    def snapshot(self, now_ms: int, completeness: Mapping[str, Any] | None) -> dict[str, Any]:
        recent = self._recent(now_ms, self.settings.tile_window_min)
        decisions = sum(m.decisions for m in recent)
        fallback: Counter[str] = Counter()
        paths: Counter[str] = Counter()
        freshness: dict[str, list[int]] = defaultdict(list)
        for m in recent:
            fallback.update(m.fallback)
            paths.update(m.paths)
            for name, values in m.freshness_ms.items():
                freshness[name].extend(values)
        mature_end = self.mature_before(now_ms)
        windows = {}
        for minutes in self.settings.accuracy_windows_min:
            pairs = self.accuracy_window(now_ms, minutes)
            decided = sum(m.decisions for at, m in self.minutes.items()
                          if mature_end - minutes * MINUTE_MS <= at < mature_end)
            windows[str(minutes)] = {
                "from": mature_end - minutes * MINUTE_MS, "to": mature_end,
                "labelled": len(pairs), "decided_seen": decided,
                "groups": breakdown(pairs, self.thresholds),
            }
        return {
            "computed_at": now_ms,
            "tile_window_min": self.settings.tile_window_min,
            "traffic": {"decisions": decisions, "paths": dict(paths),
                        "per_minute": decisions / self.settings.tile_window_min},
            "latency_ms": quantiles([v for m in recent for v in m.latency_ms]),
            "visibility_ms": quantiles([v for m in recent for v in m.visibility_ms]),
            "fallback": {"rate": sum(fallback.values()) / decisions if decisions else None,
                         "causes": dict(fallback)},
            "freshness_p99_ms": {name: percentile(values, 99.0)
                                 for name, values in sorted(freshness.items())},
            "drift": self.drift(now_ms),
            "accuracy": {"maturity_ms": self.settings.label_maturity_ms,
                         "labels_seen": self.labels_seen, "labels_pending": len(self.pending),
                         "labels_joined": len(self.labelled),
                         "labels_unmatched": self.unmatched, "windows": windows},
            "completeness": None if completeness is None else {
                key: completeness.get(key) for key in (
                    "share_complete", "decisions", "traces", "computed_at")} | {
                "decisions_without_trace": len(completeness.get("decisions_without_trace", ())),
                "traces_without_decision": len(completeness.get("traces_without_decision", ())),
                "incomplete_traces": len(completeness.get("incomplete_traces", ()))},
            "series": self.series(now_ms),
        }
