"""Training rows from a replay dataset, and the time-based split.

Inputs are built with ``serving.model_signature.model_inputs``, the very function the
job's scoring operator calls, from the replayed feature values (which verify proved
equal to what serving used). A row serving could not score (e.g. a feature missing) is
skipped and counted, not filled in: a made-up value would train on inputs serving
never sends.

Only rows whose label was known at the replay's cutoff are used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from feature_views.definitions import FEATURE_NAMES
from feature_views.rows import EVENT_COLUMNS
from replay.dataset import read_manifest, read_table
from serving.model_signature import MODEL_INPUT_NAMES, model_inputs


class TrainingDataError(ValueError):
    """The dataset cannot give a meaningful training run; the message says why."""


@dataclass(frozen=True)
class LabelledRows:
    inputs: np.ndarray  # [n, len(MODEL_INPUT_NAMES)] float32, raw values
    labels: np.ndarray  # [n] float32, 1 = fraud
    event_time: np.ndarray  # [n] int64 epoch ms
    events: list[dict[str, Any]]  # the event fields, for the rules baseline
    features: list[dict[str, float]]
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> LabelledRows:
        return LabelledRows(self.inputs[index], self.labels[index], self.event_time[index],
                            [self.events[i] for i in index], [self.features[i] for i in index],
                            self.skipped)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())


def load_labelled(path: Path) -> tuple[LabelledRows, dict[str, Any]]:
    """The labelled, scorable rows of a replay dataset, in event-time order, and its
    manifest."""
    manifest = read_manifest(path)
    table = read_table(path)
    total = table.num_rows
    table = table.filter(pc.field("label_known")).sort_by(
        [("event_time", "ascending"), ("kafka_partition", "ascending"),
         ("kafka_offset", "ascending")])
    skipped: Counter[str] = Counter()
    if total - table.num_rows:
        skipped["no label known at the cutoff"] = total - table.num_rows
    missing = [n for n in FEATURE_NAMES if n not in table.schema.names]
    if missing:
        raise TrainingDataError(
            f"{path} lacks the serving features {missing}: it was replayed with other "
            "feature views than the ones the model serves with")
    event_names = [n for n, _ in EVENT_COLUMNS]
    columns = {n: table.column(n).to_pylist() for n in (*event_names, *FEATURE_NAMES)}
    fraud = table.column("is_fraud").to_pylist()
    inputs, labels, times, events, features = [], [], [], [], []
    for i in range(table.num_rows):
        event = {n: columns[n][i] for n in event_names}
        values = {n: columns[n][i] for n in FEATURE_NAMES}
        try:
            row = model_inputs(event, values)
        except (KeyError, ValueError) as exc:
            skipped[f"not scorable by serving: {exc}"] += 1
            continue
        inputs.append([row[n] for n in MODEL_INPUT_NAMES])
        labels.append(1.0 if fraud[i] else 0.0)
        times.append(event["event_time"])
        events.append(event)
        features.append(values)
    data = LabelledRows(
        inputs=np.asarray(inputs, dtype=np.float32).reshape(-1, len(MODEL_INPUT_NAMES)),
        labels=np.asarray(labels, dtype=np.float32),
        event_time=np.asarray(times, dtype=np.int64),
        events=events, features=features, skipped=skipped)
    return data, manifest


def time_split(data: LabelledRows, holdout_fraction: float) -> tuple[LabelledRows,
                                                                   LabelledRows, int]:
    """Train on the earlier events, hold out the later ones: (train, holdout, cut ms).

    Random splits leak the future into training (a card's burst lands on both sides);
    a cut in event time evaluates the model the way it will be used, on what comes
    next. Rows at the cut's exact millisecond all go to the holdout."""
    if not 0.0 < holdout_fraction < 1.0:
        raise TrainingDataError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
    if len(data) < 2:
        raise TrainingDataError(f"{len(data)} labelled row(s): nothing to split")
    cut = int(data.event_time[int(len(data) * (1.0 - holdout_fraction))])
    train = np.flatnonzero(data.event_time < cut)
    holdout = np.flatnonzero(data.event_time >= cut)
    return data.take(train), data.take(holdout), cut
