"""The benchmark result as a Markdown section for docs/BENCHMARKS.md: pure, no I/O.

Everything rendered here comes from the result JSON, so a section can be re-rendered
from a saved ``result.json`` (``python -m bench.report out/bench/<run>/result.json``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.resources import LOAD_GROUP
from bench.stats import ratio

SECTION_TITLE = "End-to-end benchmark (rtd bench)"
GOALS = {
    "decisions_per_s": 5_000,
    "p99_decision_ms": 50,
    "p99_commit_visible_ms": 1_000,
    "ratio_vs_python": 2.0,
    "ratio_vs_batched": 1.0,
}
# The processes that count as each system's own CPU and memory.
OWN_GROUPS = {
    "ours": ("flink-jobmanager", "flink-taskmanager", "flink-python-workers"),
    "python": ("python",),
    "quix": ("quix",),
    "batched": ("batched",),
}
_GROUP_LABELS = {"machine": "whole machine", LOAD_GROUP: "load average (1 min, 2 cores)",
                 "others": "others (not the stack, the system or the bench)"}
SYSTEM_LABELS = {"ours": "ours (PyFlink job)", "python": "plain Python loop",
                 "quix": "Quix Streams (exactly-once)",
                 "batched": "batched Python service (exactly-once)"}


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _quantiles(summary: Mapping[str, Any] | None) -> str:
    if not summary or not summary.get("count"):
        return "–"
    return " / ".join(_num(summary.get(q)) for q in ("p50", "p95", "p99", "p99_9"))


def own_resources(name: str, resources: Mapping[str, Mapping[str, float]]) -> tuple[float | None,
                                                                                    float | None]:
    """Summed mean CPU (% of a core) and summed peak RSS (MiB) of the system's processes."""
    groups = [resources[g] for g in OWN_GROUPS.get(name, (name,)) if g in resources]
    if not groups:
        return None, None
    return (round(sum(g["cpu_pct_mean"] for g in groups), 1),
            round(sum(g["rss_mib_max"] for g in groups), 1))


def throughput_ratios(systems: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """Our peak decisions/s divided by each system's (2.0: ours does twice as many)."""
    ours = systems.get("ours", {}).get("peak_decisions_per_s")
    return {name: ratio(ours, s.get("peak_decisions_per_s")) for name, s in systems.items()}


def system_rows(systems: Mapping[str, Mapping[str, Any]]) -> list[str]:
    ratios = throughput_ratios(systems)
    rows = [
        ("| system | decisions/s peak (first step behind) | highest rate kept up (ev/s) | "
         "decision latency "
         "p50 / p95 / p99 / p99.9 ms | commit-visible p50 / p95 / p99 / p99.9 ms | feature "
         "freshness p50 / p99 ms | fallback rate | CPU % of a core / RSS MiB (saturated) | "
         "others' CPU % (saturated) | ours ÷ system (decisions/s) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in systems.items():
        label = SYSTEM_LABELS.get(name, name)
        if s.get("error") and "fixed" not in s:
            rows.append(f"| {label} | failed: {s['error'][:80]} | | | | | | | | |")
            continue
        fixed = s.get("fixed", {})
        fresh = fixed.get("feature_freshness_ms") or {}
        saturated = s.get("saturated_decisions_per_s")
        sat_text = (f"{_num(s.get('peak_decisions_per_s'))} ("
                    + ("none fell behind" if s.get("saturated_is_lower_bound")
                       else _num(saturated)) + ")")
        sat_phase = s.get("saturated") or fixed
        cpu, rss = own_resources(name, sat_phase.get("resources", {}))
        others = sat_phase.get("resources", {}).get("others", {}).get("cpu_pct_mean")
        fallback = fixed.get("fallback_rate")
        rows.append(
            f"| {label} | {sat_text} | {_num(s.get('max_sustainable_rate'))} | "
            f"{_quantiles(fixed.get('decision_latency_ms'))} | "
            f"{_quantiles(fixed.get('commit_visible_latency_ms'))} | "
            f"{_num(fresh.get('p50'))} / {_num(fresh.get('p99'))} | "
            f"{'–' if fallback is None else f'{fallback:.1%}'} | "
            f"{_num(cpu)} / {_num(rss)} | {_num(others)} | {_num(ratios.get(name), 2)} |"
        )
    return rows


def flink_rows(ours: Mapping[str, Any]) -> list[str]:
    """Checkpoints and per-operator busy/back-pressure, at the fixed rate and saturated."""
    rows = [("| phase | checkpoints | duration median / max ms | operator: busy / "
             "back-pressured ms per s |"), "|---|---|---|---|"]
    for label, phase in (("fixed rate", ours.get("fixed")), ("saturated", ours.get("saturated"))):
        flink = (phase or {}).get("flink")
        if not flink:
            continue
        cps = flink["checkpoints"]
        ops = "; ".join(
            f"{name[:40]}: {_num(m.get('busyTimeMsPerSecond'))} / "
            f"{_num(m.get('backPressuredTimeMsPerSecond'))}"
            for name, m in flink["operators"].items()
        )
        rows.append(f"| {label} ({_num(phase.get('rate'))}/s) | {cps['completed']} | "
                    f"{_num(cps['duration_ms_median'])} / {_num(cps['duration_ms_max'])} | {ops} |")
    return rows


def resource_rows(systems: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """CPU (% of a core, mean) / RSS (MiB, peak) of every process group while each system
    ran its saturated step."""
    names = [n for n, s in systems.items() if (s.get("saturated") or {}).get("resources")]
    if not names:
        return []
    groups: list[str] = []
    for n in names:
        for g in systems[n]["saturated"]["resources"]:
            if g not in groups:
                groups.append(g)
    rows = ["| process group | " + " | ".join(SYSTEM_LABELS.get(n, n) for n in names) + " |",
            "|---|" + "---|" * len(names)]
    for g in groups:
        cells = []
        for n in names:
            r = systems[n]["saturated"]["resources"].get(g)
            if r is None:
                cells.append("–")
            elif g == LOAD_GROUP:
                cells.append(_num(r["cpu_pct_mean"], 1))
            elif g == "others":
                cells.append(f"{_num(r['cpu_pct_mean'])} %")
            else:
                cells.append(f"{_num(r['cpu_pct_mean'])} % / {_num(r['rss_mib_max'])} MiB")
        label = _GROUP_LABELS.get(g, g)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def goal_rows(systems: Mapping[str, Mapping[str, Any]]) -> list[str]:
    ours = systems.get("ours", {})
    fixed = ours.get("fixed", {})
    p99 = (fixed.get("decision_latency_ms") or {}).get("p99")
    p99c = (fixed.get("commit_visible_latency_ms") or {}).get("p99")
    vs_python = throughput_ratios(systems).get("python")
    vs_batched = throughput_ratios(systems).get("batched")
    checks = [
        ("decisions/s (peak)", f">= {GOALS['decisions_per_s']:,}",
         ours.get("peak_decisions_per_s"), lambda v: v >= GOALS["decisions_per_s"]),
        ("p99 decision latency ms (fixed rate)", f"<= {GOALS['p99_decision_ms']}", p99,
         lambda v: v <= GOALS["p99_decision_ms"]),
        ("p99 commit-visible ms (fixed rate)", f"<= {GOALS['p99_commit_visible_ms']:,}", p99c,
         lambda v: v <= GOALS["p99_commit_visible_ms"]),
        ("throughput ours ÷ plain Python", f">= {GOALS['ratio_vs_python']}", vs_python,
         lambda v: v >= GOALS["ratio_vs_python"]),
        ("throughput ours ÷ batched Python service", f">= {GOALS['ratio_vs_batched']}",
         vs_batched, lambda v: v >= GOALS["ratio_vs_batched"]),
    ]
    rows = ["| goal | target | measured | met |", "|---|---|---|---|"]
    for label, target, value, ok in checks:
        met = "–" if value is None else ("yes" if ok(value) else "**no**")
        digits = 2 if "÷" in label else 0
        rows.append(f"| {label} | {target} | {_num(value, digits)} | {met} |")
    return rows


def markdown_section(result: Mapping[str, Any], images: Mapping[str, str] | None = None) -> str:
    """One dated subsection: command, machine, the table, Flink figures, goals, charts."""
    systems = result["systems"]
    preset = result["preset"]
    lines = [
        f"### {result['date']} · preset `{preset['name']}` · run `{result['run_id']}`"
        + (f" · {result['label']}" if result.get("label") else ""),
        "",
        f"Command: `{result['command']}`  ",
        (f"Machine: {result['machine']}. Shared and noisy: compare the ratios measured within "
         "this run, not absolute figures across runs.  "),
        (f"Fixed rate {_num(preset['fixed_rate'])} events/s for {_num(preset['fixed_s'])} s; "
         f"then steps from {_num(preset['step_start_rate'])}/s ×{preset['step_factor']} of "
         f"{_num(preset['step_s'])} s each until a step falls behind. Latencies are at the fixed "
         "rate, from the event's Kafka append time."),
    ]
    if result.get("overrides"):
        lines.append(f"Config overrides: `{json.dumps(result['overrides'], sort_keys=True)}`")
    lines += ["", *system_rows(systems), ""]
    restarts = systems.get("ours", {}).get("job_restarts")
    if restarts:
        lines += [(f"**Our job restarted {restarts} time(s) during the run: its figures are "
                   "not comparable.**"), ""]
    if "ours" in systems:
        flink = flink_rows(systems["ours"])
        if len(flink) > 2:
            lines += ["Flink (ours):", "", *flink, ""]
        stages = systems["ours"].get("stages", {}).get("stage_ms", {})
        if stages:
            parts = ", ".join(f"{k} {_num(v.get('p50'))}/{_num(v.get('p99'))}"
                              for k, v in stages.items())
            lines += [f"Per-stage ms (p50/p99, from traces, fixed rate): {parts}", ""]
    resources = resource_rows(systems)
    if resources:
        lines += [("CPU (% of one core, mean) and RSS (peak) per process group during each "
                   "system's saturated step:"), "", *resources, ""]
    lines += [*goal_rows(systems), ""]
    for caption, path in (images or {}).items():
        lines.append(f"![{caption}]({path})")
    if images:
        lines.append("")
    return "\n".join(lines) + "\n"


def append_to_benchmarks(doc: Path, section: str) -> None:
    """Add ``section`` at the end of this benchmark's part of the file (before the next
    ``## `` heading, so others' sections stay where they are), creating the file or the
    heading when missing."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    heading = f"## {SECTION_TITLE}"
    if heading not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n"
    at = text.index(heading) + len(heading)
    following = text.find("\n## ", at)
    if following == -1:
        doc.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    before, after = text[:following].rstrip("\n"), text[following:].lstrip("\n")
    doc.write_text(before + "\n\n" + section.rstrip("\n") + "\n\n" + after)


if __name__ == "__main__":
    print(markdown_section(json.loads(Path(sys.argv[1]).read_text())))
