"""`rtd replay`: rebuild point-in-time training features from `transactions` history,
and (`--verify`) prove them equal to what serving recorded in `decision-traces`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from replay.offsets import ReplayRange, parse_offsets
from replay.verify import DIFFERING, LATE, ORDER_DEPENDENT, VerifyReport
from rtd.cli_config import config_or_exit
from rtd.simulator_cli import parse_start_time

if TYPE_CHECKING:
    from replay.runner import ReplaySummary

_err = Console(stderr=True)
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``30d``, ``2h``, ``90m``, ``45s``, ``500ms``; bare digits are milliseconds."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise typer.BadParameter(f"{text!r}: expected a duration like 30d, 2h, 90m, 45s or 0")
    return int(match.group(1)) * _UNITS_MS[match.group(2) or "ms"]


def summary_table(summary: ReplaySummary) -> Table:
    table = Table(title="replay done", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    r = summary.resolved
    table.add_row("records in range", f"{r.records_in_range:,}")
    table.add_row("  warm-up records read before it", f"{r.warmup_records:,}")
    table.add_row("rows (valid events)", f"{summary.rows:,}")
    table.add_row("  late", f"{summary.late:,}")
    table.add_row("  with a label known at the cutoff", f"{summary.labelled:,}")
    table.add_row("    fraud", f"{summary.fraud:,}")
    table.add_row("  no label yet", f"{summary.rows - summary.labelled:,}")
    table.add_row("dead letters (skipped)", f"{sum(summary.dead_letters.values()):,}")
    s = summary.label_stats
    table.add_row("label records read", f"{s.read:,} ({s.after_cutoff:,} after the cutoff, "
                  f"{s.superseded:,} superseded, {s.malformed:,} malformed)")
    for date, n in summary.dates.items():
        table.add_row(f"  event_date={date}", f"{n:,} rows")
    table.add_row("job time (start-up included)", f"{summary.job_s:,.1f} s")
    table.add_row("replay throughput", f"{summary.events_per_s:,.0f} events/s")
    table.add_row("whole command", f"{summary.total_s:,.1f} s")
    table.add_row("dataset", f"{summary.out} ({summary.files} Parquet file(s))")
    return table


def print_verify(console: Console, report: VerifyReport, strict: bool, limit: int = 10) -> None:
    table = Table(title="verify: replay vs live traces", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("events", justify="right")
    table.add_row("compared", f"{report.compared:,}")
    table.add_row("[green]identical[/green]", f"{report.identical:,}")
    table.add_row("  of which the late flag differs (not a feature)",
                  f"{report.late_flag_differs:,}")
    table.add_row("[red]differing (skew)[/red]", f"{len(report.of(DIFFERING)):,}")
    table.add_row("order-dependent (customer interleaving)", f"{len(report.of(ORDER_DEPENDENT)):,}")
    table.add_row("late (state found depends on watermark)", f"{len(report.of(LATE)):,}")
    table.add_row("no committed live trace (not compared)", f"{report.no_live_trace:,}")
    if report.compared:
        table.add_row("identical share", f"{report.identical / report.compared:.4%}")
    console.print(table)
    for line in report.definition_mismatches:
        console.print(f"[red]definition differs[/red] {line}")
    for category in (DIFFERING, ORDER_DEPENDENT, LATE):
        diffs = report.of(category)
        if not diffs:
            continue
        detail = Table("event_id", "feature", "live", "replay", "bounds",
                       title=f"{category}: {diffs[0].cause}", title_justify="left")
        for d in diffs[:limit]:
            for f in d.features:
                bounds = "" if f.bounds is None else f"{f.bounds[0]} .. {f.bounds[1]}"
                detail.add_row(d.event_id, f.name, str(f.live), str(f.replay), bounds)
        console.print(detail)
        if len(diffs) > limit:
            console.print(f"... and {len(diffs) - limit:,} more {category} events")
    if report.compared == 0:
        console.print("[red]verify compared 0 events[/red]: no replayed event has a committed "
                      "live trace. Replay a range the live job has decided (see --help for the "
                      "range options), and check that `decision-traces` is the live job's.")
    verdict = "[green]OK[/green]" if report.ok(strict) else "[red]FAILED[/red]"
    console.print(f"verify {verdict} (strict={strict})")




def replay(
    config: Annotated[Path | None, typer.Option("--config", help="JSON config file")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Dataset folder (default: <stack_dir>/datasets/replay-<time>)")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Rows for records appended at/after this (epoch ms or RFC 3339)")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Stop before records appended at this time")] = None,
    from_offsets: Annotated[str | None, typer.Option(
        "--from-offsets", help="Rows from these offsets on, e.g. 0:1200,1:980")] = None,
    to_offsets: Annotated[str | None, typer.Option(
        "--to-offsets", help="Stop before these offsets, e.g. 0:5000,1:4800")] = None,
    warmup: Annotated[str | None, typer.Option(
        "--warmup", help="History read before --since to fill the windows (default: the "
        "longest feature window plus lateness)")] = None,
    cutoff: Annotated[str | None, typer.Option(
        "--cutoff", help="Labels known at this time (labeled_at <= cutoff); default now")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Compare the features with the live decision traces")] = False,
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="With --verify: verify this existing dataset, do not replay")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Verify fails on order-dependent and late differences too")] = False,
    engine: Annotated[str, typer.Option(
        "--engine", help="local: one loop over the live job's feature code, no Flink (the "
        "fastest on one machine); flink: the bounded Flink job (--parallelism, "
        "--execution-mode); both compute the same rows")] = "local",
    parallelism: Annotated[int, typer.Option(
        "--parallelism", min=1, help="With --engine flink")] = 1,
    execution_mode: Annotated[str, typer.Option(
        "--execution-mode", help="PyFlink mode: process (faster on a quiet machine) or "
        "thread (the live job's default); both compute the same values")] = "process",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 2_000,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Also write the summary (and verify report) as JSON to this file "
        "(a file, not stdout: the JVM may log to stdout)")] = None,
) -> None:
    """Replay `transactions` through the live job's own validation and feature code
    (one local loop, or the bounded Flink job with --engine flink) into a Parquet
    training set, one row per event with every feature, its as-of time and the label
    known at the cutoff."""
    # Imported here: the runner brings pyarrow.dataset and pandas, about a second of
    # start-up that every other `rtd` command would otherwise pay.
    from replay.runner import ReplaySettings, run_replay, verify_dataset

    cfg = config_or_exit(config)
    console = Console(stderr=True)
    if dataset is not None and not verify:
        raise typer.BadParameter("--dataset only goes with --verify")
    result: dict[str, object] = {}
    if dataset is None:
        request = ReplayRange(
            since_ms=parse_start_time(since) if since else None,
            until_ms=parse_start_time(until) if until else None,
            from_offsets=_offsets(from_offsets), to_offsets=_offsets(to_offsets),
            warmup_ms=parse_duration_ms(warmup) if warmup is not None else None,
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dataset = out or cfg.stack_path / "datasets" / f"replay-{stamp}"
        settings = ReplaySettings(
            out=dataset, request=request,
            cutoff_ms=parse_start_time(cutoff) if cutoff else None,
            parallelism=parallelism, batch_size=batch_size, overwrite=overwrite,
            execution_mode=execution_mode, engine=engine,
            progress=progress)
        try:
            summary = run_replay(cfg, settings, console)
        except (FileExistsError, ValueError) as exc:
            _err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        result["replay"] = summary.to_json()
        console.print(summary_table(summary))
    if verify:
        report = verify_dataset(cfg, dataset)
        result["verify"] = report.to_json()
        print_verify(console, report, strict)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))
    if verify and not report.ok(strict):
        raise typer.Exit(1)


def _offsets(text: str | None) -> dict[int, int]:
    if not text:
        return {}
    try:
        return parse_offsets(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
