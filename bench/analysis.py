"""From what a system run observed to the figures the report shows.

Throughput has three figures: the highest step rate the system kept up with (sustainable
rate); the decisions/s it delivered during the second half of the first step it could
not keep up with (saturated throughput, a backlog waiting); and the most decisions/s it
delivered over any step's second half (peak, what ratios between systems use). When it
kept up with every step, the last rate is a lower bound and says so.
"""

from __future__ import annotations

import json
from typing import Any

from bench.flink_metrics import summarize_window
from bench.latency import PhaseJoin, first_receipts, join_phase
from bench.pacer import PhaseSent, read_append_times
from bench.resources import summarize_resources
from bench.runner import SystemRun
from bench.stats import latency_summary, per_second_counts, percentile
from decisioning.decision import decision_id_for
from decisioning.trace import trace_stage_durations

CDF_POINTS = [i / 2 for i in range(1, 200)] + [99.5, 99.9, 100.0]


def cdf(values: list[int]) -> list[list[float]]:
    """[percentile, value] pairs: enough to draw the distribution from the JSON alone."""
    ordered = sorted(values)
    if not ordered:
        return []
    return [[p, percentile(ordered, p)] for p in CDF_POINTS]


def _phase_figures(phase: PhaseSent, joined: PhaseJoin, run: SystemRun) -> dict[str, Any]:
    figures = {"rate": phase.rate, "duration_s": round(phase.duration_s, 1), **joined.summary()}
    figures["decisions_per_s"] = round(joined.decided / phase.duration_s, 1)
    figures["resources"] = summarize_resources(run.resources, phase.started_ms, phase.ended_ms)
    if run.flink is not None:
        figures["flink"] = summarize_window(run.flink, phase.started_ms, phase.ended_ms)
    return figures


def analyse(run: SystemRun) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The system's figures, and the raw fixed-phase latencies (for the charts)."""
    result: dict[str, Any] = {"error": run.error, "job_id": run.job_id}
    if run.uncommitted is None or run.committed is None or run.fixed is None:
        return result, {}
    appends = read_append_times(run.config, run.config.kafka.topics.transactions)
    uncommitted, dup_u = first_receipts(run.uncommitted.receipts)
    committed, dup_c = first_receipts(run.committed.receipts)
    meta = run.uncommitted.meta
    result["duplicates"] = {"read_uncommitted": dup_u, "read_committed": dup_c}
    if run.flink is not None:
        result["job_restarts"] = run.flink.restarts

    fixed = join_phase(run.fixed.valid_event_ids, appends, uncommitted, committed, meta)
    result["fixed"] = _phase_figures(run.fixed, fixed, run)
    result["fixed"]["cdf"] = {"decision_ms": cdf(fixed.decision_ms),
                              "commit_visible_ms": cdf(fixed.commit_visible_ms)}
    steps = []
    for step in run.steps:
        joined = join_phase(step.phase.valid_event_ids, appends, uncommitted, committed, meta)
        figures = _phase_figures(step.phase, joined, run)
        figures["kept_up"] = step.kept_up
        figures["final_lag"] = step.samples[-1][1] - step.samples[-1][2] if step.samples else None
        rate = step.receive_rate_second_half()
        figures["receive_rate_second_half"] = None if rate is None else round(rate, 1)
        steps.append(figures)
    result["steps"] = steps
    kept = [s for s in steps if s["kept_up"]]
    behind = [s for s in steps if not s["kept_up"]]
    result["max_sustainable_rate"] = kept[-1]["rate"] if kept else None
    result["max_sustainable"] = kept[-1] if kept else None
    if behind:
        result["saturated_decisions_per_s"] = behind[0]["receive_rate_second_half"]
        result["saturated_is_lower_bound"] = False
        result["saturated"] = behind[0]
    elif kept:
        result["saturated_decisions_per_s"] = kept[-1]["decisions_per_s"]
        result["saturated_is_lower_bound"] = True
        result["saturated"] = kept[-1]
    else:
        # The fixed rate was already too much: the fixed phase is the saturated one.
        result["saturated_decisions_per_s"] = result["fixed"]["decisions_per_s"]
        result["saturated_is_lower_bound"] = False

    # The most decisions/s delivered over any step's second half: under overload a job may
    # deliver less than its best (checkpoints slow down, the input side competes for the
    # cores), so the first step that fell behind alone would understate its capacity.
    rates = [s["receive_rate_second_half"] for s in steps if s["receive_rate_second_half"]]
    result["peak_decisions_per_s"] = max([*rates, result["fixed"]["decisions_per_s"]])

    start = run.fixed.started_ms
    end = max((s.phase.ended_ms for s in run.steps), default=run.fixed.ended_ms)
    result["series"] = {
        "start_ms": start,
        "decisions_per_s": per_second_counts(uncommitted.values(), start, end),
        "committed_per_s": per_second_counts(committed.values(), start, end),
        "input_per_s": per_second_counts(appends.values(), start, end),
    }
    raw = {"decision_ms": fixed.decision_ms, "commit_visible_ms": fixed.commit_visible_ms}
    return result, raw


def stage_times(run: SystemRun, limit: int = 50_000) -> dict[str, Any]:
    """Per-stage durations (ms) from the job's traces of the fixed-rate phase's events."""
    from rtd_core.topic_reader import iter_all

    if run.fixed is None:
        return {}
    wanted = {decision_id_for(e) for e in run.fixed.valid_event_ids}
    stages: dict[str, list[int]] = {}
    seen = 0
    for record in iter_all(run.config, run.config.kafka.topics.traces, timeout_s=120):
        if record.key not in wanted or record.value is None:
            continue
        for stage, ms in trace_stage_durations(json.loads(record.value)).items():
            stages.setdefault(stage, []).append(ms)
        seen += 1
        if seen >= limit:
            break
    return {"traces": seen, "stage_ms": {k: latency_summary(v) for k, v in stages.items()}}
