"""Drain benchmark of the batched peer alone: how fast does it decide a backlog?

Like ``bench/drain_throughput.py`` for the job: produces N simulated events into fresh
topics, then starts ``bench.peers.batched_service`` on them and measures decisions/s
from the first to the last decision (by ``decided_at``), rows per model call from the
traces, and checks one decision and one trace per valid event, one dead letter per
malformed one (read_committed). On the test stack:

    .venv/bin/python -m bench.peers.drain_batched --events 20000 \
        --override '{"kafka": {"bootstrap_servers": "127.0.0.1:21092"}, "serving": {"port": 20500}}'
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

from bench.fresh_run import fresh_run_config
from rtd_core.config import PROJECT_ROOT
from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.kafka_broker import KafkaBroker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--override", default="{}")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    _run, topics, config = fresh_run_config("batched", args.override)
    KafkaBroker(config).create_topics()
    summary = run_simulation(config, count=args.events, rate=None, seed=1, progress=False,
                             malformed_share=0.01)
    expected = len(summary.valid_event_ids)
    with tempfile.TemporaryDirectory() as work:
        config_file = Path(work) / "config.json"
        config_file.write_text(config.to_json())
        log = Path(work) / "service.log"
        argv = [sys.executable, "-m", "bench.peers.batched_service", "--config",
                str(config_file), "--input", topics["transactions"], "--output",
                topics["decisions"], "--group", config.kafka.consumer_group,
                "--state-dir", str(Path(work) / "state")]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=PROJECT_ROOT)
        start = time.monotonic()
        try:
            decisions = []
            while time.monotonic() - start < args.timeout and proc.poll() is None:
                decisions = read_all(config, topics["decisions"])
                if len(decisions) >= expected:
                    break
                time.sleep(2)
            time.sleep(2)
            decisions = read_all(config, topics["decisions"])
            traces = read_all(config, topics["traces"])
            dead = read_all(config, topics["dlq"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        service_log = log.read_text()[-1000:]
    docs = [orjson.loads(r.value) for r in decisions]
    decided = [d["decided_at"] for d in docs]
    span = (max(decided) - min(decided)) / 1000
    trace_docs = [orjson.loads(r.value) for r in traces]
    rows = [t["model"]["response"]["batch_size"] for t in trace_docs if t["model"]["response"]]
    calls = [t["model"]["response"]["latency_ms"] for t in trace_docs if t["model"]["response"]]
    print(json.dumps({
        "events": args.events, "valid": expected, "decisions": len(docs),
        "decisions_per_s": round(len(docs) / span, 1) if span else None,
        "span_s": round(span, 2),
        "exactly_once": (Counter(d["event_id"] for d in docs) == Counter(summary.valid_event_ids)
                         and Counter(t["event_id"] for t in trace_docs)
                         == Counter(summary.valid_event_ids)
                         and len(dead) == len(summary.malformed)),
        "dead_letters": len(dead),
        "rows_per_call_median": statistics.median(rows) if rows else None,
        "call_ms_median": statistics.median(calls) if calls else None,
        "paths": Counter(d["path"] for d in docs),
        "service_log_tail": service_log,
    }, indent=1))


if __name__ == "__main__":
    main()
