"""The model's input contract, shared by training, the model server and the job.

Every input is a float32 tensor of shape [batch] named after a feature (or a field of
the event); the ``serving_default`` signature returns ``{"score": float32 [batch]}``
with scores in [0, 1]. Inputs are raw values: normalisation lives inside the model, so
the job never needs the training set's statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feature_views.definitions import FEATURE_NAMES

CHANNELS: tuple[str, ...] = ("pos", "ecom", "atm")
CHANNEL_INPUTS: tuple[str, ...] = tuple(f"channel_{c}" for c in CHANNELS)
MODEL_INPUT_NAMES: tuple[str, ...] = FEATURE_NAMES + ("amount",) + CHANNEL_INPUTS
SCORE_OUTPUT = "score"
SIGNATURE_NAME = "serving_default"


def model_inputs(event: Mapping[str, Any], features: Mapping[str, float]) -> dict[str, float]:
    """One row of model inputs from a validated event and its feature values.

    Raises ``KeyError`` naming the missing feature: a silently zero-filled feature
    would score a different model than the one trained (training/serving skew).
    """
    row: dict[str, float] = {}
    for name in FEATURE_NAMES:
        if name not in features:
            raise KeyError(f"feature {name!r} missing from the feature values")
        row[name] = float(features[name])
    row["amount"] = float(event["amount"])
    # Absent is a value of its own (contract: optional fields have a defined encoding):
    # all channel inputs 0.0, which no present channel produces.
    channel = event.get("channel")
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}, expected one of {CHANNELS}")
    for c, input_name in zip(CHANNELS, CHANNEL_INPUTS, strict=True):
        row[input_name] = 1.0 if channel == c else 0.0
    return row
