"""Drain benchmark: how fast does the job decide a backlog?

Produces N simulated events into fresh topics, submits the job to the running local
stack, and measures decisions/s from the first to the last decision (by `decided_at`),
plus stage latencies from the traces. Settings can be overridden as JSON:

    .venv/bin/python -m bench.drain_throughput --events 20000 \
        --override '{"flink": {"bundle_size": 5000, "bundle_time_ms": 100}}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.fresh_run import fresh_run_config
from decisioning.trace import trace_stage_durations
from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from stack.kafka_broker import KafkaBroker


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--override", default="{}")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    _run, topics, config = fresh_run_config("bench", args.override)
    KafkaBroker(config).create_topics()
    summary = run_simulation(config, count=args.events, rate=None, seed=1, progress=False,
                             malformed_share=0.01)
    expected = len(summary.valid_event_ids)
    job_id = submit(config)
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.timeout:
            decisions = read_all(config, topics["decisions"])
            if len(decisions) >= expected:
                break
            time.sleep(3)
        traces = read_all(config, topics["traces"])
    finally:
        FlinkCluster(config).cancel(job_id)
    docs = [json.loads(r.value) for r in decisions]
    decided = [d["decided_at"] for d in docs]
    span = (max(decided) - min(decided)) / 1000
    stages: dict[str, list[float]] = {}
    scored = calls = 0.0
    for record in traces:
        trace = json.loads(record.value)
        for stage, ms in trace_stage_durations(trace).items():
            stages.setdefault(stage, []).append(ms)
        response = (trace.get("model") or {}).get("response")
        if response and response.get("batch_size"):
            scored += 1
            calls += 1 / response["batch_size"]  # each call's rows add up to one call
    print(json.dumps({
        "events": args.events, "decisions": len(docs), "expected": expected,
        "decisions_per_s": round(len(docs) / span, 1) if span else None,
        "model_path_share": round(sum(d["path"] == "MODEL" for d in docs) / len(docs), 3),
        "model_calls": round(calls), "rows_per_call": round(scored / calls, 1) if calls else None,
        "stage_ms_p50": {k: statistics.median(v) for k, v in stages.items()},
        "stage_ms_p99": {k: percentile(v, 0.99) for k, v in stages.items()},
        "override": json.loads(args.override),
    }, indent=1))


if __name__ == "__main__":
    main()
