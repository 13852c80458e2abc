"""A drill's report: JSON, Markdown and a chart under ``out/drills/<run>/``, and with
``--publish`` its section of docs/RELIABILITY.md."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from bench.drills.judges import CARDS_SEEN
from bench.drills.runner import DrillResult
from rtd_core.config import PROJECT_ROOT

RELIABILITY_DOC = PROJECT_ROOT / "docs" / "RELIABILITY.md"
CPU_LINES = 7


def chart(result: DrillResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.series["windows"]
    memory = result.series.get("memory") or []
    cpu = {name.removeprefix("cpu "): values
           for name, values in (result.figures.get("per_minute") or {}).items()
           if name.startswith("cpu ") and values and max(v for _, v in values) >= 5}
    # A dozen lines and their legend hide each other: the busiest few tell the story,
    # and the JSON report keeps every series.
    cpu = dict(sorted(cpu.items(), key=lambda kv: -statistics.fmean(v for _, v in kv[1]))
               [:CPU_LINES])
    t = [r["t_s"] for r in rows]
    # The soak's per-minute series count from its start, not the drill's.
    soak_began = next((a["t_s"] for a in result.actions if a["what"].startswith("soak begins")),
                      0.0)
    panels = 2 + bool(memory) + bool(cpu)
    fig, axes = plt.subplots(panels, 1, figsize=(10, 2.5 * panels), sharex=True)
    axes[0].plot(t, [r["per_s"] for r in rows], label="decisions/s (5 s windows)")
    axes[0].axhline(result.settings["rate"], linestyle=":", color="grey", label="input rate")
    axes[0].set_ylabel("per second")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r["p99_ms"] for r in rows], color="tab:red", label="p99")
    axes[1].plot(t, [r["p50_ms"] for r in rows], color="tab:orange", label="p50")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("event append ->\ndecision append, ms")
    if memory:
        first = memory[0][0]
        mt = [m[0] - first for m in memory]
        axes[2].plot(mt, [m[1] for m in memory], color="tab:purple", label="TaskManager RSS")
        axes[2].plot(mt, [m[1] - m[2] for m in memory], ":", color="tab:red",
                     label="of which native (not Java heap)")
        axes[2].set_ylabel("MiB")
        axes[2].set_ylim(bottom=0)
        cards = (result.figures.get("per_minute") or {}).get(CARDS_SEEN)
        if cards:
            # Memory against cards seen, not only time: the working sets bound it by config.
            twin = axes[2].twinx()
            twin.plot([soak_began + 60 * (m + 1) for m, _ in cards], [v for _, v in cards],
                      color="tab:green", label="cards seen")
            twin.set_ylabel("cards seen")
            twin.set_ylim(bottom=0)
            twin.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0))
    if cpu:
        # Per-minute means, placed at each minute's middle since the soak began.
        for name, values in sorted(cpu.items()):
            axes[-1].plot([soak_began + 60 * m + 30 for m, _ in values], [v for _, v in values],
                          label=name)
        axes[-1].set_ylabel("CPU, % of a core\n(per-minute mean)")
        axes[-1].set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds since the drill began")
    for ax in axes:
        for a in result.actions:
            ax.axvline(a["t_s"], color="black", alpha=0.4, linestyle="--")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{result.drill} at {result.settings['rate']:.0f} events/s (run {result.run})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _drill_lines(result: DrillResult) -> list[str]:
    f = result.figures
    lines: list[str] = []
    if f.get("recovery_s"):
        lines += [("| kill | at s | last decision before -> first after, s | "
                  "action -> first decision after, s |"), "|---|---|---|---|"]
        kills = [a for a in result.actions if a["what"] == "kill -9 taskmanager"]
        for a, r in zip(kills, f["recovery_s"], strict=True):
            lines.append(f"| {a['what']} ({a['detail']}) | {a['t_s']} | {r['gap_s']} | "
                         f"{r['since_action_s']} |")
        lines += ["", (f"Recovery gap p50 {f['recovery_gap_s']['p50']} s, max "
                  f"{f['recovery_gap_s']['max']} s."), ""]
    if f.get("phases"):
        lines += ["| phase | decisions | path/fallback_reason | p99 received -> decided, ms |",
                  "|---|---|---|---|"]
        for name, p in f["phases"].items():
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["by_path_and_reason"].items()))
            lines.append(f"| {name} | {p['decisions']} | {kinds} | {p['p99_ms']} |")
        lines += ["", (f"Budget {f['budget_ms']:g} ms. First MODEL decision "
                  f"{f['back_to_model_s']} s after the model server was back."), ""]
    if f.get("features"):
        feats = f["features"]
        lines += [(f"Features against the reference (bench/reference_features.py): "
                   f"{feats['judged']} on-time decisions judged ({feats['late_skipped']} late "
                   f"ones not), cards exact {feats['card_exact']}, customers exact "
                   f"{feats['customer_exact']}, within bounds "
                   f"{feats['customer_within_bounds']}, mismatches {feats['mismatches']}. "
                   f"Placement: {f['placements']}."), ""]
    if f.get("hostile"):
        h = f["hostile"]
        top = ", ".join(f"{k} {v}" for k, v in list(h["outcomes"].items())[:12])
        lines += [(f"Hostile payloads: {h['sent']} sent; none lost: {h['lost'] == 0}, none "
                   f"doubled: {h['doubled'] == 0}; corpus cases with another outcome than "
                   f"the contract's: {h['wrong_outcome']}. Outcomes: {top}."), ""]
    if "rss_mib_per_min_second_half" in f:
        def per_min(value: float | None) -> str:
            return "not measured (too few samples)" if value is None else f"{value:.2f} MiB/min"

        cards = (f"; {f['cards_seen']:,} distinct cards decided" if f.get("cards_seen")
                 else "")
        lines += [(f"TaskManager RSS first/last/max {f['rss_mib_first_last_max']} MiB{cards}; growth "
                   f"over the second half {per_min(f['rss_mib_per_min_second_half'])} "
                   f"(native {per_min(f['native_mib_per_min_second_half'])}). p99 received "
                   f"-> decided per 5 min: {f['p99_ms_per_5_min']} ms; from the event's append "
                   f"to its decision's: {f.get('append_p99_ms_per_5_min')} ms."), ""]
        parts = {k: v for k, v in (f.get("parts_per_min_second_half") or {}).items()
                 if v is not None}
        if parts:
            shown = ", ".join(f"{k} {v:+.3g}" for k, v in sorted(parts.items()))
            lines += [("Growth per minute over the second half, by part (RocksDB's in bytes, "
                       "rtd.memory.* in KiB, keys, history entries and Python blocks as "
                       "counts; the working sets' misses and miss time and Python's GC "
                       f"time, cumulative counters, as a rate): {shown}. "
                       "Checkpointed state: "
                       f"{per_min(f.get('checkpoint_state_mib_per_min_second_half'))}."), ""]
        moves = f.get("p99_moves_with") or []
        if moves:
            shown = ", ".join(f"{name} {rho:+.2f}" for name, rho, _ in moves)
            lines += [("What the per-minute p99 moved with (Spearman's rank correlation over "
                       f"{moves[0][2]} minutes, strongest first; the run's JSON report holds "
                       f"every series per minute, bench/drills/coincide.py): {shown}."), ""]
    return lines


def markdown(result: DrillResult, chart_name: str) -> str:
    f = result.figures
    lines = [
        (f"### `{result.drill}`: {'PASSED' if result.passed else 'FAILED'} (run {result.run}, "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"),
        "",
        (f"Command: `{result.command}`. Load: {result.settings['rate']:.0f} events/s, "
         f"{f['sent']['valid']} valid and {f['sent']['malformed']} malformed events sent."),
        "",
        "| check | held |", "|---|---|",
        *(f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in result.checks.items()),
        "",
        "| output | expected | received | lost | duplicated | unexpected |",
        "|---|---|---|---|---|---|",
        *(f"| {k} | {f[k]['expected']} | {f[k]['received']} | {f[k]['lost']} | "
          f"{f[k]['duplicated']} | {f[k]['unexpected']} |" for k in ("decisions", "traces")),
        (f"| dead letters | {f['dead_letters']['expected']} | {f['dead_letters']['received']} "
         "| | | |"),
        "",
        (f"Open transactions after the drain (records past the last stable offset): "
         f"{sum(f['open_transactions'].values())} over {len(f['open_transactions'])} topics. "
         f"Job restarts: {f['restarts']}; checkpoints completed "
         f"{f['checkpoints']['completed']}, failed {f['checkpoints']['failed']}. Latency "
         f"(event append to decision append) p50 {f['latency_ms']['p50']} ms, p99 "
         f"{f['latency_ms']['p99']} ms, max {f['latency_ms']['max']} ms. Longest time "
         f"without a decision after the first action: {f['longest_stall_s']} s."),
        "",
        *_drill_lines(result),
    ]
    if f["load_error"] or f["drill_error"]:
        lines += [f"Errors: load {f['load_error']}; drill {f['drill_error']}.", ""]
    lines += [f"![{result.drill}](img/{chart_name})", ""]
    return "\n".join(lines)


def write_report(result: DrillResult, out: Path, publish: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    name = f"drill-{result.drill}.png"
    (out / f"{result.drill}.json").write_text(json.dumps(asdict(result), indent=1, default=str))
    chart(result, out / name)
    text = markdown(result, name)
    (out / f"{result.drill}.md").write_text(text.replace("](img/", "]("))
    if publish:
        shutil.copy(out / name, PROJECT_ROOT / "docs" / "img" / name)
        publish_section(RELIABILITY_DOC, result.drill, text)
    return out


def publish_section(doc: Path, drill: str, text: str) -> None:
    """Replace the drill's section of ``doc`` (between its markers), or append one."""
    begin, end = f"<!-- drill:{drill} -->", f"<!-- /drill:{drill} -->"
    current = doc.read_text() if doc.exists() else "# Reliability drills\n\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(current)


def summary_line(result: DrillResult) -> str:
    f = result.figures
    extra = ""
    if f.get("recovery_s"):
        extra = (f", recovery gap p50 {f['recovery_gap_s']['p50']} s max "
                 f"{f['recovery_gap_s']['max']} s")
    return (f"{result.drill}: {'PASSED' if result.passed else 'FAILED'}; decisions lost "
            f"{f['decisions']['lost']} dup {f['decisions']['duplicated']}, traces lost "
            f"{f['traces']['lost']} dup {f['traces']['duplicated']}, open transactions "
            f"{sum(f['open_transactions'].values())}{extra}; failed checks: "
            f"{[k for k, ok in result.checks.items() if not ok] or 'none'}")
