"""The replay's output: a Parquet dataset partitioned by event date, published atomically.

Layout (hive-style partitions, readable by pyarrow, pandas, Spark, DuckDB):

    <out>/event_date=2026-11-23/part-0.parquet
    <out>/_manifest.json          range, cutoff, view definitions, counts

Files are written into ``.<name>.tmp-<pid>`` beside ``<out>`` and renamed into place at
the end, so a reader (or a training run) never sees half a dataset. The manifest starts
with an underscore, which dataset readers skip by default.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from feature_views.model import Aggregation, Feature, FeatureView
from feature_views.rows import DATE_COLUMN, arrow_schema, row_columns, utc_date
from replay.labels import Label

MANIFEST = "_manifest.json"
PARTITIONING = ds.partitioning(pa.schema([(DATE_COLUMN, pa.string())]), flavor="hive")


def build_table(rows: Sequence[tuple[Any, ...]], labels: Mapping[str, Label],
                views: Sequence[FeatureView], metadata: Mapping[str, Any] | None = None
                ) -> pa.Table:
    """Rows (``row_columns`` order) joined with the labels known at the cutoff, sorted by
    event time (then partition and offset, so the order is total and repeatable)."""
    schema = arrow_schema(views, metadata)
    names = row_columns(views)
    columns: dict[str, list[Any]] = {n: [] for n in names}
    if rows:
        for name, values in zip(names, zip(*rows, strict=True), strict=True):
            columns[name] = list(values)
    found = [labels.get(event_id) for event_id in columns["event_id"]]
    columns["label_known"] = [label is not None for label in found]
    columns["is_fraud"] = [None if label is None else label.is_fraud for label in found]
    columns["labeled_at"] = [None if label is None else label.labeled_at for label in found]
    columns[DATE_COLUMN] = [utc_date(t) for t in columns["event_time"]]
    table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema},
                     schema=schema)
    return table.sort_by([("event_time", "ascending"), ("kafka_partition", "ascending"),
                          ("kafka_offset", "ascending")])


def write_dataset(table: pa.Table, out: Path, manifest: Mapping[str, Any], *,
                  overwrite: bool = False) -> list[Path]:
    """Publish ``table`` at ``out`` atomically; returns the Parquet files written."""
    out = out.resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        ds.write_dataset(table, staging, format="parquet", partitioning=PARTITIONING,
                         basename_template="part-{i}.parquet",
                         existing_data_behavior="error")
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        # rename(2) in one directory is atomic: readers see the old dataset or the new.
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(out.rglob("*.parquet"))


def read_table(path: Path, *, filter: pc.Expression | None = None) -> pa.Table:
    """The whole dataset (or the rows matching ``filter``) as one table."""
    dataset = ds.dataset(path, format="parquet", partitioning=PARTITIONING)
    return dataset.to_table(filter=filter)


def read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.exists():
        raise FileNotFoundError(f"{path} has no {MANIFEST}: is it a replay dataset?")
    return dict(json.loads(file.read_text()))


def views_from_manifest(manifest: Mapping[str, Any]) -> tuple[FeatureView, ...]:
    """The feature views the dataset was computed with, rebuilt from their data."""
    return tuple(
        FeatureView(
            name=v["name"],
            entity_key=v["entity_key"],
            version=v["version"],
            description=v.get("description", ""),
            watermark_delay_ms=v.get("watermark_delay_ms", 5_000),
            allowed_lateness_ms=v.get("allowed_lateness_ms", 60_000),
            scope=v.get("scope"),
            features=tuple(Feature(f["name"], Aggregation(f["aggregation"]), f["window_ms"],
                                   field=f["field"], description=f.get("description", ""))
                           for f in v["features"]),
        )
        for v in manifest["views"]
    )
