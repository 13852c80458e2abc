"""`rtd bench`: ours and the peers, one after the other, in one run, on the local stack.

    rtd bench --preset short            # the job and its three peers, one run
    rtd bench --preset full --publish   # and append the table to docs/BENCHMARKS.md

Writes ``out/bench/<date>-<run>/result.json`` and PNG charts there; ``--publish`` also
copies the charts to docs/img and appends a dated section to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rtd_core.config import PROJECT_ROOT, RtdConfig, load_config

SYSTEMS = ("ours", "python", "quix", "batched")
_console = Console(stderr=True)


def machine_description() -> str:
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    return f"{psutil.cpu_count()}-core, {memory:.0f} GiB, whole stack on it"


def _system(name: str, base: RtdConfig, run_id: str, run_dir: Path) -> Any:
    from bench.systems import OurJob, PeerProcess, TracingPeer, bench_config

    config = bench_config(base, run_id, name)
    if name == "ours":
        return OurJob(config, run_dir)
    if name == "python":
        return PeerProcess("python", "bench.peers.python_loop", config, run_dir)
    if name == "batched":
        return TracingPeer("batched", "bench.peers.batched_service", config, run_dir,
                           ("--state-dir", str(run_dir / "batched-state")))
    state_dir = run_dir / "quix-state"
    return PeerProcess("quix", "bench.peers.quix_app", config, run_dir,
                       ("--state-dir", str(state_dir)))


def run_bench(base: RtdConfig, preset_name: str, systems: list[str], out_root: Path,
              overrides: dict[str, Any], label: str, keep_topics: bool,
              fixed_rate: float | None) -> tuple[dict[str, Any], Path]:
    from bench.analysis import analyse, stage_times
    from bench.pacer import delete_topics_containing
    from bench.presets import PRESETS
    from bench.runner import run_system

    preset = PRESETS[preset_name]
    if fixed_rate is not None:
        preset = type(preset)(**{**preset.to_dict(), "fixed_rate": fixed_rate})
    run_id = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    run_dir = out_root / f"{now:%Y%m%d-%H%M%S}-{run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # One event stream for every system: same seed, same start time, same ids.
    start_time_ms = time.time_ns() // 1_000_000
    result: dict[str, Any] = {
        "run_id": run_id, "date": f"{now:%Y-%m-%d %H:%M} UTC", "label": label,
        "command": " ".join(shlex.quote(a) for a in ["rtd", *sys.argv[1:]]),
        "machine": machine_description(), "preset": preset.to_dict(),
        "overrides": overrides, "start_time_ms": start_time_ms, "systems": {},
    }
    try:
        for name in systems:
            system = _system(name, base, run_id, run_dir)
            seen = run_system(system, system.config, preset, run_dir, start_time_ms,
                              _console.print)
            figures, _raw = analyse(seen)
            if name == "ours":
                figures["stages"] = stage_times(seen)
            result["systems"][name] = figures
            (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    finally:
        if not keep_topics:
            delete_topics_containing(base, f"bench-{run_id}-")
        # The Quix peer's RocksDB state is useless once its topics are gone.
        shutil.rmtree(run_dir / "quix-state", ignore_errors=True)
        shutil.rmtree(run_dir / "batched-state", ignore_errors=True)
    return result, run_dir


def bench(
    preset: Annotated[str, typer.Option(help="short (under 5 minutes) or full")] = "short",
    config: Annotated[Path | None, typer.Option("--config", help="JSON config file")] = None,
    systems: Annotated[str, typer.Option(help="Comma-separated, run in this order")] =
        ",".join(SYSTEMS),
    override: Annotated[str, typer.Option(
        help='JSON config overrides for every system, e.g. \'{"flink": {"bundle_size": 5000}}\''
    )] = "{}",
    fixed_rate: Annotated[float | None, typer.Option(help="Events/s of the fixed phase")] = None,
    out: Annotated[Path, typer.Option(help="Results folder (ignored by git)")] =
        PROJECT_ROOT / "out" / "bench",
    publish: Annotated[bool, typer.Option(
        help="Append the table to docs/BENCHMARKS.md and copy the charts to docs/img")] = False,
    label: Annotated[str, typer.Option(help="A note shown in the published heading")] = "",
    keep_topics: Annotated[bool, typer.Option(help="Keep the run's topics")] = False,
) -> None:
    """Throughput, latency and freshness of the job and its peers, in one run."""
    from bench.charts import draw_all
    from bench.presets import PRESETS
    from bench.report import append_to_benchmarks, markdown_section
    from stack.local_stack import LocalStack
    from stack.processes import StackError

    if preset not in PRESETS:
        raise typer.BadParameter(f"preset must be one of {sorted(PRESETS)}")
    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        raise typer.BadParameter(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    try:
        overrides = json.loads(override)
        stack_config = load_config(config)
        base = load_config(config, **overrides)
    except (ValueError, FileNotFoundError) as exc:
        _console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from exc
    try:
        # The stack with the unmodified config: overrides are per job, not per cluster.
        LocalStack(stack_config).up(log=_console.print)
    except StackError as exc:
        _console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    result, run_dir = run_bench(base, preset, chosen, out, overrides, label,
                                keep_topics, fixed_rate)
    charts = draw_all(result, run_dir, "bench")
    images = {caption: str(path) for caption, path in charts.items()}
    if publish:
        img_dir = PROJECT_ROOT / "docs" / "img"
        img_dir.mkdir(parents=True, exist_ok=True)
        images = {}
        for caption, path in charts.items():
            target = img_dir / path.name.replace("bench-", f"bench-{result['run_id']}-")
            shutil.copy(path, target)
            images[caption] = f"img/{target.name}"
    section = markdown_section(result, images)
    (run_dir / "section.md").write_text(section)
    if publish:
        append_to_benchmarks(PROJECT_ROOT / "docs" / "BENCHMARKS.md", section)
    print(section)
    _console.print(f"results in {run_dir}")
    failed = [n for n, s in result["systems"].items() if s.get("error")]
    if failed:
        _console.print(f"[red]failed systems:[/red] {', '.join(failed)}")
        raise typer.Exit(1)
