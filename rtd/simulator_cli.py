"""`rtd simulate`: write simulated transactions and labels to the local stack."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rtd_core.config import load_config
from simulator.producer import (
    DeliveryFailedError,
    SimulationSummary,
    SimulatorError,
    run_simulation,
)

_err = Console(stderr=True)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_start_time(text: str) -> int:
    """Epoch milliseconds from digits, or from an RFC 3339 timestamp with an offset."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither epoch milliseconds nor RFC 3339 (e.g. 2024-05-01T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        # A naive time would silently depend on the machine's time zone.
        raise typer.BadParameter(f"{text!r} has no time zone: add Z or an offset like +02:00")
    # Integer arithmetic: timestamp() * 1000 is a float and can lose the last millisecond.
    delta = parsed - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1_000 + delta.microseconds // 1_000


def summary_table(summary: SimulationSummary) -> Table:
    title = "simulation interrupted (Ctrl-C)" if summary.interrupted else "simulation done"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    valid = len(summary.valid_event_ids)
    table.add_row("transactions sent", f"{summary.events_sent:,}")
    table.add_row("  valid", f"{valid:,}")
    share = summary.fraud_count / valid if valid else 0.0
    table.add_row("  fraud (ground truth)", f"{summary.fraud_count:,} ({share:.2%})")
    table.add_row("  malformed", f"{len(summary.malformed):,}")
    reasons: dict[str, int] = {}
    for reason, _ in summary.malformed:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in sorted(reasons.items()):
        table.add_row(f"    {reason}", f"{n:,}")
    table.add_row("labels sent", f"{summary.labels_sent:,}")
    table.add_row("duration", f"{summary.duration_s:,.1f} s")
    table.add_row("throughput", f"{summary.events_per_s:,.0f} events/s")
    return table


def simulate(
    count: Annotated[
        int | None,
        typer.Option("--count", min=0, help="Transactions to send (labels come on top)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.001, help="Events per second; omit for as fast as possible."),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", min=0.001, help="Seconds to run. Omit with --count to run until Ctrl-C."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Same seed and start time, same events.")
    ] = 42,
    malformed_share: Annotated[
        float,
        typer.Option("--malformed-share", min=0.0, max=1.0, help="Share of malformed payloads."),
    ] = 0.01,
    late_share: Annotated[
        float, typer.Option("--late-share", min=0.0, max=1.0, help="Share 2-10 minutes late.")
    ] = 0.005,
    out_of_order_share: Annotated[
        float,
        typer.Option(
            "--out-of-order-share", min=0.0, max=1.0, help="Share a few seconds out of order."
        ),
    ] = 0.05,
    label_delay_ms: Annotated[
        int,
        typer.Option("--label-delay-ms", min=0, help="Simulated delay from event to its label."),
    ] = 30_000,
    customers: Annotated[
        int | None,
        typer.Option("--customers", min=1, help="Customers in the simulated population "
                     "(default 200,000, about 350,000 cards); more makes more cards new."),
    ] = None,
    start_time: Annotated[
        str | None,
        typer.Option("--start-time", help="Simulated start: epoch ms or RFC 3339. Default: now."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="JSON config file (default: $RTD_CONFIG or built-in)."),
    ] = None,
) -> None:
    """Send simulated card transactions (with fraud episodes, late and malformed events)
    and their delayed fraud labels to Kafka."""
    start_ms = parse_start_time(start_time) if start_time is not None else None
    try:
        cfg = load_config(config)
    except FileNotFoundError as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    try:
        summary = run_simulation(
            cfg,
            count=count,
            rate=rate,
            seed=seed,
            start_time_ms=start_ms,
            malformed_share=malformed_share,
            out_of_order_share=out_of_order_share,
            late_share=late_share,
            label_delay_ms=label_delay_ms,
            duration_s=duration,
            customers=customers,
        )
    except DeliveryFailedError as exc:
        Console().print(summary_table(exc.summary))
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    except SimulatorError as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    except ValueError as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    Console().print(summary_table(summary))
