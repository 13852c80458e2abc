"""The model server process against TF Serving's API, through the official stubs.

Starts ``python -m serving.server`` on a free port over a temporary base path holding a
bootstrap model (made with ``python -m model_training.bootstrap``), and checks what a
``tensorflow/serving`` client relies on: Predict by signature, batches, the answering
version in ``model_spec``, metadata, status, error codes, hot reload, drills and a
graceful SIGTERM. Tests run in file order; the last one stops the server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from rtd_core.config import ServingConfig
from serving.batching_client import BatchingPredictClient, ModelCallError
from serving.drills import DrillSettings, write_drill_file
from serving.model_signature import MODEL_INPUT_NAMES
from serving.tf_protos import make_tensor, tensor_to_floats

# isort: split
# The official stubs: serving.* above registered the bare tensorflow package first,
# so they load without the TF runtime.
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.5
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@dataclass
class RunningServer:
    port: int
    base_path: Path
    process: subprocess.Popen[bytes]
    log: Path
    channel: grpc.Channel

    @property
    def predictions(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @property
    def models(self) -> model_service_pb2_grpc.ModelServiceStub:
        return model_service_pb2_grpc.ModelServiceStub(self.channel)

    def status(self) -> Any:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "fraud"
        return self.models.GetModelStatus(request, timeout=5)

    def client_config(self, **overrides: Any) -> ServingConfig:
        return ServingConfig(host="127.0.0.1", port=self.port, **overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s} s. Server log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base_path = tmp_path_factory.mktemp("models") / "fraud"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(
        [sys.executable, "-m", "model_training.bootstrap", "--base-path", str(base_path)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=180,
        capture_output=True,
    )
    port = _free_port()
    log = base_path.parent / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.server",
                "--base-path",
                str(base_path),
                "--model-name",
                "fraud",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--poll-interval",
                str(POLL_S),
                "--grace-s",
                "5",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    running = RunningServer(port, base_path, process, log, channel)
    _wait_for(
        lambda: running.status().model_version_status[0].state == AVAILABLE,
        120,
        "model server did not report AVAILABLE",
        log,
    )
    yield running
    channel.close()
    if process.poll() is None:
        process.kill()
        process.wait()


def predict_request(rows: int, **spec: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "fraud")
    request.model_spec.signature_name = "serving_default"
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    for i, name in enumerate(MODEL_INPUT_NAMES):
        request.inputs[name].CopyFrom(make_tensor([float((r + i) % 5) for r in range(rows)]))
    return request


def rpc_code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[attr-defined,no-any-return]


def test_predict_batch_of_64_by_signature(server: RunningServer) -> None:
    response = server.predictions.Predict(predict_request(64), timeout=5)
    scores = tensor_to_floats(response.outputs["score"])
    assert len(scores) == 64 and all(0.0 <= s <= 1.0 for s in scores)
    assert response.model_spec.name == "fraud"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_metadata_has_the_signature_def_map(server: RunningServer) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "fraud"
    response = server.predictions.GetModelMetadata(request, timeout=5)
    assert response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def["serving_default"]
    assert set(signature.inputs) == set(MODEL_INPUT_NAMES)
    assert set(signature.outputs) == {"score"}


def test_status_reports_available(server: RunningServer) -> None:
    statuses = server.status().model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in statuses] == [(1, AVAILABLE, 0)]


def test_error_codes(server: RunningServer) -> None:
    predict = server.predictions.Predict
    assert rpc_code(lambda: predict(predict_request(2, name="nope"), timeout=5)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert rpc_code(lambda: predict(predict_request(2, version=42), timeout=5)) == (
        grpc.StatusCode.NOT_FOUND
    )
    missing = predict_request(2)
    del missing.inputs["amount"]
    assert rpc_code(lambda: predict(missing, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "nope"
    assert rpc_code(lambda: server.models.GetModelStatus(status_request, timeout=5)) == (
        grpc.StatusCode.NOT_FOUND
    )
    classify = classification_pb2.ClassificationRequest()
    assert rpc_code(lambda: server.predictions.Classify(classify, timeout=5)) == (
        grpc.StatusCode.UNIMPLEMENTED
    )
    regress = regression_pb2.RegressionRequest()
    assert rpc_code(lambda: server.predictions.Regress(regress, timeout=5)) == (
        grpc.StatusCode.UNIMPLEMENTED
    )


def test_batching_client_coalesces_against_the_server(server: RunningServer) -> None:
    async def scenario() -> list[Any]:
        client = BatchingPredictClient(server.client_config(batch_window_ms=5.0))
        rows = [{name: float(i % 3) for name in MODEL_INPUT_NAMES} for i in range(200)]
        results = await asyncio.gather(*(client.predict(r) for r in rows))
        await client.close()
        assert client.counters.calls <= 10 and client.counters.rows == 200
        return results

    results = asyncio.run(scenario())
    assert all(r.model_version == 1 and 0.0 <= r.score <= 1.0 for r in results)
    assert max(r.batch_size for r in results) == 64


def test_drills_change_at_run_time(server: RunningServer) -> None:
    drill_file = server.base_path / ".drill.json"

    async def outcome(timeout_ms: int) -> str:
        client = BatchingPredictClient(server.client_config(timeout_ms=timeout_ms))
        try:
            await client.predict({name: 1.0 for name in MODEL_INPUT_NAMES})
            return "ok"
        except ModelCallError as exc:
            return exc.reason
        finally:
            await client.close()

    def settles_to(expected: str, timeout_ms: int) -> None:
        _wait_for(
            lambda: asyncio.run(outcome(timeout_ms)) == expected,
            10 * POLL_S + 5,
            f"drill outcome {expected!r}",
            server.log,
        )

    try:
        write_drill_file(drill_file, DrillSettings(latency_ms=500))
        settles_to("timeout", 150)
        assert asyncio.run(outcome(2_000)) == "ok"  # slow, not broken
        write_drill_file(drill_file, DrillSettings(error_rate=1.0))
        settles_to("error", 1_000)
        write_drill_file(drill_file, DrillSettings(error_rate=1.0, error_code="UNAVAILABLE"))
        settles_to("unavailable", 1_000)
    finally:
        write_drill_file(drill_file, None)
    settles_to("ok", 1_000)


def test_hot_reload_serves_a_new_version_and_ends_the_old(server: RunningServer) -> None:
    staging = server.base_path / ".copy-2"
    shutil.copytree(server.base_path / "1", staging)
    staging.rename(server.base_path / "2")
    started = time.monotonic()

    def answers_with_v2() -> bool:
        response = server.predictions.Predict(predict_request(4), timeout=5)
        return response.model_spec.version.value == 2

    _wait_for(answers_with_v2, 30, "version 2 did not take over", server.log)
    took = time.monotonic() - started
    _wait_for(
        lambda: (
            [(s.version, s.state) for s in server.status().model_version_status]
            == [(2, AVAILABLE), (1, END)]
        ),
        10,
        "version 1 did not reach END",
        server.log,
    )
    print(f"version 2 answered {took:.1f} s after it appeared (poll {POLL_S} s)")
    assert (
        rpc_code(lambda: server.predictions.Predict(predict_request(1, version=1), timeout=5))
        == grpc.StatusCode.NOT_FOUND
    )


def test_sigterm_drains_in_flight_calls_then_exits(server: RunningServer) -> None:
    write_drill_file(server.base_path / ".drill.json", DrillSettings(latency_ms=800))
    time.sleep(3 * POLL_S)
    outcome: dict[str, Any] = {}

    def slow_call() -> None:
        try:
            response = server.predictions.Predict(predict_request(8), timeout=10)
            outcome["version"] = response.model_spec.version.value
        except grpc.RpcError as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)  # the call is now sleeping inside the server
    server.process.send_signal(signal.SIGTERM)
    caller.join(15)
    assert "error" not in outcome, outcome
    assert outcome["version"] >= 1
    assert server.process.wait(timeout=20) == 0
    assert "stopped" in server.log.read_text()
