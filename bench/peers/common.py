"""What both peers share with the job: validation, rules, the decision record, and a
plain synchronous model call.

The model call is deliberately the one a team writes first: one blocking
``PredictionService.Predict`` per event over a plain gRPC stub (no batching, no async),
with the same deadline as the job's client (``serving.timeout_ms``) and the same
fallback reasons, so a failed call leaves the decision to the rules as in the job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import grpc

from decisioning.decision import ModelResult, decide
from decisioning.rules import RuleSet, evaluate_rules
from rtd_core.config import RtdConfig, ServingConfig
from rtd_core.security import serving_channel
from serving.model_signature import SCORE_OUTPUT, model_inputs
from serving.tf_protos import (
    make_tensor,
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_to_floats,
)

_REASON_OF = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SyncModelClient:
    """One blocking Predict per event; failures become a rules-only ModelResult."""

    def __init__(self, serving: ServingConfig) -> None:
        self.serving = serving
        self.channel = serving_channel(serving)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.timeout_s = serving.timeout_ms / 1000.0

    def _request(self, inputs: Mapping[str, float]) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.serving.model_name
        request.model_spec.signature_name = self.serving.signature_name
        if self.serving.model_version is not None:
            request.model_spec.version.value = self.serving.model_version
        request.output_filter.append(SCORE_OUTPUT)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(make_tensor([value]))
        return request

    def score(self, event: Mapping[str, Any], features: Mapping[str, float]) -> ModelResult:
        started = time.perf_counter()
        try:
            request = self._request(model_inputs(event, features))
            response = self.stub.Predict(request, timeout=self.timeout_s)
            score = tensor_to_floats(response.outputs[SCORE_OUTPUT])[0]
            version = int(response.model_spec.version.value)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return ModelResult(None, None, _REASON_OF.get(code, "error"), detail=str(code))
        except Exception as exc:  # noqa: BLE001 - a model problem must never stop decisions
            return ModelResult(None, None, "error", detail=f"{type(exc).__name__}: {exc}"[:300])
        latency = (time.perf_counter() - started) * 1000
        return ModelResult(score, version, None, latency_ms=round(latency, 3), batch_size=1)

    def close(self) -> None:
        self.channel.close()


def decision_json(config: RtdConfig, rules: RuleSet, event: Mapping[str, Any],
                  features: Mapping[str, float], model: ModelResult, late: bool) -> bytes:
    """The decision record exactly as the job writes it (decision_id first)."""
    decision = decide(
        event, evaluate_rules(rules, event, features), model,
        decline_at=config.thresholds.decline, review_at=config.thresholds.review,
        late=late, decided_at=now_ms(),
    )
    return json.dumps(decision, separators=(",", ":")).encode()
