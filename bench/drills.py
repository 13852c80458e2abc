"""Failure drills under steady load: does anything get lost or duplicated, and how long
does the job take to recover?

    rtd drill taskmanager-kill | broker-restart | all  [--rate N] [--kills 5] ...

Each drill runs on its own topics, consumer group and job (bench/fresh_run.py) on the
running local stack. The simulator sends at a steady rate (default 60% of the peak
measured in docs/BENCHMARKS.md) while the drill breaks something. Then the drill audits
all three outputs with read_committed readers: every valid event must have exactly one
decision and one trace, every malformed one exactly one dead letter, and no output
partition may hold an open transaction. The report goes to ``out/drills/<run>/``: JSON,
Markdown and a chart of throughput and latency over the drill. ``--publish`` also puts
it in docs/RELIABILITY.md.

- ``taskmanager-kill``: kill -9 the TaskManager that runs the job, ``--kills`` times,
  ``--interval`` s apart. A replacement is started at once, as a supervisor would, and a
  spare TaskManager stands by (``flink.taskmanagers`` = 2), so the job restarts on free
  slots and does not wait for a new JVM. Recovery time per kill: the last decision
  before the kill to the first decision after it (by the job's ``decided_at``).
- ``broker-restart``: kill -9 the Kafka broker, keep it down ``--down`` s, start it
  again. The job must recover by itself: nothing restarts it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil
from confluent_kafka import TopicPartition

from bench.flink_metrics import FlinkSampler
from bench.stats import latency_summary
from rtd.config import PROJECT_ROOT, RtdConfig
from rtd.job_submission import submit
from rtd.simulator.producer import DeliveryFailedError, run_simulation
from rtd.stack.flink_cluster import FlinkCluster
from rtd.stack.kafka_broker import KafkaBroker
from rtd.stack.processes import pid_alive, wait_until
from rtd.topic_reader import consumer, iter_all

# docs/BENCHMARKS.md, run c4b2be: the most decisions/s the job sustained on this machine.
MEASURED_PEAK_PER_S = 1_100.0
DEFAULT_LOAD_SHARE = 0.6
RECOVERY_GOAL_S = 15.0
RELIABILITY_DOC = PROJECT_ROOT / "docs" / "RELIABILITY.md"


@dataclass(frozen=True)
class DrillSettings:
    rate: float = MEASURED_PEAK_PER_S * DEFAULT_LOAD_SHARE
    kills: int = 5
    interval_s: float = 60.0
    broker_down_s: float = 30.0
    # Load before the first action and after the last one.
    warmup_s: float = 30.0
    tail_s: float = 45.0
    drain_timeout_s: float = 300.0
    seed: int = 31


@dataclass
class Action:
    at_ms: int
    what: str
    detail: str = ""


@dataclass
class DrillResult:
    drill: str
    run: str
    settings: dict[str, Any]
    command: str
    passed: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)


def audit_ids(expected: set[str], received: list[str]) -> dict[str, int]:
    counts = Counter(received)
    return {"expected": len(expected), "received": sum(counts.values()),
            "lost": len(expected - counts.keys()),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "unexpected": len(counts.keys() - expected)}


def recovery_times(decided_ms: list[int], actions_ms: list[int]) -> list[dict[str, float]]:
    """Per action: the gap from the last decision made before it to the first made after
    it, and from the action itself to that first decision (seconds)."""
    ordered = sorted(decided_ms)
    out = []
    for at in actions_ms:
        before = [t for t in ordered if t <= at]
        after = [t for t in ordered if t > at]
        if not after:
            out.append({"gap_s": float("inf"), "since_action_s": float("inf")})
            continue
        first = after[0]
        last = before[-1] if before else at
        out.append({"gap_s": round((first - last) / 1000, 2),
                    "since_action_s": round((first - at) / 1000, 2)})
    return out


def longest_stall(decided_ms: list[int], since_ms: int) -> float | None:
    """The longest gap (s) between consecutive decisions from ``since_ms`` on, counting
    the wait from ``since_ms`` to the first of them."""
    times = [since_ms, *(t for t in sorted(decided_ms) if t > since_ms)]
    if len(times) < 2:
        return None
    return round(max(b - a for a, b in itertools.pairwise(times)) / 1000, 2)


def windows(times_ms: list[int], latencies_ms: list[float], start_ms: int,
            width_s: int = 5) -> list[dict[str, float]]:
    """Decisions/s and latency p50/p99 per ``width_s`` window of decision time."""
    buckets: dict[int, list[float]] = {}
    for t, lat in zip(times_ms, latencies_ms, strict=True):
        buckets.setdefault((t - start_ms) // (width_s * 1000), []).append(lat)
    if not buckets:
        return []
    rows = []
    for i in range(min(buckets), max(buckets) + 1):
        lats = sorted(buckets.get(i, []))
        summary = latency_summary(lats)
        rows.append({"t_s": i * width_s, "per_s": len(lats) / width_s,
                     "p50_ms": summary["p50"], "p99_ms": summary["p99"]})
    return rows


def open_transactions(config: RtdConfig, topics: list[str]) -> dict[str, int]:
    """Records past the last stable offset per output topic: > 0 means a transaction is
    still open there (read_committed readers cannot pass it)."""
    committed = consumer(config, "read_committed")
    uncommitted = consumer(config, "read_uncommitted")
    out = {}
    try:
        for topic in topics:
            meta = committed.list_topics(topic, timeout=10).topics[topic]
            stuck = 0
            for p in meta.partitions:
                tp = TopicPartition(topic, p)
                lso = committed.get_watermark_offsets(tp, timeout=10)[1]
                high = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
                stuck += max(high - lso, 0)
            out[topic] = stuck
    finally:
        committed.close()
        uncommitted.close()
    return out


class SteadyLoad:
    """The simulator at a steady rate in a background thread."""

    def __init__(self, config: RtdConfig, rate: float, duration_s: float, seed: int) -> None:
        self.summary: Any = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(config, rate, duration_s, seed),
                                        name="drill-load", daemon=True)

    def _run(self, config: RtdConfig, rate: float, duration_s: float, seed: int) -> None:
        try:
            self.summary = run_simulation(config, count=None, rate=rate, duration_s=duration_s,
                                          seed=seed, malformed_share=0.01, progress=False)
        except DeliveryFailedError as exc:
            self.summary, self.error = exc.summary, str(exc)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()


def _event_id(value: str | None) -> str | None:
    try:
        doc = json.loads(value or "")
    except ValueError:
        return None
    return doc.get("event_id") if isinstance(doc, dict) else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _tm_pid_running(cluster: FlinkCluster, job_id: str) -> int | None:
    """The pid of the TaskManager that runs the job's tasks (by its RPC port)."""
    ports: set[int] = set()
    for vertex in cluster.rest(f"/jobs/{job_id}")["vertices"]:
        for tm in cluster.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")[
                "taskmanagers"]:
            if tm.get("status") == "RUNNING":
                endpoint = tm.get("endpoint") or tm.get("host", "")
                port = endpoint.rpartition(":")[2]
                tm_id = tm.get("taskmanager-id", "")
                rpc = tm_id.split(":")[1].split("-")[0] if ":" in tm_id else ""
                ports |= {int(x) for x in (port, rpc) if x.isdigit()}
    for pid in cluster._pids("taskexecutor"):
        try:
            listening = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
        if listening & ports:
            return pid
    return None


def _wait_running(cluster: FlinkCluster, job_id: str, timeout_s: float = 180) -> None:
    def all_running() -> bool:
        try:
            detail = cluster.rest(f"/jobs/{job_id}")
        except Exception:  # noqa: BLE001 - the REST API may be busy while it restarts
            return False
        return detail.get("state") == "RUNNING" and all(
            v.get("status") == "RUNNING" for v in detail.get("vertices", []))
    wait_until(all_running, timeout_s, f"job {job_id} running")


def _kill_taskmanagers(config: RtdConfig, cluster: FlinkCluster, job_id: str,
                       settings: DrillSettings, actions: list[Action], log: Callable) -> None:
    time.sleep(settings.warmup_s)
    for n in range(settings.kills):
        _wait_running(cluster, job_id)
        time.sleep(3)  # its tasks have started and a checkpoint or two completed
        pid = _tm_pid_running(cluster, job_id) or max(cluster._pids("taskexecutor"))
        os.kill(pid, signal.SIGKILL)
        actions.append(Action(_now_ms(), "kill -9 taskmanager", f"pid {pid}"))
        log(f"kill {n + 1}/{settings.kills}: TaskManager pid {pid}")
        wait_until(lambda p=pid: not pid_alive(p), 10, "killed TaskManager to exit")
        for file in cluster.pid_dir.glob("flink-*-taskexecutor.pid"):
            alive = [x for x in file.read_text().split() if x.isdigit() and pid_alive(int(x))]
            file.write_text("".join(f"{x}\n" for x in alive))
        cluster._start_taskmanagers()  # the replacement, as a supervisor would start
        if n + 1 < settings.kills:
            time.sleep(max(settings.interval_s - 3, 0))
    time.sleep(settings.tail_s)


def _restart_broker(config: RtdConfig, cluster: FlinkCluster, job_id: str,
                    settings: DrillSettings, actions: list[Action], log: Callable) -> None:
    broker = KafkaBroker(config)
    time.sleep(settings.warmup_s)
    pid = broker.process.pid()
    if pid is None:
        raise RuntimeError("the Kafka broker of the stack is not running")
    os.kill(pid, signal.SIGKILL)
    actions.append(Action(_now_ms(), "kill -9 broker", f"pid {pid}"))
    log(f"broker pid {pid} killed; down for {settings.broker_down_s:g} s")
    wait_until(lambda: not pid_alive(pid), 10, "killed broker to exit")
    time.sleep(settings.broker_down_s)
    broker.start()
    actions.append(Action(_now_ms(), "broker started"))
    log("broker started again")
    time.sleep(settings.tail_s)


DRILLS: dict[str, tuple[Callable[..., None], Callable[[DrillSettings], float]]] = {
    # (action, how long the load must last)
    "taskmanager-kill": (_kill_taskmanagers,
                         lambda s: s.warmup_s + s.kills * s.interval_s + s.tail_s),
    "broker-restart": (_restart_broker,
                       lambda s: s.warmup_s + s.broker_down_s + 30 + s.tail_s),
}
NAMES = tuple(DRILLS)
EXPECTED_ACTIONS: dict[str, Callable[[DrillSettings], int]] = {
    "taskmanager-kill": lambda s: s.kills,
    "broker-restart": lambda s: 2,  # killed, started
}


def run_drill(name: str, config: RtdConfig, run: str, settings: DrillSettings, *,
              command: str, log: Callable[[str], None] = print) -> DrillResult:
    action, load_s = DRILLS[name]
    cluster = FlinkCluster(config)
    KafkaBroker(config).create_topics()
    if name == "taskmanager-kill":
        cluster._start_taskmanagers()  # the spare, up to flink.taskmanagers
        cluster.start()
    job_id = submit(config)
    _wait_running(cluster, job_id)
    topics = config.kafka.topics
    actions: list[Action] = []
    sampler = FlinkSampler(config.flink.rest_url, job_id, interval_s=5.0)
    sampler.start()
    began = _now_ms()
    error = None
    try:
        with SteadyLoad(config, settings.rate, load_s(settings), settings.seed) as load:
            try:
                action(config, cluster, job_id, settings, actions, log)
            except Exception as exc:  # noqa: BLE001 - reported, then the audit still runs
                error = f"{type(exc).__name__}: {exc}"
                log(f"drill action failed: {error}")
        summary = load.summary
        expected = set(summary.valid_event_ids) if summary else set()
        deadline = time.monotonic() + settings.drain_timeout_s
        while time.monotonic() < deadline:
            decided = {json.loads(r.value or "{}").get("event_id")
                       for r in iter_all(config, topics.decisions, timeout_s=600)}
            if expected <= decided:
                break
            time.sleep(5)
        time.sleep(3 * config.flink.checkpoint_interval_ms / 1000 + 2)
        hanging = open_transactions(config, [topics.decisions, topics.traces, topics.dlq])
    finally:
        flink = sampler.stop()
        try:
            job_state = cluster.rest(f"/jobs/{job_id}").get("state")
        except Exception:  # noqa: BLE001
            job_state = "unknown"
        cluster.cancel(job_id)
    return drill_report(name, config, run, settings, command=command, actions=actions,
                        began=began, summary=summary, load_error=load.error, error=error,
                        hanging=hanging, flink=flink, job_state=job_state)


def drill_report(name: str, config: RtdConfig, run: str, settings: DrillSettings, *,
                 command: str, actions: list[Action], began: int, summary: Any,
                 load_error: str | None, error: str | None, hanging: dict[str, int],
                 flink: Any, job_state: str) -> DrillResult:
    """Read all outputs back (read_committed) and judge the drill."""
    topics = config.kafka.topics
    expected = set(summary.valid_event_ids) if summary else set()
    # The transactions topic holds malformed payloads too: only valid events have ids.
    sent_at = {_event_id(r.value): r.timestamp
               for r in iter_all(config, topics.transactions, timeout_s=600)}
    decisions = [(json.loads(r.value or "{}"), r.timestamp)
                 for r in iter_all(config, topics.decisions, timeout_s=600)]
    trace_ids = [json.loads(r.value or "{}").get("event_id")
                 for r in iter_all(config, topics.traces, timeout_s=600)]
    dead = sum(1 for _ in iter_all(config, topics.dlq, timeout_s=600))
    decided_ms = [int(d["decided_at"]) for d, _ in decisions]
    latencies = [ts - sent_at.get(d["event_id"], ts) for d, ts in decisions]
    order = sorted(range(len(decided_ms)), key=decided_ms.__getitem__)
    decided_sorted = [decided_ms[i] for i in order]

    d_audit = audit_ids(expected, [d["event_id"] for d, _ in decisions])
    t_audit = audit_ids(expected, trace_ids)
    malformed = len(summary.malformed) if summary else 0
    kills = [a.at_ms for a in actions if a.what == "kill -9 taskmanager"]
    recovery = recovery_times(decided_sorted, kills)
    gaps = [r["gap_s"] for r in recovery]
    result = DrillResult(
        drill=name, run=run, settings=asdict(settings), command=command,
        actions=[{"t_s": round((a.at_ms - began) / 1000, 1), "what": a.what,
                  "detail": a.detail} for a in actions],
    )
    result.figures = {
        "sent": {"valid": len(expected), "malformed": malformed},
        "load_error": load_error, "drill_error": error,
        "decisions": d_audit, "traces": t_audit,
        "dead_letters": {"expected": malformed, "received": dead},
        "open_transactions": hanging,
        "recovery_s": recovery,
        # The longest time without a decision from the first action to the end.
        "longest_stall_s": longest_stall(decided_sorted,
                                         actions[0].at_ms if actions else began),
        "recovery_gap_s": {"p50": latency_summary(gaps)["p50"] if gaps else None,
                           "max": max(gaps) if gaps else None},
        "restarts": flink.restarts, "job_state_at_end": job_state,
        "latency_ms": latency_summary(latencies),
        "checkpoints": {"completed": sum(c["status"] == "COMPLETED"
                                         for c in flink.checkpoints.values()),
                        "failed": sum(c["status"] == "FAILED"
                                      for c in flink.checkpoints.values())},
    }
    result.series = {"windows": windows(decided_sorted, [latencies[i] for i in order], began)}
    result.checks = {
        "load delivered": load_error is None and summary is not None,
        "drill ran": error is None and len(actions) == EXPECTED_ACTIONS[name](settings),
        "0 lost, 0 duplicated decisions": d_audit["lost"] == d_audit["duplicated"]
        == d_audit["unexpected"] == 0,
        "0 lost, 0 duplicated traces": t_audit["lost"] == t_audit["duplicated"]
        == t_audit["unexpected"] == 0,
        "one dead letter per malformed event": dead == malformed,
        "no open transaction": not any(hanging.values()),
        "job running at the end": job_state == "RUNNING",
    }
    if name == "taskmanager-kill":
        result.checks[f"recovery <= {RECOVERY_GOAL_S:g} s (max gap)"] = bool(gaps) and \
            max(gaps) <= RECOVERY_GOAL_S
    result.passed = all(result.checks.values())
    return result


def chart(result: DrillResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.series["windows"]
    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    axes[0].plot(t, [r["per_s"] for r in rows], label="decisions/s (5 s windows)")
    axes[0].axhline(result.settings["rate"], linestyle=":", color="grey", label="input rate")
    axes[0].set_ylabel("per second")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r["p99_ms"] for r in rows], color="tab:red", label="p99")
    axes[1].plot(t, [r["p50_ms"] for r in rows], color="tab:orange", label="p50")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("event append -> decision append, ms")
    axes[1].set_xlabel("seconds since the drill began (by decision time)")
    for ax in axes:
        for a in result.actions:
            ax.axvline(a["t_s"], color="black", alpha=0.4, linestyle="--")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result.drill} at {result.settings['rate']:.0f} events/s (run {result.run})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


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
        f"{f['open_transactions']}. Job restarts: {f['restarts']}; checkpoints completed "
        f"{f['checkpoints']['completed']}, failed {f['checkpoints']['failed']}. Latency "
        f"(event append to decision append) p50 {f['latency_ms']['p50']} ms, p99 "
        f"{f['latency_ms']['p99']} ms, max {f['latency_ms']['max']} ms. Longest time "
        f"without a decision after the first action: {f['longest_stall_s']} s."),
        "",
    ]
    if f["recovery_s"]:
        lines += [("| kill | at s | last decision before -> first after, s | "
                  "action -> first decision after, s |"), "|---|---|---|---|"]
        kills = [a for a in result.actions if a["what"] == "kill -9 taskmanager"]
        for a, r in zip(kills, f["recovery_s"], strict=True):
            lines.append(f"| {a['what']} ({a['detail']}) | {a['t_s']} | {r['gap_s']} | "
                         f"{r['since_action_s']} |")
        lines += ["", (f"Recovery gap p50 {f['recovery_gap_s']['p50']} s, max "
                  f"{f['recovery_gap_s']['max']} s."), ""]
    if f["load_error"] or f["drill_error"]:
        lines += [f"Errors: load {f['load_error']}; drill {f['drill_error']}.", ""]
    lines += [f"![{result.drill}](img/{chart_name})", ""]
    return "\n".join(lines)


def write_report(result: DrillResult, out: Path, publish: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    name = f"drill-{result.drill}.png"
    (out / f"{result.drill}.json").write_text(json.dumps(asdict(result), indent=1))
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
    if f["recovery_s"]:
        extra = f", recovery gap p50 {f['recovery_gap_s']['p50']} s max {f['recovery_gap_s']['max']} s"
    return (f"{result.drill}: {'PASSED' if result.passed else 'FAILED'}; decisions lost "
            f"{f['decisions']['lost']} dup {f['decisions']['duplicated']}, traces lost "
            f"{f['traces']['lost']} dup {f['traces']['duplicated']}, open transactions "
            f"{sum(f['open_transactions'].values())}{extra}; failed checks: "
            f"{[k for k, ok in result.checks.items() if not ok] or 'none'}")


def as_mapping(result: DrillResult) -> Mapping[str, Any]:
    return asdict(result)
