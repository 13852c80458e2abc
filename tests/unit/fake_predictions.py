"""A fake PredictionService: score = amount / 1000, as TF Serving encodes it.

``score_response`` is shared by the async client's tests (an aio server of their own)
and the thread-mode tests, which use the sync server below.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc

from serving.tf_protos import predict_pb2, prediction_service_pb2_grpc, tensor_to_floats


def amounts_of(request: Any) -> list[float]:
    return tensor_to_floats(request.inputs["amount"])


def score_response(request: Any, version: int) -> Any:
    amounts = amounts_of(request)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = request.model_spec.signature_name
    score = response.outputs["score"]
    score.dtype = 1  # DT_FLOAT; float_val, as TF Serving answers
    score.tensor_shape.dim.add(size=len(amounts))
    score.float_val.extend(a / 1000.0 for a in amounts)
    return response


class SyncFakeService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.delay_s = 0.0
        self.fail_code: grpc.StatusCode | None = None
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def Predict(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.batch_sizes.append(len(amounts_of(request)))
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.fail_code is not None:
                context.abort(self.fail_code, "fake failure")
            return score_response(request, 5)
        finally:
            with self._lock:
                self.concurrent -= 1


SERVER_THREADS = "fake-prediction-server"


@contextmanager
def fake_server(port: int = 0) -> Iterator[tuple[SyncFakeService, int]]:
    """A sync fake on ``port`` (0: any free one)."""
    # Named, so tests that count the client's threads can tell the server's apart: the
    # pool starts its workers lazily, one per concurrent request, while the client runs.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8,
                                                    thread_name_prefix=SERVER_THREADS))
    service = SyncFakeService()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield service, port
    finally:
        server.stop(grace=None)


@contextmanager
def socket_port() -> Iterator[int]:
    """A port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
