"""A model server speaking TensorFlow Serving's gRPC API over a versioned SavedModel dir.

The TF Serving binary is not available on these machines, so this server stands in for
``tensorflow/serving``: same services (``tensorflow.serving.PredictionService`` and
``tensorflow.serving.ModelService``), same messages, status codes and directory layout,
so the job's client works unchanged against the real image.

    python -m serving.server --base-path models/fraud --model-name fraud --port 8500 \
        --poll-interval 2 [--latency-ms N] [--error-rate P] [--drill-file PATH]

Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED.
Drills (injected latency, error rate) are described in ``serving/drills.py``. SIGTERM or
SIGINT stops accepting new calls and drains in-flight ones for ``--grace-s`` seconds.

The gRPC server is the thread-pool one. Measured on the 2-core machine (batch-64 Predict
calls from a grpc.aio load generator on the same host, 3 runs of 6 s each), the
thread-pool server and a ``grpc.aio`` server (model call inline or via ``to_thread``)
were tied within run-to-run noise: ~58-75k rows/s (900-1,170 calls/s) either way at 4
and 16 concurrent callers; the two cores are saturated by the TF signature call (~0.5 ms
per batch, mostly TF's Python argument binding) plus protobuf work. With no throughput
to gain, plain synchronous handlers are simpler to reason about, and a slow model call
cannot stall an event loop that also accepts connections.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc

from serving.drills import DRILL_FILE_NAME, DrillControl, DrillSettings
from serving.model_store import ModelStore
from serving.request_handlers import RequestHandlers, ServingError
from serving.tf_protos import model_service_pb2_grpc, prediction_service_pb2_grpc

log = logging.getLogger("serving.server")

Request = TypeVar("Request")
Response = TypeVar("Response")

# TF Serving's default message limit is gRPC's 4 MiB for requests; keep the same so a
# client that works here is not relying on a larger limit.
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _answer(
    handler: Callable[[Request], Response], request: Request, context: grpc.ServicerContext
) -> Response:
    try:
        return handler(request)
    except ServingError as exc:
        context.abort(exc.code, exc.message)
    except Exception as exc:  # never let a bug surface as a bare UNKNOWN without a log line
        log.exception("internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: context.abort raises")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, handlers: RequestHandlers, drills: DrillControl) -> None:
        self._handlers = handlers
        self._drills = drills

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        settings = self._drills.current()
        if settings.active:
            if settings.latency_ms > 0:
                time.sleep(settings.latency_ms / 1000.0)
            failure = self._drills.injected_failure(settings)
            if failure is not None:
                context.abort(failure, f"drill: injected {failure.name}")
        return _answer(self._handlers.predict, request, context)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _answer(self._handlers.get_model_metadata, request, context)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not supported by this server")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not supported by this server")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported by this server"
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, handlers: RequestHandlers) -> None:
        self._handlers = handlers

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _answer(self._handlers.get_model_status, request, context)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "model config reload is not supported: publish a new version directory",
        )


def build_server(
    store: ModelStore,
    drills: DrillControl,
    address: str,
    *,
    workers: int = 8,
    tls: tuple[Path, Path] | None = None,
) -> tuple[grpc.Server, int]:
    """A gRPC server bound to ``address``, not yet started; returns it and its port.
    ``tls``: (certificate chain, private key) PEM files; the port then speaks TLS only."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-worker"),
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail loudly
        ],
    )
    handlers = RequestHandlers({store.name: store})
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(handlers, drills), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(handlers), server)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            cert, key = (f.read_bytes() for f in tls)
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    except RuntimeError:  # grpc >= 1.5x raises instead of returning 0
        port = 0
    if port == 0:
        raise OSError(f"could not bind the model server to {address}: is the port taken?")
    return server, port


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TF Serving-compatible gRPC model server")
    parser.add_argument(
        "--base-path", type=Path, required=True, help="directory of numbered SavedModel versions"
    )
    parser.add_argument("--model-name", default="fraud")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between version scans (file_system_poll_wait_seconds)",
    )
    parser.add_argument("--workers", type=int, default=8, help="gRPC worker threads")
    parser.add_argument("--tls-cert", type=Path, default=None,
                        help="PEM certificate chain: serve TLS only (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--grace-s",
        type=float,
        default=5.0,
        help="how long in-flight calls may finish after SIGTERM",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="drill: added per Predict")
    parser.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="drill: share of Predict calls failed on purpose",
    )
    parser.add_argument(
        "--error-code", default="INTERNAL", help="drill: gRPC status name of the injected failures"
    )
    parser.add_argument(
        "--drill-file",
        type=Path,
        default=None,
        help=f"run-time drill overrides (default <base-path>/{DRILL_FILE_NAME})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        log.error("--tls-cert and --tls-key go together")
        return 2
    # TF's C++ INFO lines (oneDNN, CPU features) bury the server's own; warnings stay.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    baseline = DrillSettings(args.latency_ms, args.error_rate, args.error_code)
    drill_file = args.drill_file or args.base_path / DRILL_FILE_NAME
    drills = DrillControl(baseline, drill_file, args.poll_interval)
    store = ModelStore(args.model_name, args.base_path, poll_interval_s=args.poll_interval)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    started = time.monotonic()
    store.start()  # loads the current version before the port opens, as TF Serving does
    try:
        server, port = build_server(
            store, drills, f"{args.host}:{args.port}", workers=args.workers,
            tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        )
    except OSError as exc:
        log.error("%s", exc)
        store.stop()
        return 1
    server.start()
    log.info(
        "serving model %s version %s from %s on port %d%s (pid %d, ready in %.1f s)%s",
        args.model_name,
        store.serving_version,
        args.base_path,
        port,
        " (TLS)" if args.tls_cert else "",
        os.getpid(),
        time.monotonic() - started,
        f"; drills {baseline}" if baseline.active else "",
    )
    stop.wait()
    # stop() refuses new calls at once and lets in-flight ones run up to the grace period.
    server.stop(grace=args.grace_s).wait()
    store.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
