"""Two or more soak reports side by side: each per-minute series' mean over the same
minutes (``python -m bench.drills.compare out/drills/A/soak.json out/drills/B/soak.json
--from-minute 3``), for A/B runs of a setting. Alternate the runs: this machine is shared,
so only figures of runs close in time compare."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

# The series worth a row when not asked for others, if the reports have them.
DEFAULT_SERIES = ("p99_ms", "p50_ms", "decisions", "checkpoint ms (max)",
                  "cpu flink-taskmanager", "cpu threads: rocksdb",
                  "cpu threads: task Features, scori", "cpu threads: task Source: rtd_tra",
                  "cpu machine", "cpu others", "load average")


def means(report: dict, names: list[str], first: int, last: int | None) -> dict[str, float]:
    per_minute = report["figures"].get("per_minute") or {}
    out = {}
    for name in names:
        values = [v for m, v in per_minute.get(name, [])
                  if m >= first and (last is None or m <= last)]
        if values:
            out[name] = statistics.fmean(values)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--from-minute", type=int, default=0)
    parser.add_argument("--to-minute", type=int, default=None)
    parser.add_argument("--series", nargs="*", default=list(DEFAULT_SERIES))
    args = parser.parse_args(argv)
    reports = [json.loads(p.read_text()) for p in args.reports]
    table = Table(title=f"per-minute means, minutes {args.from_minute}-"
                        f"{'end' if args.to_minute is None else args.to_minute}")
    table.add_column("series")
    for report in reports:
        table.add_column(f"{report['run']}\n{report['settings']['rate']:g}/s", justify="right")
    found = [means(r, args.series, args.from_minute, args.to_minute) for r in reports]
    for name in args.series:
        if any(name in f for f in found):
            table.add_row(name, *(f"{f[name]:,.1f}" if name in f else "-" for f in found))
    Console().print(table)


if __name__ == "__main__":
    main()
