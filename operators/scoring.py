"""Async model scoring: batched Predict calls, a client-side deadline, rules-only fallback.

PyFlink runs ``async_invoke`` on one asyncio loop per worker; the gRPC client is made
lazily on that loop. Concurrent in-flight records are coalesced into one ``Predict``
call by ``BatchingPredictClient``. Whatever goes wrong with the model, the record
leaves with a ``ModelResult`` carrying a fallback reason; the rules then decide (or the
opt-in last-score rung, operators/fallback_ladder.py).

This is the process-mode scorer (PyFlink's ``AsyncFunction`` runs only there); thread
mode scores in operators/customer_shard.py. Metrics: operators/scoring_metrics.py.
"""

from __future__ import annotations

import asyncio

from pyflink.datastream import RuntimeContext
from pyflink.datastream.functions import AsyncFunction

from operators.failures import has_failed
from operators.records import JobRecord
from operators.scored_records import fell_back, model_request, scored
from operators.scoring_metrics import ScoringMetrics
from rtd_core.config import ServingConfig
from serving.batching_client import BatchingPredictClient, ModelCallError
from serving.model_signature import model_inputs


class ScoreWithModel(AsyncFunction):
    def __init__(self, serving: ServingConfig) -> None:
        self.serving = serving
        self._client: BatchingPredictClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._client = None
        self._metrics = ScoringMetrics(
            runtime_context.get_metrics_group(),
            lambda: self._client is not None and self._client.breaker.state != "closed")

    def _fallback(self, value: JobRecord, reason: str, detail: str) -> list[JobRecord]:
        self._metrics.row_fell_back(reason)
        return [fell_back(value, reason, detail)]

    async def async_invoke(self, value: JobRecord) -> list[JobRecord]:
        if has_failed(value):  # an earlier stage failed on it: on to the dead letters
            return [value]
        if self._client is None:
            self._client = BatchingPredictClient(self.serving, on_call=self._metrics.on_call)
            self._loop = asyncio.get_running_loop()
        try:
            inputs = model_inputs(value.event, value.features)
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop decisions
            value.model_request = model_request(self.serving, {})
            return self._fallback(value, "error", f"{type(exc).__name__}: {exc}")
        value.model_request = model_request(self.serving, inputs)
        try:
            prediction = await self._client.predict(inputs)
        except ModelCallError as exc:
            return self._fallback(value, exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - a model problem must never stop decisions
            return self._fallback(value, "error", f"{type(exc).__name__}: {exc}")
        self._metrics.row_scored(prediction.latency_ms)
        return [scored(value, prediction)]

    def timeout(self, value: JobRecord) -> list[JobRecord]:
        """The operator's own deadline passed: decide by rules alone."""
        if has_failed(value):
            return [value]
        if value.model_request is None:
            value.model_request = model_request(self.serving, {})
        return self._fallback(value, "timeout", "async operator timeout")

    def close(self) -> None:
        """Close the gRPC channel on the loop that owns it, if that loop still runs."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=2)
            except Exception:  # noqa: BLE001, S110 - closing is best effort at shutdown
                pass
