"""PNG charts of a benchmark result, drawn from the result JSON alone (matplotlib, Agg).

  latency CDF       both latencies of every system at the fixed rate (log x axis)
  throughput        decisions/s received per second over the run, input rate dashed
  stages            our job's per-stage time from its traces (p50 / p95 / p99)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"ours": "tab:blue", "python": "tab:orange", "quix": "tab:green",
          "batched": "tab:red"}
_DPI = 80  # small files: they are committed under docs/img


def latency_cdf(result: Mapping[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, system in result["systems"].items():
        cdfs = system.get("fixed", {}).get("cdf", {})
        color = COLORS.get(name)
        for key, style, label in (("decision_ms", "-", "decision"),
                                  ("commit_visible_ms", "--", "commit-visible")):
            points = cdfs.get(key) or []
            if points:
                ax.plot([max(v, 0.5) for _, v in points], [p for p, _ in points], style,
                        color=color, label=f"{name}: {label}")
    ax.set_xscale("log")
    ax.set_xlabel("ms from Kafka append time of the event (log scale)")
    ax.set_ylabel("percentile")
    ax.set_ylim(0, 100.5)
    ax.grid(True, which="both", alpha=0.3)
    rate = result["preset"]["fixed_rate"]
    ax.set_title(f"Latency at the fixed rate ({rate:.0f} events/s), read_uncommitted (solid) "
                 "and read_committed (dashed)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def throughput(result: Mapping[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, system in result["systems"].items():
        series = system.get("series")
        if not series:
            continue
        color = COLORS.get(name)
        got = series["decisions_per_s"]
        ax.plot(range(len(got)), got, color=color, label=f"{name}: decisions/s")
        sent = series["input_per_s"]
        ax.plot(range(len(sent)), sent, ":", color=color, alpha=0.7, label=f"{name}: input/s")
    ax.set_xlabel("seconds since the fixed-rate phase began (each system in its own turn)")
    ax.set_ylabel("per second")
    ax.grid(True, alpha=0.3)
    ax.set_title("Decisions received (read_uncommitted) and events appended, per second",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def stages(result: Mapping[str, Any], path: Path) -> bool:
    """False (and no file) when there are no traces to draw from."""
    stage_ms = result["systems"].get("ours", {}).get("stages", {}).get("stage_ms", {})
    names = [k for k in stage_ms if k != "total" and stage_ms[k].get("count")]
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.27
    for i, (q, color) in enumerate((("p50", "tab:blue"), ("p95", "tab:orange"),
                                     ("p99", "tab:red"))):
        ax.bar([x + (i - 1) * width for x in range(len(names))],
               [stage_ms[n][q] for n in names], width, label=q, color=color)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("->", "→\n") for n in names], fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("Our job: time between stages (from the traces' stage_ms, fixed rate)",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return True


def draw_all(result: Mapping[str, Any], folder: Path, prefix: str) -> dict[str, Path]:
    """Every chart into ``folder``; caption -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    cdf_path = folder / f"{prefix}-latency-cdf.png"
    latency_cdf(result, cdf_path)
    out["latency CDF"] = cdf_path
    tput_path = folder / f"{prefix}-throughput.png"
    throughput(result, tput_path)
    out["throughput over time"] = tput_path
    stage_path = folder / f"{prefix}-stages.png"
    if stages(result, stage_path):
        out["per-stage time"] = stage_path
    return out
