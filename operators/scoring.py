"""Async model scoring: batched Predict calls, a client-side deadline, rules-only fallback.

PyFlink runs ``async_invoke`` on one asyncio loop per worker; the gRPC client is made
lazily on that loop. Concurrent in-flight records are coalesced into one ``Predict``
call by ``BatchingPredictClient``. Whatever goes wrong with the model, the record
leaves with a ``ModelResult`` carrying a fallback reason, so the rules decide it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyflink.datastream import RuntimeContext
from pyflink.datastream.functions import AsyncFunction

from decisioning.decision import ModelResult
from operators.clock import now_ms
from rtd.config import ServingConfig
from serving.batching_client import BatchingPredictClient, ModelCallError
from serving.model_signature import model_inputs


class ScoreWithModel(AsyncFunction):
    def __init__(self, serving: ServingConfig) -> None:
        self.serving = serving
        self._client: BatchingPredictClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._client = None
        group = runtime_context.get_metrics_group().add_group("rtd").add_group("model")
        self._fallbacks = {
            reason: group.counter(f"fallback_{reason}")
            for reason in ("timeout", "unavailable", "error", "shed")
        }
        self._scored = group.counter("scored")
        self._last_latency = 0.0
        self._last_batch = 0
        group.gauge("last_latency_ms", lambda: int(self._last_latency))
        group.gauge("last_rows_per_call", lambda: int(self._last_batch))

    def _request(self, inputs: dict[str, float]) -> dict[str, Any]:
        return {
            "name": self.serving.model_name,
            "signature": self.serving.signature_name,
            "requested_version": self.serving.model_version,
            "inputs": inputs,
        }

    def _fallback(self, value: dict[str, Any], reason: str, detail: str) -> list[dict[str, Any]]:
        value["model"] = ModelResult(None, None, reason, detail=detail[:300])
        value["timings"]["scored"] = now_ms()
        self._fallbacks[reason].inc()
        return [value]

    async def async_invoke(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        if self._client is None:
            self._client = BatchingPredictClient(self.serving)
            self._loop = asyncio.get_running_loop()
        inputs = model_inputs(value["event"], value["features"])
        value["model_request"] = self._request(inputs)
        try:
            prediction = await self._client.predict(inputs)
        except ModelCallError as exc:
            return self._fallback(value, exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - a model problem must never stop decisions
            return self._fallback(value, "error", f"{type(exc).__name__}: {exc}")
        value["model"] = ModelResult(
            score=prediction.score,
            model_version=prediction.model_version,
            fallback_reason=None,
            latency_ms=prediction.latency_ms,
            batch_size=prediction.batch_size,
        )
        self._last_latency = prediction.latency_ms
        self._last_batch = prediction.batch_size
        self._scored.inc()
        value["timings"]["scored"] = now_ms()
        return [value]

    def timeout(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """The operator's own deadline passed: decide by rules alone."""
        if "model_request" not in value:
            value["model_request"] = self._request(
                model_inputs(value["event"], value["features"])
            )
        return self._fallback(value, "timeout", "async operator timeout")

    def close(self) -> None:
        """Close the gRPC channel on the loop that owns it, if that loop still runs."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=2)
            except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                pass
