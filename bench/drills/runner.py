"""Running one drill: its own job under steady load, the fault, the drain, and the audit
of all three outputs that every drill must pass, then the drill's own judgement."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.drills import faults, judges
from bench.drills.core import (
    DrillContext,
    DrillSettings,
    SteadyLoad,
    audit_ids,
    event_id_of,
    longest_stall,
    now_ms,
    open_transactions,
    wait_running,
    windows,
)
from bench.drills.judges import DECISION_PARTS, TRACE_PARTS, Outputs, keep
from bench.resources import ResourceSampler, stack_groups
from bench.soak import MemorySampler
from bench.stats import latency_summary
from rtd_core.config import RtdConfig
from rtd_core.topic_reader import iter_all
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from stack.kafka_broker import KafkaBroker


@dataclass(frozen=True)
class Drill:
    fault: Callable[[DrillContext], None]
    load_s: Callable[[DrillSettings], float]  # how long the steady load must last
    actions: Callable[[DrillSettings], int]  # how many actions a full run takes
    taskmanagers: int = 1  # at least this many in the cluster


MODEL_START_ALLOWANCE_S = 60.0

DRILLS: dict[str, Drill] = {
    "taskmanager-kill": Drill(faults.kill_taskmanagers,
                              lambda s: s.warmup_s + s.kills * s.interval_s + s.tail_s,
                              lambda s: s.kills, taskmanagers=2),
    "broker-restart": Drill(faults.restart_broker,
                            lambda s: s.warmup_s + s.broker_down_s + 30 + s.tail_s,
                            lambda s: 2),
    # The model server's start (TensorFlow's import, the SavedModel's load) took over
    # 30 s on a loaded machine: the load outlasts it, so decisions follow its return.
    "model-chaos": Drill(faults.model_chaos,
                         lambda s: (s.warmup_s + 2 * s.chaos_phase_s + 2 * s.chaos_calm_s
                                    + s.model_down_s + MODEL_START_ALLOWANCE_S + s.tail_s),
                         lambda s: 6),
    "rescale": Drill(faults.rescale,
                     lambda s: s.warmup_s + s.rescale_hold_s + s.tail_s + 60,
                     lambda s: 4, taskmanagers=2),
    "hostile-input": Drill(faults.hostile_input,
                           lambda s: s.warmup_s + s.hostile_count / s.hostile_rate + s.tail_s,
                           lambda s: 2),
    "soak": Drill(faults.soak, lambda s: s.warmup_s + s.soak_minutes * 60, lambda s: 2),
}
NAMES = tuple(DRILLS)
# What `rtd drill all` runs: the soak is an hour, so it runs only when named.
ALL = tuple(n for n in NAMES if n != "soak")


@dataclass
class DrillResult:
    drill: str
    run: str
    settings: dict[str, Any]
    command: str
    passed: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)


def run_drill(name: str, config: RtdConfig, run: str, settings: DrillSettings, *,
              command: str, log: Callable[[str], None] = print) -> DrillResult:
    drill = DRILLS[name]
    if config.flink.taskmanagers < drill.taskmanagers:
        config = config.model_copy(update={"flink": config.flink.model_copy(
            update={"taskmanagers": drill.taskmanagers})})
    cluster = FlinkCluster(config)
    KafkaBroker(config).create_topics()
    cluster._start_taskmanagers()  # up to flink.taskmanagers: spares or the rescale's second
    cluster.start()
    job_id = submit(config)
    wait_running(cluster, job_id)
    ctx = DrillContext(config, cluster, job_id, settings, log, memory_parts=name == "soak")
    ctx.sample(job_id)
    topics = config.kafka.topics
    began = now_ms()
    error = None
    hanging: dict[str, int] = {}
    # The soak also samples every process's CPU, for its judge to line p99 up with
    # (bench/drills/coincide.py): the stack's, the drill's own (load, samplers) and others'.
    # The TaskManagers' threads by class too: RocksDB's compactions beside the tasks.
    resources = ResourceSampler(
        lambda: {**stack_groups(cluster.pid_dir, None), "drill": [os.getpid()]},
        interval_s=5.0,
        threads_of=lambda: stack_groups(cluster.pid_dir, None)["flink-taskmanager"],
    ) if name == "soak" else None
    with MemorySampler(cluster.pid_dir, interval_s=10.0 if name == "soak" else 5.0) as memory, \
            (resources or contextlib.nullcontext()):
        try:
            # Long enough for the longest catch-up; stopped once the actions are done.
            load_s = drill.load_s(settings) + settings.catch_up_max_s
            with SteadyLoad(config, settings.rate, load_s, settings.seed,
                            settings.customers) as load:
                try:
                    drill.fault(ctx)
                except Exception as exc:  # noqa: BLE001 - reported, then the audit still runs
                    error = f"{type(exc).__name__}: {exc}"
                    log(f"drill action failed: {error}")
                finally:
                    load.stop()
            summary = load.summary
            expected = set(summary.valid_event_ids) if summary else set()
            deadline = time.monotonic() + settings.drain_timeout_s
            while time.monotonic() < deadline:
                decided = {json.loads(r.value or "{}").get("event_id")
                           for r in iter_all(config, topics.decisions, timeout_s=600)}
                if expected <= decided:
                    break
                time.sleep(5)
            time.sleep(3 * config.flink.checkpoint_interval_ms / 1000 + 2)
            hanging = open_transactions(config, [topics.decisions, topics.traces, topics.dlq])
        finally:
            flink = ctx.stop_sampling()
            try:
                job_state = cluster.rest(f"/jobs/{ctx.job_id}").get("state")
            except Exception:  # noqa: BLE001
                job_state = "unknown"
            cluster.cancel(ctx.job_id)
    outputs = read_outputs(config, TRACE_PARTS[name])
    outputs.memory = memory.samples
    outputs.memory_parts = flink.memory
    outputs.vertex = flink.vertex
    outputs.checkpoints = sorted((c["trigger_ms"], c["duration_ms"])
                                 for c in flink.checkpoints.values()
                                 if c["status"] == "COMPLETED")
    outputs.resources = resources.samples if resources else []
    outputs.checkpoint_state = sorted((c["trigger_ms"], c.get("state_bytes", 0))
                                      for c in flink.checkpoints.values()
                                      if c["status"] == "COMPLETED")
    return judge(name, ctx, run, command=command, began=began, summary=summary,
                 load_error=load.error, error=error, hanging=hanging, flink=flink,
                 job_state=job_state, outputs=outputs)


def read_outputs(config: RtdConfig, trace_parts: tuple[str, ...] | None = None) -> Outputs:
    """Every output of the drill's topics; traces with only ``trace_parts`` (None: whole)."""
    topics = config.kafka.topics
    # The transactions topic holds malformed payloads too: only valid events have ids.
    sent_at = {event_id_of(r.value): r.timestamp
               for r in iter_all(config, topics.transactions, timeout_s=600)}
    decisions, appended = [], []
    for r in iter_all(config, topics.decisions, timeout_s=600):
        decisions.append(keep(json.loads(r.value or "{}"), DECISION_PARTS))
        appended.append(r.timestamp)
    traces = [keep(json.loads(r.value or "{}"), trace_parts)
              for r in iter_all(config, topics.traces, timeout_s=600)]
    dead = [json.loads(r.value or "{}") for r in iter_all(config, topics.dlq, timeout_s=600)]
    return Outputs(decisions, appended, traces, dead, sent_at)


def judge(name: str, ctx: DrillContext, run: str, *, command: str, began: int, summary: Any,
          load_error: str | None, error: str | None, hanging: dict[str, int], flink: Any,
          job_state: str, outputs: Outputs) -> DrillResult:
    """The audit every drill passes, then the drill's own checks (bench/drills/judges.py).

    The audit covers the steady load: every valid event one decision and one trace, every
    malformed one one dead letter. What a drill adds to the input itself (the hostile
    payloads) is left to its judge."""
    settings = ctx.settings
    expected = set(summary.valid_event_ids) if summary else set()
    hostile = ctx.extra.get("hostile") or {}
    foreign_ids = {p.event_id for p in hostile.get("payloads", ())}
    foreign_places = set(hostile.get("placed", {}).values())
    topic = ctx.config.kafka.topics.transactions
    decisions = [(d, ts) for d, ts in zip(outputs.decisions, outputs.decision_append_ms,
                                          strict=True) if d.get("event_id") not in foreign_ids]
    trace_ids = [t.get("event_id") for t in outputs.traces
                 if t.get("event_id") not in foreign_ids]
    dead = sum(1 for d in outputs.dead_letters
               if not (d.get("topic") == topic
                       and (d.get("partition"), d.get("offset")) in foreign_places))
    decided_ms = [int(d["decided_at"]) for d, _ in decisions]
    latencies = [ts - outputs.sent_at.get(d["event_id"], ts) for d, ts in decisions]
    order = sorted(range(len(decided_ms)), key=decided_ms.__getitem__)
    decided_sorted = [decided_ms[i] for i in order]
    d_audit = audit_ids(expected, [d["event_id"] for d, _ in decisions])
    t_audit = audit_ids(expected, trace_ids)
    malformed = len(summary.malformed) if summary else 0
    result = DrillResult(
        drill=name, run=run, settings=asdict(settings), command=command,
        actions=[{"t_s": round((a.at_ms - began) / 1000, 1), "what": a.what,
                  "detail": a.detail} for a in ctx.actions],
    )
    result.figures = {
        "sent": {"valid": len(expected), "malformed": malformed},
        "load_error": load_error, "drill_error": error,
        "decisions": d_audit, "traces": t_audit,
        "dead_letters": {"expected": malformed, "received": dead},
        "open_transactions": hanging,
        # The longest time without a decision from the first action to the end.
        "longest_stall_s": longest_stall(decided_sorted,
                                         ctx.actions[0].at_ms if ctx.actions else began),
        "restarts": flink.restarts, "job_state_at_end": job_state,
        "latency_ms": latency_summary(latencies),
        "checkpoints": {"completed": sum(c["status"] == "COMPLETED"
                                         for c in flink.checkpoints.values()),
                        "failed": sum(c["status"] == "FAILED"
                                      for c in flink.checkpoints.values()),
                        "size_bytes": [c["size_bytes"] for c in flink.checkpoints.values()
                                       if c["status"] == "COMPLETED"]},
    }
    result.series = {
        "windows": windows(decided_sorted, [latencies[i] for i in order], began),
        "memory": [(round(t, 1), round(rss, 1), round(heap, 1))
                   for t, rss, heap, pids in outputs.memory if pids],
    }
    result.checks = {
        "load delivered": load_error is None and summary is not None,
        "drill ran": error is None and len(ctx.actions) == DRILLS[name].actions(settings),
        "0 lost, 0 duplicated decisions": d_audit["lost"] == d_audit["duplicated"]
        == d_audit["unexpected"] == 0,
        "0 lost, 0 duplicated traces": t_audit["lost"] == t_audit["duplicated"]
        == t_audit["unexpected"] == 0,
        "one dead letter per malformed event": dead == malformed,
        "no open transaction": bool(hanging) and not any(hanging.values()),
        "job running at the end": job_state == "RUNNING",
    }
    if name in ("hostile-input", "soak", "model-chaos", "rescale"):
        result.checks["0 job restarts"] = flink.restarts == 0
    checks, figures = judges.JUDGES[name](outputs, ctx)
    result.checks.update(checks)
    result.figures.update(figures)
    result.passed = all(result.checks.values())
    return result
