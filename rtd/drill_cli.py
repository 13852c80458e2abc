"""`rtd drill NAME` and `rtd drill all`: failure drills under steady load (bench/drills/)."""

from __future__ import annotations

import shlex
import sys
import time
import uuid
from typing import Annotated

import typer
from rich.console import Console

from bench.drills.core import DEFAULT_LOAD_SHARE, MEASURED_PEAK_PER_S, SOAK_LOAD_SHARE
from rtd.cli_config import ConfigOption, config_or_exit

console = Console()


def drill(
    name: Annotated[str, typer.Argument(
        help="taskmanager-kill, broker-restart, model-chaos, rescale, hostile-input, soak, "
             "or all (every one but the soak)")],
    config: ConfigOption = None,
    rate: Annotated[float | None, typer.Option(
        help="events/s; default: --load-share of the measured peak")] = None,
    load_share: Annotated[float | None, typer.Option(
        help=f"share of the measured peak [default: {DEFAULT_LOAD_SHARE:g}, "
             f"the soak {SOAK_LOAD_SHARE:g}]")] = None,
    peak: Annotated[float | None, typer.Option(
        help="measured peak decisions/s; default: the newest `rtd bench` result in "
             f"out/bench, else {MEASURED_PEAK_PER_S:g} (docs/BENCHMARKS.md)")] = None,
    kills: Annotated[int, typer.Option(help="taskmanager-kill: how many kills")] = 5,
    interval: Annotated[float, typer.Option(help="taskmanager-kill: s between kills")] = 60.0,
    down: Annotated[float, typer.Option(help="broker-restart: s the broker stays down")] = 30.0,
    model_down: Annotated[float, typer.Option(
        help="model-chaos: s the model server stays down")] = 60.0,
    chaos_phase: Annotated[float, typer.Option(
        help="model-chaos: s of latency past the deadline, and of errors")] = 30.0,
    hold: Annotated[float, typer.Option(
        help="rescale: s at the higher parallelism")] = 60.0,
    hostile: Annotated[int, typer.Option(
        help="hostile-input: fuzzed and hostile payloads to send")] = 100_000,
    hostile_rate: Annotated[float, typer.Option(
        help="hostile-input: payloads/s, beside the valid load")] = 500.0,
    minutes: Annotated[float, typer.Option(help="soak: minutes of load after warm-up")] = 60.0,
    customers: Annotated[int | None, typer.Option(
        min=1, help="customers the load draws from (default: the simulator's 200,000); "
                    "10,000,000 makes nearly every card new (memory against cards seen)")] = None,
    warmup: Annotated[float, typer.Option(help="s of load before the first action")] = 30.0,
    tail: Annotated[float, typer.Option(help="s of load after the last action")] = 45.0,
    publish: Annotated[bool, typer.Option(help="also write docs/RELIABILITY.md")] = False,
) -> None:
    """Run a drill on its own topics and job, audit every output, write a report."""
    from bench.drills import ALL, NAMES, DrillSettings, run_drill, summary_line, write_report
    from rtd_core.config import PROJECT_ROOT

    names = list(ALL) if name == "all" else [name]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        console.print(f"[red]unknown drill {unknown[0]}[/red]: one of {', '.join(NAMES)}, all")
        raise typer.Exit(2)
    base = config_or_exit(config)
    _require_stack(base, config)
    if load_share is None:
        load_share = SOAK_LOAD_SHARE if name == "soak" else DEFAULT_LOAD_SHARE
    if rate is None:
        if peak is None:
            peak = _measured_peak(PROJECT_ROOT / "out" / "bench")
        rate = peak * load_share
    settings = DrillSettings(rate=rate, kills=kills, interval_s=interval, broker_down_s=down,
                             warmup_s=warmup, tail_s=tail, model_down_s=model_down, chaos_phase_s=chaos_phase,
                             rescale_hold_s=hold, hostile_count=hostile,
                             hostile_rate=hostile_rate, soak_minutes=minutes,
                             customers=customers)
    command = "rtd drill " + shlex.join(sys.argv[2:])
    run = f"{time.strftime('%Y%m%d-%H%M')}-{uuid.uuid4().hex[:6]}"
    failed = []
    for n in names:
        config_n = _fresh(base, f"drill-{n}", run, n)
        console.print(f"drill {n}: run {run}, {settings.rate:.0f} events/s")
        result = run_drill(n, config_n, run, settings, command=command, log=console.print)
        out = write_report(result, PROJECT_ROOT / "out" / "drills" / run, publish)
        console.print(summary_line(result))
        console.print(f"report: {out / (n + '.md')}")
        if not result.passed:
            failed.append(n)
    if failed:
        raise typer.Exit(1)


def _measured_peak(bench_dir) -> float:
    """The peak a drill's load is a share of, and where it comes from, said aloud: a
    peak measured on another machine can make the load too heavy or too light here."""
    from bench.drills.core import latest_peak

    found = latest_peak(bench_dir)
    if found is None:
        console.print(f"[yellow]no `rtd bench` result in {bench_dir}[/yellow]: the load is a "
                      f"share of {MEASURED_PEAK_PER_S:g}/s, a peak measured on another "
                      "machine (docs/BENCHMARKS.md). For one measured here, run `rtd bench "
                      "--preset short --systems ours` first, or pass --peak or --rate.")
        return MEASURED_PEAK_PER_S
    console.print(f"peak {found.per_s:.0f}/s from `rtd bench` run {found.run} ({found.path})")
    return found.per_s


def _require_stack(config, config_file) -> None:
    """Exit 2 naming what is down and the command that starts it: a drill needs the
    whole stack of its config up, and would otherwise fail deep in its set-up."""
    from stack.flink_cluster import FlinkCluster
    from stack.kafka_broker import KafkaBroker
    from stack.model_server import ModelServer

    parts = {"Kafka": KafkaBroker(config), "Flink": FlinkCluster(config),
             "the model server": ModelServer(config)}
    down = [name for name, part in parts.items() if not part.running()]
    if down:
        flag = f" --config {config_file}" if config_file else ""
        console.print(f"[red]{', '.join(down)} of this config's stack "
                      f"({config.stack_dir}) not running[/red]: start it with "
                      f"`rtd stack up{flag}`, then run the drill again")
        raise typer.Exit(2)


def _fresh(base, kind: str, run: str, name: str):
    """``base`` with topics, group and job of this drill alone (the TaskManagers a drill
    needs are its own business: bench/drills/runner.py)."""
    topics = {role: f"{topic}-{kind}-{run[-6:]}" for role, topic in {
        "transactions": "transactions", "labels": "labels", "decisions": "decisions",
        "traces": "decision-traces", "dlq": "transactions-dlq"}.items()}
    kafka = base.kafka.model_copy(update={"topics": base.kafka.topics.model_copy(update=topics),
                                          "consumer_group": f"rtd-{kind}-{run[-6:]}"})
    job = base.job.model_copy(update={"name": f"rtd-{kind}-{run[-6:]}"})
    return base.model_copy(update={"kafka": kafka, "job": job})
