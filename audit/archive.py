"""The columnar archive: hourly Parquet files, one row per decision, for SQL (DuckDB).

The archive is derived from the point index, not from Kafka: the store keeps an ingest
log (``q|partition|offset`` -> the decision's row, audit/columns.py) of traces not
yet archived, in the same write batch as the trace. A flush turns a contiguous run of one partition's log into one file, written to a
temp name and renamed (atomic on POSIX), named and tagged with its offset range; only
then is that log range dropped. A crash before the rename leaves a temp file (deleted on
start) and the log intact; a crash after it leaves a file whose range says what it holds,
so the start-up reconciliation drops that log range instead of writing it again.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from audit.store import AuditStore, hour_of
from decisioning.trace import STAGES
from feature_views.definitions import FEATURE_NAMES

FILE_RE = re.compile(r"^p(\d{5})-(\d{20})-(\d{20})\.parquet$")
TS = pa.timestamp("ms", tz="UTC")

# Typed columns of audit/columns.py's row_dict; the feature and timing columns come
# from the declarations, so a new feature is a new column without touching this module.
SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()), ("event_id", pa.string()), ("card_id", pa.string()),
        ("customer_id", pa.string()), ("merchant_id", pa.string()),
        ("merchant_category", pa.string()), ("amount", pa.float64()),
        ("currency", pa.string()), ("country", pa.string()), ("channel", pa.string()),
        ("event_time", TS), ("decided_at", TS), ("outcome", pa.string()),
        ("score", pa.float64()), ("path", pa.string()), ("fallback_reason", pa.string()),
        ("model_version", pa.int64()), ("late", pa.bool_()),
        ("reasons", pa.list_(pa.string())), ("rules_fired", pa.list_(pa.string())),
    ]
    + [(name, pa.float64()) for name in FEATURE_NAMES]
    + [(f"at_{stage}", TS) for stage in STAGES]
    + [("total_ms", pa.int64()), ("trace_partition", pa.int32()),
       ("trace_offset", pa.int64()), ("schema_version", pa.int32()),
       ("code_version", pa.string()), ("rules_version", pa.string())]
)


def hour_dir(root: Path, hour_ms: int) -> Path:
    stamp = datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H")
    return root / f"hour={stamp}"


def _hour_from_dir(name: str) -> int | None:
    try:
        stamp = datetime.strptime(name.removeprefix("hour="), "%Y-%m-%dT%H")
    except ValueError:
        return None
    return int(stamp.replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    path: Path
    partition: int
    first_offset: int
    last_offset: int


def archived_files(root: Path) -> list[ArchivedFile]:
    out = []
    for path in root.glob("hour=*/*.parquet"):
        match = FILE_RE.match(path.name)
        if match:
            out.append(ArchivedFile(path, *(int(g) for g in match.groups())))
    return sorted(out, key=lambda f: (f.partition, f.first_offset))


def write_file(root: Path, hour_ms: int, partition: int,
               rows: Sequence[dict[str, Any]]) -> ArchivedFile:
    first, last = rows[0]["trace_offset"], rows[-1]["trace_offset"]
    folder = hour_dir(root, hour_ms)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"p{partition:05d}-{first:020d}-{last:020d}.parquet"
    temp = folder / f".tmp-{final.name}"
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA).replace_schema_metadata({
        "rtd.trace_partition": str(partition), "rtd.first_offset": str(first),
        "rtd.last_offset": str(last), "rtd.rows": str(len(rows)),
    })
    pq.write_table(table, temp, compression="zstd")
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, final)
    return ArchivedFile(final, partition, first, last)


def _runs_by_hour(rows: Iterable[dict[str, Any]]) -> Iterable[tuple[int, list[dict[str, Any]]]]:
    """Contiguous runs of rows of one decided hour: a file never spans two hours."""
    current: int | None = None
    run: list[dict[str, Any]] = []
    for row in rows:
        hour = hour_of(row["decided_at"])
        if run and hour != current:
            yield current, run  # type: ignore[misc]
            run = []
        current = hour
        run.append(row)
    if run:
        yield current, run  # type: ignore[misc]


class ArchiveWriter:
    def __init__(self, store: AuditStore, root: Path, max_rows: int = 200_000) -> None:
        self.store = store
        self.root = root
        self.max_rows = max_rows
        root.mkdir(parents=True, exist_ok=True)

    def recover(self) -> None:
        """After a crash: drop temp files, and the log ranges that files already hold."""
        for temp in self.root.glob("hour=*/.tmp-*"):
            temp.unlink()
        done: dict[int, int] = {}
        for f in archived_files(self.root):
            done[f.partition] = max(done.get(f.partition, -1), f.last_offset)
        for partition, last in done.items():
            self.store.mark_archived(partition, last)

    def flush(self) -> int:
        """Archive every indexed, not yet archived trace. Returns the rows written."""
        written = 0
        for partition in self.store.unarchived_partitions():
            while True:
                pending = self.store.unarchived(partition, self.max_rows)
                if not pending:
                    break
                for hour, run in _runs_by_hour(pending):
                    f = write_file(self.root, hour, partition, run)
                    self.store.mark_archived(partition, f.last_offset)
                    written += len(run)
                if len(pending) < self.max_rows:
                    break
        return written

    def expire_before(self, cutoff_ms: int) -> int:
        """Remove whole hour folders before ``cutoff_ms``'s hour."""
        removed = 0
        for folder in self.root.glob("hour=*"):
            hour = _hour_from_dir(folder.name)
            if hour is not None and hour < hour_of(cutoff_ms):
                shutil.rmtree(folder)
                removed += 1
        return removed


def sql(root: Path, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` with DuckDB; the archive is the view ``decisions``."""
    import duckdb  # tool-only dependency (the `audit` extra), not needed by the job

    if not any(root.glob("hour=*/*.parquet")):
        raise FileNotFoundError(
            f"the archive at {root} has no Parquet file yet: the audit service writes one "
            "every audit.archive_flush_s seconds once it has indexed traces")
    con = duckdb.connect()
    try:
        # DDL takes no bound parameters; the path is ours (config), quoted for SQL.
        files = str(root / "hour=*" / "*.parquet").replace("'", "''")
        con.execute("CREATE VIEW decisions AS SELECT * FROM "
                    f"read_parquet('{files}', hive_partitioning = true)")
        cursor = con.execute(query)
        columns = [d[0] for d in cursor.description or ()]
        return columns, cursor.fetchall()
    finally:
        con.close()


def now_ms() -> int:
    return int(time.time() * 1000)
