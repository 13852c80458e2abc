"""What the model path costs: end-to-end decisions/s with live model scoring vs rules only.

Two modes, run alternately (``--rounds`` times each) against the running local stack, each
on fresh topics with its own job:

- ``model``: the job scores every record with the stack's model server (batched Predict);
- ``rules``: the job's serving target is a port nobody listens on, so every call fails as
  ``unavailable`` and the client's circuit breaker soon refuses rows without a network
  call: the same topology and code path, without the model's cost.

Each round pre-fills ``--events`` simulated events, submits the job and measures the
drain rate (decisions over the span of their ``decided_at``). From the model rounds'
traces: the client-side model latency per row (batching wait + RPC), the model stage
(customer features done -> scored, queueing in the async operator included) and rows per
Predict call; from the scoring operator's gauges (Flink REST) the Predict RPC round trip
p50/p99 over its latest calls. ``--paced-rate R`` adds one model round paced at R events/s for
``--paced-seconds``, below the drain rate, for the model latencies of a job that keeps up.

    .venv/bin/python -m bench.model_path --events 15000 --rounds 2 --paced-rate 200
    .venv/bin/python -m bench.model_path --config my-stack.json ...   # another stack
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from decisioning.trace import trace_stage_durations
from rtd_core.config import RtdConfig, load_config
from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from stack.kafka_broker import KafkaBroker


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def dead_port() -> int:
    """A port that was free a moment ago: nothing will answer there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RoundResult:
    mode: str
    events: int
    decisions: int
    decisions_per_s: float | None
    paths: dict[str, int]
    fallback_reasons: dict[str, int]
    model_row_ms_p50: float | None  # client: queued in the client -> score (batching wait + RPC)
    model_row_ms_p99: float | None
    model_stage_ms_p50: float | None  # trace timings: customer_features -> scored
    model_stage_ms_p99: float | None
    rows_per_call: float | None  # Predict calls estimated as sum over rows of 1/batch_size
    total_ms_p50: float | None  # received -> decided
    total_ms_p99: float | None
    paced_rate: float | None = None
    # The scoring operator's gauges at the end (Flink REST): answered Predict calls only.
    call_ms_p50: float | None = None  # one Predict RPC's round trip, latest 2,048 calls
    call_ms_p99: float | None = None
    gauge_rows_per_call: float | None = None  # predict_rows / predict_calls, whole run
    # The machine is shared: its 1-minute load average when the round ended.
    load_avg_1m: float | None = None


def round_config(base: RtdConfig, mode: str, tag: str) -> RtdConfig:
    topics = {k: f"{k}-bench-{tag}" for k in ("transactions", "labels", "decisions",
                                                "traces", "dlq")}
    kafka = base.kafka.model_copy(update={
        "topics": base.kafka.topics.model_copy(update=topics),
        "consumer_group": f"bench-{tag}"})
    job = base.job.model_copy(update={"name": f"rtd-bench-{tag}"})
    serving = base.serving
    if mode == "rules":
        serving = serving.model_copy(update={"port": dead_port()})
    return base.model_copy(update={"kafka": kafka, "job": job, "serving": serving})


def summarise(mode: str, events: int, decisions: list[dict[str, Any]],
              traces: list[dict[str, Any]], skip_first_s: float = 0.0) -> RoundResult:
    decided = sorted(d["decided_at"] for d in decisions)
    span = (decided[-1] - decided[0]) / 1000 if len(decided) > 1 else 0.0
    start = decided[0] + skip_first_s * 1000 if decided else 0
    kept = [t for t in traces if t["decided_at"] >= start]
    responses = [t["model"]["response"] for t in kept if t["model"]["response"]]
    durations = [trace_stage_durations(t) for t in kept]
    stage = [d["customer_features->scored"] for d in durations
             if "customer_features->scored" in d]
    total = [d["total"] for d in durations if "total" in d]
    calls = sum(1 / r["batch_size"] for r in responses)
    return RoundResult(
        mode=mode,
        events=events,
        decisions=len(decisions),
        decisions_per_s=round(len(decisions) / span, 1) if span else None,
        paths=dict(Counter(d["path"] for d in decisions)),
        fallback_reasons=dict(Counter(str(d["fallback_reason"]) for d in decisions)),
        model_row_ms_p50=percentile([r["latency_ms"] for r in responses], 0.50),
        model_row_ms_p99=percentile([r["latency_ms"] for r in responses], 0.99),
        model_stage_ms_p50=percentile(stage, 0.50),
        model_stage_ms_p99=percentile(stage, 0.99),
        rows_per_call=round(len(responses) / calls, 2) if calls else None,
        total_ms_p50=percentile(total, 0.50),
        total_ms_p99=percentile(total, 0.99),
    )


def model_gauges(cluster: FlinkCluster, job_id: str, wait_s: float = 25) -> dict[str, float]:
    """The scoring operator's ``rtd.model`` gauges, once they count calls."""
    return cluster.operator_gauges(job_id, "rtd.model", ready="predict_calls", wait_s=wait_s)


def add_gauges(result: RoundResult, gauges: dict[str, float]) -> RoundResult:
    result.load_avg_1m = round(os.getloadavg()[0], 1)
    if "call_latency_p50_us" in gauges:
        result.call_ms_p50 = round(gauges["call_latency_p50_us"] / 1000, 2)
        result.call_ms_p99 = round(gauges["call_latency_p99_us"] / 1000, 2)
    if gauges.get("predict_calls"):
        result.gauge_rows_per_call = round(gauges["predict_rows"] / gauges["predict_calls"], 2)
    return result


def wait_for(config: RtdConfig, expected: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    records = []
    while time.monotonic() < deadline:
        records = read_all(config, config.kafka.topics.decisions)
        if len(records) >= expected:
            break
        time.sleep(3)
    return [json.loads(r.value) for r in records if r.value]


def drain_round(base: RtdConfig, mode: str, events: int, timeout_s: float) -> RoundResult:
    config = round_config(base, mode, f"{mode}-{uuid.uuid4().hex[:6]}")
    KafkaBroker(config).create_topics()
    summary = run_simulation(config, count=events, rate=None, seed=1, progress=False,
                             malformed_share=0.0)
    job_id = submit(config)
    cluster = FlinkCluster(config)
    try:
        decisions = wait_for(config, len(summary.valid_event_ids), timeout_s)
        traces = [json.loads(r.value) for r in read_all(config, config.kafka.topics.traces)
                  if r.value]
        gauges = model_gauges(cluster, job_id) if mode == "model" else {}
    finally:
        cluster.cancel(job_id)
    return add_gauges(summarise(mode, events, decisions, traces), gauges)


def paced_round(base: RtdConfig, rate: float, seconds: float, timeout_s: float) -> RoundResult:
    """The model path at a rate the job keeps up with; the first 10 s are left out."""
    config = round_config(base, "model", f"paced-{uuid.uuid4().hex[:6]}")
    KafkaBroker(config).create_topics()
    job_id = submit(config)
    cluster = FlinkCluster(config)
    sent: dict[str, Any] = {}
    try:
        producer = threading.Thread(target=lambda: sent.update(summary=run_simulation(
            config, count=None, rate=rate, duration_s=seconds, seed=2, progress=False,
            malformed_share=0.0)))
        producer.start()
        producer.join()
        expected = len(sent["summary"].valid_event_ids)
        decisions = wait_for(config, expected, timeout_s)
        traces = [json.loads(r.value) for r in read_all(config, config.kafka.topics.traces)
                  if r.value]
        gauges = model_gauges(cluster, job_id)
    finally:
        cluster.cancel(job_id)
    result = summarise("model-paced", expected, decisions, traces, skip_first_s=10)
    result.paced_rate = rate
    return add_gauges(result, gauges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating")
    parser.add_argument("--paced-rate", type=float, default=0.0)
    parser.add_argument("--paced-seconds", type=float, default=40.0)
    parser.add_argument("--config", default=None, help="RtdConfig JSON (default: the dev stack)")
    parser.add_argument("--override", default="{}", help="JSON merged into the config")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    base = load_config(args.config, **json.loads(args.override))
    results: list[RoundResult] = []
    for i in range(args.rounds):
        for mode in (("model", "rules") if i % 2 == 0 else ("rules", "model")):
            results.append(drain_round(base, mode, args.events, args.timeout))
            print(json.dumps(asdict(results[-1])), flush=True)
    if args.paced_rate > 0:
        results.append(paced_round(base, args.paced_rate, args.paced_seconds, args.timeout))
        print(json.dumps(asdict(results[-1])), flush=True)
    rates = {mode: [r.decisions_per_s for r in results if r.mode == mode and r.decisions_per_s]
             for mode in ("model", "rules")}
    if rates["model"] and rates["rules"]:
        model, rules = statistics.mean(rates["model"]), statistics.mean(rates["rules"])
        print(json.dumps({"model_decisions_per_s": round(model, 1),
                          "rules_decisions_per_s": round(rules, 1),
                          "model_path_throughput_cost": round(1 - model / rules, 3)}))


if __name__ == "__main__":
    main()
