"""`rtd replay` end to end: resolve the range, read the labels known at the cutoff,
compute the rows, join, write the dataset, summarise.

Two engines compute the rows from the same feature core. ``local`` (the default): one
loop in this process over one Kafka consumer (replay/local_engine.py). ``flink``:
the bounded Flink job in this process's own local mini cluster (PyFlink's default
environment), not on the stack's session cluster: a replay is a one-off batch of work
that should not take the live job's task slots, and its rows come straight back to this
process, which writes them with pyarrow.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from feature_views.definitions import CARD_FEATURES, CUSTOMER_FEATURES
from feature_views.model import FeatureView
from feature_views.rows import view_definitions
from replay.dataset import (
    build_table,
    read_manifest,
    read_table,
    views_from_manifest,
    write_dataset,
)
from replay.labels import LabelStats, read_labels
from replay.local_engine import run_local
from replay.offsets import ReplayRange, ResolvedRange, resolve_range
from replay.verify import VerifyReport, compare, parse_traces
from rtd_core.config import RtdConfig
from rtd_core.topic_reader import iter_all

MANIFEST_VERSION = 1
ENGINES = ("local", "flink")


@dataclass(frozen=True)
class ReplaySettings:
    out: Path
    request: ReplayRange = field(default_factory=ReplayRange)
    cutoff_ms: int | None = None  # None: now
    views: tuple[FeatureView, FeatureView] = (CARD_FEATURES, CUSTOMER_FEATURES)
    parallelism: int = 1
    batch_size: int = 2_000
    bundle_size: int = 10_000
    bundle_time_ms: int = 1_000
    # Both modes compute the same values (verified). process: its Python worker runs
    # beside the mini cluster's JVM, on the second core; on a quiet machine it replayed
    # 16% faster than thread mode (docs/BENCHMARKS.md, "Replay", 2026-12-01).
    execution_mode: str = "process"
    # local: no Flink, one core (docs/BENCHMARKS.md, "Replay"); flink: the bounded job,
    # for parallelism beyond one process.
    engine: str = "local"
    overwrite: bool = False
    progress: bool = True


@dataclass
class ReplaySummary:
    out: Path
    resolved: ResolvedRange
    cutoff_ms: int
    engine: str = "local"
    rows: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    late: int = 0
    labelled: int = 0
    fraud: int = 0
    label_stats: LabelStats = field(default_factory=LabelStats)
    dates: dict[str, int] = field(default_factory=dict)
    files: int = 0
    job_s: float = 0.0  # engine start (job submission) to its last row, start-up included
    steady_s: float = 0.0  # first to last collected batch
    # The local engine's CPU seconds (this process, its consumer threads included): the
    # figure a loaded machine does not distort. None for Flink (its JVM's CPU is not ours).
    engine_cpu_s: float | None = None
    total_s: float = 0.0  # the whole command, labels and writing included

    @property
    def records_read(self) -> int:
        return self.resolved.records_in_range + self.resolved.warmup_records

    @property
    def events_per_s(self) -> float:
        """Records the job read (warm-up included) per second of job time."""
        return self.records_read / self.job_s if self.job_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "range": self.resolved.to_json(), "cutoff_ms": self.cutoff_ms,
            "records_in_range": self.resolved.records_in_range,
            "warmup_records": self.resolved.warmup_records, "rows": self.rows,
            "dead_letters": dict(self.dead_letters), "late": self.late,
            "labelled": self.labelled, "fraud": self.fraud, "unlabelled": self.rows - self.labelled,
            "dates": self.dates, "job_s": round(self.job_s, 2), "engine": self.engine,
            "steady_s": round(self.steady_s, 2), "total_s": round(self.total_s, 2),
            "engine_cpu_s": None if self.engine_cpu_s is None else round(self.engine_cpu_s, 2),
            "events_per_s": round(self.events_per_s, 1),
        }


def _progress(enabled: bool, console: Console) -> Progress:
    return Progress(
        TextColumn("[bold blue]replaying"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8,.0f} rec/s"),
        TextColumn("rows {task.fields[rows]:,}  dead letters {task.fields[dead]:,}"),
        TimeElapsedColumn(), console=console, disable=not enabled, refresh_per_second=4,
    )


def collect_rows(config: RtdConfig, settings: ReplaySettings, resolved: ResolvedRange,
                 on_batch: Callable[[int, int], None]) -> tuple[list[tuple[Any, ...]],
                                                                Counter[str], float, float]:
    """Run the bounded job and collect its rows: (rows, dead letter reasons, job seconds,
    first-to-last-batch seconds)."""
    # Imported here: pyflink starts a JVM gateway on first use.
    from flink_jobs.replay_job import (
        DEAD,
        build_replay,
        create_replay_environment,
        kafka_replay_source,
    )

    # The feature operators' partition gate waits for a record of each partition read.
    kafka = config.kafka.model_copy(
        update={"partitions": max(1, resolved.partitions_with_records)})
    config = config.model_copy(update={"kafka": kafka})
    _env, t_env = create_replay_environment(
        config, parallelism=settings.parallelism, bundle_size=settings.bundle_size,
        bundle_time_ms=settings.bundle_time_ms, connector_jars=config.connector_jar_uris(),
        execution_mode=settings.execution_mode)
    raw = kafka_replay_source(t_env, config, resolved.source_options(),
                              group_id=f"rtd-replay-{uuid.uuid4().hex[:8]}",
                              customer_field=settings.views[1].entity_key)
    batches = build_replay(raw, config, settings.views, resolved.rows_from, settings.batch_size)
    rows: list[tuple[Any, ...]] = []
    dead: Counter[str] = Counter()
    started = time.perf_counter()
    first: float | None = None
    with batches.execute_and_collect(f"{config.job.name}-replay") as results:
        for batch in results:
            first = first or time.perf_counter()
            for tag, item in batch:
                if tag == DEAD:
                    dead[item] += 1
                else:
                    rows.append(item)
            on_batch(len(rows), sum(dead.values()))
    ended = time.perf_counter()
    return rows, dead, ended - started, ended - (first or ended)


def run_replay(config: RtdConfig, settings: ReplaySettings,
               console: Console | None = None) -> ReplaySummary:
    console = console or Console(stderr=True)
    began = time.perf_counter()
    views = settings.views
    resolved = resolve_range(config, settings.request, views)
    cutoff = settings.cutoff_ms if settings.cutoff_ms is not None else int(time.time() * 1000)
    if settings.engine not in ENGINES:
        raise ValueError(f"replay engine {settings.engine!r} not in {ENGINES}")
    summary = ReplaySummary(out=settings.out, resolved=resolved, cutoff_ms=cutoff,
                            engine=settings.engine)
    console.print(f"replaying {resolved.records_in_range:,} records of {resolved.topic} "
                  f"(+{resolved.warmup_records:,} warm-up), labels known at {cutoff}")
    labels, summary.label_stats = read_labels(config, cutoff)

    with _progress(settings.progress, console) as bar:
        task = bar.add_task("replay", total=resolved.records_in_range, rate=0.0, rows=0, dead=0)
        t0 = time.perf_counter()

        def on_batch(rows: int, dead: int) -> None:
            rate = (rows + dead) / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=rows + dead, rows=rows, dead=dead, rate=rate)

        if settings.engine == "local":
            rows, summary.dead_letters, summary.job_s, summary.steady_s, \
                summary.engine_cpu_s = run_local(config, views, resolved, on_batch)
        else:
            rows, summary.dead_letters, summary.job_s, summary.steady_s = collect_rows(
                config, settings, resolved, on_batch)

    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created_at": int(time.time() * 1000),
        "range": resolved.to_json(),
        "cutoff_ms": cutoff,
        "views": view_definitions(views),
        "engine": settings.engine,
        "job": {"name": config.job.name, "code_version": config.job.code_version,
                "state_shards": config.job.state_shards,
                "watermark_delay_ms": config.job.watermark_delay_ms,
                "allowed_lateness_ms": config.job.allowed_lateness_ms},
    }
    table = build_table(rows, labels, views, metadata=manifest)
    summary.rows = table.num_rows
    summary.late = int(sum(table.column("late").to_pylist()))
    summary.labelled = int(sum(table.column("label_known").to_pylist()))
    summary.fraud = sum(1 for v in table.column("is_fraud").to_pylist() if v)
    summary.dates = dict(sorted(Counter(table.column("event_date").to_pylist()).items()))
    manifest["summary"] = {"rows": summary.rows, "dead_letters": dict(summary.dead_letters),
                           "labelled": summary.labelled, "fraud": summary.fraud}
    summary.files = len(write_dataset(table, settings.out, manifest,
                                      overwrite=settings.overwrite))
    summary.total_s = time.perf_counter() - began
    return summary


def verify_dataset(config: RtdConfig, path: Path) -> VerifyReport:
    """Compare a replay dataset with the live traces in `decision-traces`."""
    manifest = read_manifest(path)
    views = views_from_manifest(manifest)
    table = read_table(path)
    records = iter_all(config, config.kafka.topics.traces, timeout_s=600.0)
    traces = parse_traces(r.value for r in records)
    return compare(table.to_pylist(), traces, views)
