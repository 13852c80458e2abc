"""A child process that makes the job's Predict calls, so the task thread need not wait.

In thread mode the job's Python runs inside the TaskManager JVM (PEMJA), where Python
threads of our own, and gRPC itself, are a hazard (serving/pipelined_batch_client.py:
with gRPC's future calls the TaskManager died in native code, and a blocking call
deadlocked on the GIL). A blocking call also keeps the task thread idle for a whole
round trip. So the thread-mode client
(serving/pipelined_batch_client.py) hands each serialised ``PredictRequest`` to this
process over a pipe and reads the answers back without blocking; the threads that wait
on gRPC are here, outside the JVM.

Frames, both ways, big-endian: a request is ``call id (u64), deadline s (f64),
wait_for_ready (u8), length (u32)`` then the request bytes; an answer is ``call id
(u64), status (u8: 0 answered, 1 gRPC error), length (u32)`` then the response bytes, or
``<status code name>\\n<details>`` for an error. Requests and responses pass through as
bytes, never parsed here. The process exits when its input closes (the operator closed,
or the TaskManager died).

    python -m serving.predict_relay SERVING_CONFIG_JSON [MAX_CONCURRENT_CALLS]

The serving config (rtd_core/config.py ServingConfig, as JSON: target and TLS file paths, no
secret) gives the channel, so the relay speaks TLS when ``serving.tls.enabled``.
"""

from __future__ import annotations

import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import grpc

from rtd_core.config import ServingConfig
from rtd_core.security import serving_channel

REQUEST_HEADER = struct.Struct(">QdBI")
ANSWER_HEADER = struct.Struct(">QBI")
ANSWERED, FAILED = 0, 1
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
# The answer frame the relay writes once, at start, with no payload: it is ready.
READY_ID = 2**64 - 1

# Reconnect quickly once the server is back: gRPC's default backoff grows to 120 s, far
# longer than the circuit breaker's reset, so a healed server would stay unreachable.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


def read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(serving: ServingConfig, concurrency: int, requests: BinaryIO,
          answers: BinaryIO) -> None:
    channel = serving_channel(serving, CHANNEL_OPTIONS)
    predict = channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out
    lock = threading.Lock()

    def answer(call_id: int, status: int, payload: bytes) -> None:
        with lock:
            answers.write(ANSWER_HEADER.pack(call_id, status, len(payload)) + payload)
            answers.flush()

    def call(call_id: int, timeout_s: float, wait_for_ready: bool, request: bytes) -> None:
        try:
            response = predict(request, timeout=max(timeout_s, 0.001),
                               wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = getattr(code, "name", "UNKNOWN")
            details = exc.details() if hasattr(exc, "details") else str(exc)
            answer(call_id, FAILED, f"{name}\n{details}".encode())
        except Exception as exc:  # noqa: BLE001 - every call gets an answer
            answer(call_id, FAILED, f"UNKNOWN\n{type(exc).__name__}: {exc}".encode())
        else:
            answer(call_id, ANSWERED, response)

    answer(READY_ID, ANSWERED, b"")
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        while True:
            header = read_exactly(requests, REQUEST_HEADER.size)
            if header is None:
                break
            call_id, timeout_s, wait_for_ready, length = REQUEST_HEADER.unpack(header)
            request = read_exactly(requests, length)
            if request is None:
                break
            pool.submit(call, call_id, timeout_s, bool(wait_for_ready), request)
    channel.close()


def main(argv: list[str]) -> None:
    serving = ServingConfig.model_validate_json(argv[0])
    concurrency = int(argv[1]) if len(argv) > 1 else 4
    serve(serving, concurrency, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main(sys.argv[1:])
