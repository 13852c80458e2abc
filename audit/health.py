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
- Accuracy is kept as counts per minute and group (``Tally``), not per event, so a
  window of any traffic sums a few arrays.

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
from typing import Any, Self

import numpy as np
import orjson

from audit.records import AuditRow, DecisionRef
from model_training.score_distribution import ScoreDistribution, psi
from rtd_core.config import AuditConfig, ThresholdsConfig

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


LEVELS = ("APPROVE", "REVIEW", "DECLINE")
LEVEL = {name: i for i, name in enumerate(LEVELS)}
# Model scores are counted in ordered bins for the AUC (ties inside a bin get half
# credit): 0.001 wide from 0.001 up, and 100 per decade below it down to 1e-9, since a
# fraud model puts most legitimate events there (the bootstrap model's median score is
# about 2e-5). Precision, recall and FPR at the thresholds are counted exactly per event.
_LOG_BINS = 600  # 1e-9 .. 1e-3
SCORE_BINS = _LOG_BINS + 1_000


def score_bin(score: float) -> int:
    if score >= 1e-3:
        return _LOG_BINS + min(999, int(score * 1_000))
    if score <= 1e-9:
        return 0
    return min(_LOG_BINS - 1, int((math.log10(score) + 9) * 100))


def _rate(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def at_threshold(threshold: float, tp: int, fp: int, positives: int,
                 negatives: int) -> dict[str, Any]:
    """Precision, recall and false-positive rate of what a scorer flagged."""
    return {"threshold": threshold, "flagged": int(tp + fp), "tp": int(tp), "fp": int(fp),
            "precision": _rate(tp, tp + fp), "recall": _rate(tp, positives),
            "fpr": _rate(fp, negatives)}


def ordinal_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """ROC AUC from counts per ordered score level: the share of (fraud, legitimate)
    pairs ranked right, a tie counting half. None when a class is missing."""
    p_total, n_total = int(pos.sum()), int(neg.sum())
    if not p_total or not n_total:
        return None
    below = np.cumsum(neg) - neg  # legitimate events on a strictly lower level
    return float((pos * below).sum() + 0.5 * (pos * neg).sum()) / (p_total * n_total)


@dataclass
class Tally:
    """Counts of labelled decisions of one minute and group (model version, path).

    ``levels[scorer, label, level]``: the decision's outcome (scorer 0) and the rules'
    alone (scorer 1), as APPROVE / REVIEW / DECLINE, for legitimate (0) and fraud (1).
    ``flags[label, k]``: model scores at or above the review (k 0) or decline (k 1)
    threshold; ``hist[label, bin]``: the scores, for the AUC."""

    levels: np.ndarray = field(default_factory=lambda: np.zeros((2, 2, 3), np.int64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), np.int64))
    hist: np.ndarray = field(default_factory=lambda: np.zeros((2, SCORE_BINS), np.int64))

    def add(self, is_fraud: bool, outcome: str, rules_outcome: str, score: float | None,
            thresholds: ThresholdsConfig) -> None:
        y = int(is_fraud)
        self.levels[0, y, LEVEL.get(outcome, 0)] += 1
        self.levels[1, y, LEVEL.get(rules_outcome, 0)] += 1
        if score is not None:
            self.flags[y, 0] += score >= thresholds.review
            self.flags[y, 1] += score >= thresholds.decline
            self.hist[y, score_bin(score)] += 1

    def __iadd__(self, other: Tally) -> Self:
        self.levels += other.levels
        self.flags += other.flags
        self.hist += other.hist
        return self

    @property
    def n(self) -> int:
        return int(self.levels[0].sum())


def _levels_metrics(pos: np.ndarray, neg: np.ndarray,
                    thresholds: ThresholdsConfig) -> dict[str, Any]:
    """An outcome as a scorer: flagged at review = REVIEW or DECLINE, at decline =
    DECLINE; its AUC ranks APPROVE < REVIEW < DECLINE (as `rtd train` scores them)."""
    p_total, n_total = int(pos.sum()), int(neg.sum())
    return {"n": p_total + n_total, "auc": ordinal_auc(pos, neg),
            "review": at_threshold(thresholds.review, pos[1:].sum(), neg[1:].sum(),
                                   p_total, n_total),
            "decline": at_threshold(thresholds.decline, pos[2], neg[2], p_total, n_total)}


def accuracy(t: Tally, thresholds: ThresholdsConfig) -> dict[str, Any]:
    """The decision, the rules alone, and the model score, on the same labelled events."""
    scored_pos, scored_neg = int(t.hist[1].sum()), int(t.hist[0].sum())
    model = None
    if scored_pos + scored_neg:
        # Only the events that had a score (MODEL path): a fallback has none.
        model = {"n": scored_pos + scored_neg, "auc": ordinal_auc(t.hist[1], t.hist[0]),
                 "review": at_threshold(thresholds.review, t.flags[1, 0], t.flags[0, 0],
                                        scored_pos, scored_neg),
                 "decline": at_threshold(thresholds.decline, t.flags[1, 1], t.flags[0, 1],
                                         scored_pos, scored_neg)}
    return {"n": t.n, "fraud": int(t.levels[0, 1].sum()),
            "decision": _levels_metrics(t.levels[0, 1], t.levels[0, 0], thresholds),
            "rules_only": _levels_metrics(t.levels[1, 1], t.levels[1, 0], thresholds),
            "model_score": model}


Group = tuple[int | None, str]  # (model version, path)


def breakdown(groups: Mapping[Group, Tally], thresholds: ThresholdsConfig) -> list[dict[str, Any]]:
    """``accuracy`` of every (model version, path) group, then of all events."""
    everything = Tally()
    out = []
    for (version, path), tally in sorted(groups.items(), key=lambda g: (g[0][0] or 0, g[0][1])):
        everything += tally
        out.append({"model_version": version, "path": path, **accuracy(tally, thresholds)})
    out.append({"model_version": None, "path": "ALL", **accuracy(everything, thresholds)})
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
        # Labelled decisions, counted per minute of decided_at and group.
        self.tallies: dict[int, dict[Group, Tally]] = defaultdict(lambda: defaultdict(Tally))
        self.joined = 0
        self.versions_seen: set[int] = set()
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
            # A label delivered twice counts twice: `labels` is not an exactly-once log.
            self.tallies[minute_of(row.decided_at)][(row.model_version, row.path)].add(
                label.is_fraud, row.outcome, row.rules_outcome, row.score, self.thresholds)
            if row.model_version is not None:
                self.versions_seen.add(row.model_version)
            self.joined += 1
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
        for minute in [m for m in self.tallies if m < horizon]:
            del self.tallies[minute]

    # ---- output ------------------------------------------------------------------

    def _recent(self, now_ms: int, minutes: int) -> list[Minute]:
        start = minute_of(now_ms) - (minutes - 1) * MINUTE_MS
        return [m for at, m in self.minutes.items() if at >= start]

    def mature_before(self, now_ms: int) -> int:
        """Decisions before this time are judged: their labels have had time to come."""
        return minute_of(now_ms - self.settings.label_maturity_ms)

    def accuracy_window(self, end: int, minutes: int,
                        version: int | None = None) -> dict[Group, Tally]:
        """The groups' tallies of the ``minutes`` minutes before ``end`` (a minute)."""
        out: dict[Group, Tally] = defaultdict(Tally)
        for at in range(end - minutes * MINUTE_MS, end, MINUTE_MS):
            for group, tally in self.tallies.get(at, {}).items():
                if version is None or group[0] == version:
                    out[group] += tally
        return out

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
        return sorted(self.versions_seen)

    def accuracy_series(self, now_ms: int, version: int | None) -> list[dict[str, Any]]:
        """Per mature minute, the metrics over the shortest rolling window ending with it
        (``version`` None: every event, fallbacks included)."""
        window = min(self.settings.accuracy_windows_min, default=5)
        end = self.mature_before(now_ms)
        out = []
        first = end - self.settings.health_history_min * MINUTE_MS
        for at in range(first, end, MINUTE_MS):
            total = Tally()
            for tally in self.accuracy_window(at + MINUTE_MS, window, version).values():
                total += tally
            if not total.n:
                continue
            a = accuracy(total, self.thresholds)
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
            groups = self.accuracy_window(mature_end, minutes)
            decided = sum(m.decisions for at, m in self.minutes.items()
                          if mature_end - minutes * MINUTE_MS <= at < mature_end)
            windows[str(minutes)] = {
                "from": mature_end - minutes * MINUTE_MS, "to": mature_end,
                "labelled": sum(t.n for t in groups.values()), "decided_seen": decided,
                "groups": breakdown(groups, self.thresholds),
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
                         "labels_joined": self.joined,
                         "labels_unmatched": self.unmatched, "windows": windows},
            "completeness": None if completeness is None else {
                key: completeness.get(key) for key in (
                    "share_complete", "decisions", "traces", "computed_at")} | {
                "decisions_without_trace": len(completeness.get("decisions_without_trace", ())),
                "traces_without_decision": len(completeness.get("traces_without_decision", ())),
                "incomplete_traces": len(completeness.get("incomplete_traces", ()))},
            "series": self.series(now_ms),
        }
