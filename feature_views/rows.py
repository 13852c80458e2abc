"""The replayed training row: one per valid event, flat, in a fixed column order.

The Flink replay job turns each feature record (the dict the live operators pass on)
into a plain tuple with ``row_values``; the client adds the point-in-time label and
writes Parquet with ``arrow_schema``. Column names come from the feature views, so a
feature added by declaration shows up here without a code change.

Why a tuple and not the job's record: the record carries the raw payload, timings and
nested dicts the row does not need; a tuple of scalars pickles to a fraction of the
bytes that cross from the Flink job back to the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from feature_views.model import FeatureView

# Event fields kept as columns (the contract's transaction event; event_time in ms).
EVENT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("event_id", pa.string()),
    ("event_time", pa.int64()),
    ("card_id", pa.string()),
    ("customer_id", pa.string()),
    ("merchant_id", pa.string()),
    ("merchant_category", pa.string()),
    ("amount", pa.float64()),
    ("currency", pa.string()),
    ("country", pa.string()),
    ("channel", pa.string()),
)
SOURCE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("late", pa.bool_()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_timestamp", pa.int64()),
)
# Added by the client's point-in-time join (replay/labels.py).
LABEL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("label_known", pa.bool_()),
    ("is_fraud", pa.bool_()),
    ("labeled_at", pa.int64()),
)
DATE_COLUMN = "event_date"
AS_OF_SUFFIX = "_as_of"
WATERMARK_SUFFIX = "_watermark"
METADATA_KEY = b"replay"


def feature_columns(views: Sequence[FeatureView]) -> list[str]:
    return [f.name for view in views for f in view.features]


def as_of_columns(views: Sequence[FeatureView]) -> list[str]:
    return [f.name + AS_OF_SUFFIX for view in views for f in view.features]


def watermark_columns(views: Sequence[FeatureView]) -> list[str]:
    return [view.name + WATERMARK_SUFFIX for view in views]


def row_columns(views: Sequence[FeatureView]) -> list[str]:
    """The order of the tuple ``row_values`` returns."""
    return ([n for n, _ in EVENT_COLUMNS] + [n for n, _ in SOURCE_COLUMNS]
            + feature_columns(views) + as_of_columns(views) + watermark_columns(views))


def row_values(event: Mapping[str, Any], source: Mapping[str, Any],
               features: Mapping[str, float], as_of: Mapping[str, Mapping[str, Any]],
               late: bool, views: Sequence[FeatureView]) -> tuple[Any, ...]:
    """One replayed event as a tuple in ``row_columns`` order.

    Each feature is paired with the event time its view computed it as of, so a reader
    can check point-in-time correctness per feature without trusting the job.
    """
    values: list[Any] = [event.get(name) for name, _ in EVENT_COLUMNS]
    values += [bool(late), source["partition"], source["offset"],
               source.get("kafka_timestamp")]
    values += [float(features[name]) for name in feature_columns(views)]
    for view in views:
        at = as_of.get(view.name, {}).get("as_of_event_time")
        values += [at] * len(view.features)
    values += [as_of.get(view.name, {}).get("watermark") for view in views]
    return tuple(values)


def arrow_schema(views: Sequence[FeatureView],
                 metadata: Mapping[str, Any] | None = None) -> pa.Schema:
    """Row columns, label columns and the date partition column.

    ``metadata`` (the replay manifest: range, cutoff, view definitions) is stored in the
    Parquet footer under ``replay`` so a file explains itself."""
    fields = [pa.field(n, t) for n, t in EVENT_COLUMNS + SOURCE_COLUMNS]
    fields += [pa.field(n, pa.float64()) for n in feature_columns(views)]
    fields += [pa.field(n, pa.int64()) for n in as_of_columns(views)]
    fields += [pa.field(n, pa.int64()) for n in watermark_columns(views)]
    fields += [pa.field(n, t) for n, t in LABEL_COLUMNS]
    fields.append(pa.field(DATE_COLUMN, pa.string()))
    meta = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()} if metadata else None
    return pa.schema(fields, metadata=meta)


def utc_date(epoch_ms: int) -> str:
    """The partition value: the event's UTC calendar date."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def view_definitions(views: Sequence[FeatureView]) -> list[dict[str, Any]]:
    """The views as data, for the manifest and verify's definition check."""
    return [
        {
            "name": v.name,
            "version": v.version,
            "entity_key": v.entity_key,
            "description": v.description,
            "watermark_delay_ms": v.watermark_delay_ms,
            "allowed_lateness_ms": v.allowed_lateness_ms,
            "scope": v.scope,
            "features": [
                {"name": f.name, "aggregation": f.aggregation.value, "window_ms": f.window_ms,
                 "field": f.field, "description": f.description}
                for f in v.features
            ],
        }
        for v in views
    ]
