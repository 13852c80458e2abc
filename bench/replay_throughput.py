"""Replay benchmark: how fast does `rtd replay` turn Kafka history into training rows?

Produces N simulated events into a fresh `transactions` topic on a running stack, then
runs `rtd replay` once per setting (each in its own process, so each gets a fresh JVM
and mini cluster), alternating the settings over ``--repeat`` rounds so that a change
in the shared machine's load hits every setting alike:

    .venv/bin/python -m bench.replay_throughput --events 100000 \\
        --settings process:1,process:2,thread:1,thread:2 --repeat 2

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

from rtd.config import load_config
from rtd.simulator.producer import run_simulation
from rtd.stack.kafka_broker import KafkaBroker


def run_replay(config_file: Path, out: Path, mode: str, parallelism: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "rtd.cli", "replay", "--config", str(config_file),
           "--out", str(out), "--overwrite", "--no-progress", "--json",
           "--execution-mode", mode, "--parallelism", str(parallelism)]
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout)["replay"]
    rows = summary["rows"]
    return {"mode": mode, "parallelism": parallelism, "records": summary["records_in_range"],
            "rows": rows, "job_s": summary["job_s"], "events_per_s": summary["events_per_s"],
            "steady_rows_per_s": round(rows / summary["steady_s"], 1)
            if summary["steady_s"] else None,
            "command_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="stack config (default: the dev stack)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--settings", default="process:1,process:2")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    base = load_config(args.config)
    topics = {k: f"replaybench-{run}-{k}" for k in ("transactions", "labels", "decisions",
                                                     "traces", "dlq")}
    config = load_config(args.config, kafka={"topics": topics})
    KafkaBroker(config).create_topics()
    run_simulation(config, count=args.events, rate=None, seed=11, progress=False)
    settings = [(m, int(p)) for m, p in (s.split(":") for s in args.settings.split(","))]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(config.to_json())
        for _ in range(args.repeat):
            for mode, parallelism in settings:
                result = run_replay(config_file, Path(tmp) / "ds", mode, parallelism)
                print(json.dumps(result), flush=True)
                results.append(result)
    KafkaBroker(base).admin().delete_topics(list(topics.values()))
    print("\n| mode | parallelism | records | events/s (job, start-up incl.) "
          "| steady rows/s | job s |")
    print("|---|---|---|---|---|---|")
    for mode, parallelism in settings:
        mine = [r for r in results if (r["mode"], r["parallelism"]) == (mode, parallelism)]
        med = {k: statistics.median(r[k] for r in mine)
               for k in ("events_per_s", "steady_rows_per_s", "job_s")}
        print(f"| {mode} | {parallelism} | {mine[0]['records']:,} | {med['events_per_s']:,.0f} "
              f"| {med['steady_rows_per_s']:,.0f} | {med['job_s']:.1f} |")


if __name__ == "__main__":
    main()
