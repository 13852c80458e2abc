"""Replay benchmark: how fast does `rtd replay` turn Kafka history into training rows?

Produces N simulated events into a fresh `transactions` topic on a running stack, then
runs `rtd replay` once per setting (each in its own process, so each gets a fresh JVM
and mini cluster), alternating the settings over ``--repeat`` rounds so that a change
in the shared machine's load hits every setting alike:

    .venv/bin/python -m bench.replay_throughput --events 100000 \\
        --settings local:1,process:1,thread:1 --repeat 2

A setting is ``local:1`` (``--engine local``: no Flink, one loop) or
``<execution mode>:<parallelism>`` (``--engine flink``).

Prints one JSON line per run and a Markdown table of medians. "events/s" is records the
job read (warm-up included) per second of job time, start-up included; "steady" is
rows per second from the first to the last collected batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rtd_core.config import load_config
from simulator.producer import run_simulation
from stack.kafka_broker import KafkaBroker


def tree_cpu_s(proc: subprocess.Popen[str], last: dict[int, float]) -> None:
    """Record the CPU seconds of the replay's process tree (the CLI, its PyFlink gateway
    JVM with the mini cluster, and any Python workers), per pid, as last seen."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                last[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return


def run_replay(config_file: Path, out: Path, mode: str, parallelism: int) -> dict[str, Any]:
    summary_file = out.parent / "summary.json"
    cmd = [sys.executable, "-m", "rtd.cli", "replay", "--config", str(config_file),
           "--out", str(out), "--overwrite", "--no-progress", "--json-out", str(summary_file)]
    cmd += ["--engine", "local"] if mode == "local" else [
        "--engine", "flink", "--execution-mode", mode, "--parallelism", str(parallelism)]
    started = time.perf_counter()
    cpu: dict[int, float] = {}
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        while proc.poll() is None:
            tree_cpu_s(proc, cpu)
            time.sleep(0.5)
        stderr = proc.stderr.read() if proc.stderr else ""
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    summary = json.loads(summary_file.read_text())["replay"]
    rows = summary["rows"]
    return {"mode": mode, "parallelism": parallelism, "records": summary["records_in_range"],
            "rows": rows, "job_s": summary["job_s"], "events_per_s": summary["events_per_s"],
            "steady_rows_per_s": round(rows / summary["steady_s"], 1)
            if summary["steady_s"] else None,
            "command_s": round(wall, 1), "cpu_s": round(sum(cpu.values()), 1),
            # local engine only: records per CPU second of the engine itself
            "events_per_engine_cpu_s": round(summary["records_in_range"]
                                             / summary["engine_cpu_s"], 1)
            if summary.get("engine_cpu_s") else None,
            "events_per_cpu_s": round(summary["records_in_range"] / sum(cpu.values()), 1)
            if cpu else None}


def engine_core(config: Any) -> dict[str, Any]:
    """The local engine's loop alone (``LocalReplay.process``: validation, both views,
    watermarks, the row) over the topic's records already read from Kafka: no start-up,
    no consumer, no labels or Parquet. CPU seconds too, which others' load does not
    inflate the way it does wall time."""
    from confluent_kafka import TopicPartition

    from feature_views.definitions import ALL_VIEWS
    from replay.local_engine import LocalReplay, kafka_records
    from replay.offsets import ResolvedRange
    from rtd_core.topic_reader import consumer

    topic = config.kafka.topics.transactions
    reader = consumer(config)
    try:
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in reader.list_topics(topic, timeout=10).topics[topic].partitions}
    finally:
        reader.close()
    whole = ResolvedRange(topic, read_from=dict.fromkeys(ends, 0),
                          rows_from=dict.fromkeys(ends, 0), read_to=ends)
    pending = {p for p, end in ends.items() if end}

    def left() -> set[int]:
        return pending

    records = []
    for record in kafka_records(config, whole, left):
        records.append(record)
        if record.end or record.offset >= ends[record.partition] - 1:
            pending.discard(record.partition)
    replay = LocalReplay(config, ALL_VIEWS, whole)
    wall, cpu = time.perf_counter(), time.process_time()
    for record in records:
        if not record.end:
            replay.process(record)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = sum(1 for r in records if not r.end)
    return {"mode": "local engine core, in-process", "records": n, "rows": len(replay.rows),
            "events_per_s": round(n / wall, 1), "events_per_cpu_s": round(n / cpu, 1)}


def plain_loop(config: Any) -> dict[str, Any]:
    """The same validation and window code as the job, in one Python loop over the
    same records, no Flink: the floor the per-operator overhead is measured against."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from decisioning.transaction import validate
    from feature_views.definitions import CARD_FEATURES, CUSTOMER_FEATURES
    from feature_views.window_state import ViewComputer, empty_state
    from rtd_core.topic_reader import consumer

    topic = config.kafka.topics.transactions
    reader = consumer(config)  # raw bytes: the job validates bytes, not decoded text
    try:
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in reader.list_topics(topic, timeout=10).topics[topic].partitions}
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        raws: list[bytes | None] = []
        while len(raws) < sum(ends.values()):
            msg = reader.poll(1.0)
            if msg is not None and not msg.error():
                raws.append(msg.value())
    finally:
        reader.close()
    views: list[tuple[ViewComputer, str, dict[str, Any]]] = [
        (ViewComputer(v), v.entity_key, {}) for v in (CARD_FEATURES, CUSTOMER_FEATURES)]
    started = time.perf_counter()
    rows = 0
    for raw in raws:
        event = validate(raw)
        if not isinstance(event, dict):
            continue
        features: dict[str, float] = {}
        for computer, key, states in views:
            state = states.setdefault(event[key], empty_state())
            features.update(computer.apply(state, event))
        rows += 1
    took = time.perf_counter() - started
    return {"mode": "plain python loop", "records": len(raws), "rows": rows,
            "events_per_s": round(len(raws) / took, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="stack config (default: the dev stack)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--settings", default="local:1,process:1")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--plain-loop", action="store_true",
                        help="also time validation + features in a plain Python loop")
    parser.add_argument("--engine-core", type=int, default=0, metavar="N",
                        help="also time the local engine's loop alone, N times")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    base = load_config(args.config)
    topics = {k: f"replaybench-{run}-{k}" for k in ("transactions", "labels", "decisions",
                                                     "traces", "dlq")}
    config = load_config(args.config, kafka={"topics": topics})
    KafkaBroker(config).create_topics()
    run_simulation(config, count=args.events, rate=None, seed=11, progress=False)
    settings = [(m, int(p)) for m, p in (s.split(":") for s in args.settings.split(",") if s)]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(config.to_json())
        for _ in range(args.repeat):
            for mode, parallelism in settings:
                result = run_replay(config_file, Path(tmp) / "ds", mode, parallelism)
                print(json.dumps(result), flush=True)
                results.append(result)
    if args.plain_loop:
        print(json.dumps(plain_loop(config)), flush=True)
    for _ in range(args.engine_core):
        print(json.dumps(engine_core(config)), flush=True)
    KafkaBroker(base).admin().delete_topics(list(topics.values()))
    print("\n| mode | parallelism | records | events/s (job, start-up incl.) "
          "| steady rows/s | job s | CPU s (whole tree) | events per CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, parallelism in settings:
        mine = [r for r in results if (r["mode"], r["parallelism"]) == (mode, parallelism)]
        med = {k: statistics.median(r[k] for r in mine)
               for k in ("events_per_s", "steady_rows_per_s", "job_s", "cpu_s",
                         "events_per_cpu_s")}
        print(f"| {mode} | {parallelism} | {mine[0]['records']:,} | {med['events_per_s']:,.0f} "
              f"| {med['steady_rows_per_s']:,.0f} | {med['job_s']:.1f} | {med['cpu_s']:.0f} "
              f"| {med['events_per_cpu_s']:,.0f} |")


if __name__ == "__main__":
    main()
