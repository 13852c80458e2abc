"""The health snapshot as Prometheus gauges, on the console's /metrics.

One registry per service (not the process-global default), so tests and several
instances never share series. Every update replaces all series: a label set that is no
longer in the snapshot (a model version retired) disappears instead of going stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge


class HealthMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        self.latency = gauge("rtd_decision_latency_ms",
                             "Kafka append time of the event to decided_at, recent minutes",
                             ("quantile",))
        self.visibility = gauge("rtd_commit_visibility_ms",
                                "decided_at to the decision's read by a read_committed consumer",
                                ("quantile",))
        self.decisions = gauge("rtd_decisions_recent", "Decisions in the tile window")
        self.fallback_rate = gauge("rtd_fallback_rate", "Share of decisions without a live "
                                   "model score, tile window")
        self.fallback = gauge("rtd_fallback_decisions", "Decisions by fallback cause, tile "
                              "window", ("cause",))
        self.completeness = gauge("rtd_trace_completeness", "Share of settled decisions with "
                                  "a complete trace (the store's reconciliation)")
        self.freshness = gauge("rtd_feature_freshness_p99_ms", "p99 feature freshness, tile "
                               "window", ("feature",))
        self.psi = gauge("rtd_score_psi", "PSI of live scores against the version's training "
                         "scores", ("model_version",))
        labels = ("window_min", "model_version", "path", "scorer", "level")
        self.precision = gauge("rtd_precision", "Precision on mature labelled decisions", labels)
        self.recall = gauge("rtd_recall", "Recall on mature labelled decisions", labels)
        self.fpr = gauge("rtd_false_positive_rate", "FPR on mature labelled decisions", labels)
        self.auc = gauge("rtd_auc", "ROC AUC on mature labelled decisions",
                         ("window_min", "model_version", "path", "scorer"))
        self.labels = gauge("rtd_labels", "Labels by state", ("state",))

    def update(self, snap: Mapping[str, Any]) -> None:
        for g in (self.latency, self.visibility, self.fallback, self.freshness, self.psi,
                  self.precision, self.recall, self.fpr, self.auc, self.labels):
            g.clear()
        for name, value in snap["latency_ms"].items():
            if value is not None:
                self.latency.labels(name).set(value)
        for name, value in snap["visibility_ms"].items():
            if value is not None:
                self.visibility.labels(name).set(value)
        self.decisions.set(snap["traffic"]["decisions"])
        self.fallback_rate.set(snap["fallback"]["rate"] or 0.0)
        for cause, count in snap["fallback"]["causes"].items():
            self.fallback.labels(cause).set(count)
        if snap["completeness"] is not None:
            self.completeness.set(snap["completeness"]["share_complete"])
        for feature, value in snap["freshness_p99_ms"].items():
            if value is not None:
                self.freshness.labels(feature).set(value)
        for entry in snap["drift"]:
            if entry["psi"] is not None:
                self.psi.labels(str(entry["model_version"])).set(entry["psi"])
        accuracy = snap["accuracy"]
        for state in ("seen", "pending", "unmatched"):
            self.labels.labels(state).set(accuracy[f"labels_{state}"])
        for window, body in accuracy["windows"].items():
            for group in body["groups"]:
                version, path = str(group["model_version"] or "none"), group["path"]
                for scorer in ("decision", "rules_only", "model_score"):
                    m = group[scorer]
                    if m is None:
                        continue
                    if m["auc"] is not None:
                        self.auc.labels(window, version, path, scorer).set(m["auc"])
                    for level in ("review", "decline"):
                        at = m[level]
                        for gauge, key in ((self.precision, "precision"),
                                           (self.recall, "recall"), (self.fpr, "fpr")):
                            if at[key] is not None:
                                gauge.labels(window, version, path, scorer, level).set(at[key])
