"""What the model stage writes into a record, whichever scorer ran: the request the
trace shows, then the live prediction or the reason there is none."""

from __future__ import annotations

from typing import Any

from decisioning.decision import ModelResult
from operators.clock import now_ms
from operators.records import JobRecord
from rtd_core.config import ServingConfig
from serving.predict_calls import Prediction

DETAIL_LIMIT = 300


def model_request(serving: ServingConfig, inputs: dict[str, float]) -> dict[str, Any]:
    return {
        "name": serving.model_name,
        "signature": serving.signature_name,
        "requested_version": serving.model_version,
        "inputs": inputs,
    }


def scored(value: JobRecord, prediction: Prediction) -> JobRecord:
    value.model = ModelResult(
        score=prediction.score,
        model_version=prediction.model_version,
        fallback_reason=None,
        latency_ms=prediction.latency_ms,
        batch_size=prediction.batch_size,
    )
    value.timings["scored"] = now_ms()
    return value


def fell_back(value: JobRecord, reason: str, detail: str) -> JobRecord:
    """No live score: the fallback ladder (operators/fallback_ladder.py) decides next."""
    value.model = ModelResult(None, None, reason, detail=detail[:DETAIL_LIMIT])
    value.timings["scored"] = now_ms()
    return value
