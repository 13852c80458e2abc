"""Async model scoring: batched Predict calls, a client-side deadline, rules-only fallback.

PyFlink runs ``async_invoke`` on one asyncio loop per worker; the gRPC client is made
lazily on that loop. Concurrent in-flight records are coalesced into one ``Predict``
call by ``BatchingPredictClient``. Whatever goes wrong with the model, the record
leaves with a ``ModelResult`` carrying a fallback reason; the fallback ladder after this
operator (operators/fallback_ladder.py) then uses the card's last score or the rules.

Metrics (group ``rtd.model``) are gauges only. PyFlink runs ``async_invoke`` on its own
asyncio thread and ``timeout`` on timer threads, where Beam-backed counters and meters
have no metrics container and are silently dropped (the UI showed none of the counters
this operator used to have); gauges are read on the worker's main thread at the end of
each bundle, so figures kept in plain attributes reach the UI. Rates per cause are
meters in the fallback ladder operator, which runs on a main thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pyflink.datastream import RuntimeContext
from pyflink.datastream.functions import AsyncFunction

from decisioning.decision import ModelResult
from operators.clock import now_ms
from rtd.config import ServingConfig
from serving.batching_client import BatchingPredictClient, ModelCallError, Reason
from serving.call_stats import CallStats
from serving.model_signature import model_inputs


class ScoreWithModel(AsyncFunction):
    def __init__(self, serving: ServingConfig) -> None:
        self.serving = serving
        self._client: BatchingPredictClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._client = None
        self._stats = CallStats()
        self._scored = 0
        self._fallbacks: dict[str, int] = dict.fromkeys(
            ("timeout", "unavailable", "error", "shed"), 0)
        group = runtime_context.get_metrics_group().add_group("rtd").add_group("model")
        group.gauge("scored", lambda: self._scored)
        for reason in self._fallbacks:
            group.gauge(f"fallback_{reason}", self._fallback_count(reason))
        stats = self._stats
        # Integer gauges only (PyFlink), so latencies are in microseconds.
        group.gauge("call_latency_p50_us", lambda: int(stats.summary().call_p50_ms * 1000))
        group.gauge("call_latency_p99_us", lambda: int(stats.summary().call_p99_ms * 1000))
        group.gauge("row_latency_p50_us", lambda: int(stats.summary().row_p50_ms * 1000))
        group.gauge("row_latency_p99_us", lambda: int(stats.summary().row_p99_ms * 1000))
        group.gauge("rows_per_call", lambda: round(stats.summary().rows_per_call))
        group.gauge("predict_calls", lambda: stats.summary().calls)
        group.gauge("predict_rows", lambda: stats.summary().rows)
        group.gauge("breaker_open", lambda: int(
            self._client is not None and self._client.breaker.state != "closed"))

    def _fallback_count(self, reason: str) -> Callable[[], int]:
        return lambda: self._fallbacks[reason]

    def _on_call(self, latency_ms: float, rows: int, outcome: Reason | None) -> None:
        if outcome is None:  # latency of answered calls; failures are counted by cause
            self._stats.record_call(latency_ms, rows)

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
        self._fallbacks[reason] += 1
        return [value]

    async def async_invoke(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        if self._client is None:
            self._client = BatchingPredictClient(self.serving, on_call=self._on_call)
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
        self._stats.record_row(prediction.latency_ms)
        self._scored += 1
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
