"""TF Serving's request semantics (status codes, messages, model_spec) over fake versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.model_store import ModelStore
from serving.request_handlers import RequestHandlers, ServingError
from serving.tf_protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    make_tensor,
    predict_pb2,
    tensor_pb2,
    tensor_to_floats,
    types_pb2,
)
from tests.unit.fake_model import FakeModel, add_version

pytestmark = pytest.mark.unit


@pytest.fixture
def handlers(tmp_path: Path) -> Iterator[RequestHandlers]:
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    store = ModelStore("fraud", tmp_path, loader=FakeModel)
    store.poll_once()
    yield RequestHandlers({"fraud": store})


def request(**spec: object) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "fraud"
    for key, value in spec.items():
        if key == "version":
            req.model_spec.version.value = int(value)  # type: ignore[call-overload]
        else:
            setattr(req.model_spec, key, value)
    req.inputs["amount"].CopyFrom(make_tensor([100.0, 500.0]))
    req.inputs["count"].CopyFrom(make_tensor([1.0, 7.0]))
    return req


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(ServingError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code, caught.value.message


def test_predict_answers_with_model_spec_and_float_val(handlers: RequestHandlers) -> None:
    response = handlers.predict(request())
    assert response.model_spec.name == "fraud"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    score = response.outputs["score"]
    assert score.dtype == types_pb2.DT_FLOAT and not score.tensor_content
    assert [d.size for d in score.tensor_shape.dim] == [2]
    assert list(score.float_val) == pytest.approx([0.12, 0.52])
    assert set(response.outputs) == {"score", "logit"}


def test_output_filter_selects_outputs(handlers: RequestHandlers) -> None:
    req = request()
    req.output_filter.append("logit")
    response = handlers.predict(req)
    assert set(response.outputs) == {"logit"}
    assert tensor_to_floats(response.outputs["logit"]) == [1.0, 7.0]


def test_float_val_inputs_are_accepted(handlers: RequestHandlers) -> None:
    req = request()
    amount = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[100.0, 500.0])
    amount.tensor_shape.dim.add(size=2)
    req.inputs["amount"].CopyFrom(amount)
    assert tensor_to_floats(handlers.predict(req).outputs["score"]) == pytest.approx([0.12, 0.52])


def test_unknown_model_and_version_are_not_found(handlers: RequestHandlers) -> None:
    assert code_of(lambda: handlers.predict(request(name="other"))) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(other)",
    )
    assert code_of(lambda: handlers.predict(request(version=1))) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(fraud, 1)",
    )
    assert handlers.predict(request(version=2)).model_spec.version.value == 2


def test_version_labels(handlers: RequestHandlers) -> None:
    assert handlers.predict(request(version_label="stable")).model_spec.version.value == 2
    code, message = code_of(lambda: handlers.predict(request(version_label="canary")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "canary" in message


def test_unknown_signature_is_failed_precondition(handlers: RequestHandlers) -> None:
    assert code_of(lambda: handlers.predict(request(signature_name="nope"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )


def test_missing_input_is_invalid_argument(handlers: RequestHandlers) -> None:
    req = request()
    del req.inputs["count"]
    code, message = code_of(lambda: handlers.predict(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("input size does not match signature: 1!=2")
    assert "Missing but required: {count}" in message


def test_wrong_alias_wrong_dtype_and_bad_shape_are_invalid_argument(
    handlers: RequestHandlers,
) -> None:
    renamed = request()
    renamed.inputs["cnt"].CopyFrom(renamed.inputs["count"])
    del renamed.inputs["count"]
    code, message = code_of(lambda: handlers.predict(renamed))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor alias not found in signature: cnt" in message

    doubles = request()
    doubles.inputs["count"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[1.0, 2.0])
    )
    code, message = code_of(lambda: handlers.predict(doubles))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "float but double" in message

    short = request()
    short.inputs["count"].tensor_shape.dim[0].size = 3  # 2 values for a shape of 3
    assert code_of(lambda: handlers.predict(short))[0] == grpc.StatusCode.INVALID_ARGUMENT

    ragged = request()
    ragged.inputs["count"].CopyFrom(make_tensor([1.0]))
    assert code_of(lambda: handlers.predict(ragged))[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_output_filter_is_invalid_argument(handlers: RequestHandlers) -> None:
    unknown = request()
    unknown.output_filter.append("probability")
    code, message = code_of(lambda: handlers.predict(unknown))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "probability" in message
    twice = request()
    twice.output_filter.extend(["score", "score"])
    assert code_of(lambda: handlers.predict(twice)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: score",
    )


def test_metadata_returns_the_signature_def_map(handlers: RequestHandlers) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "fraud"
    response = handlers.get_model_metadata(req)
    assert response.model_spec.version.value == 2
    any_value = response.metadata["signature_def"]
    assert any_value.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_value.Unpack(signature_map)
    assert set(signature_map.signature_def["serving_default"].inputs) == {"amount", "count"}

    del req.metadata_field[:]
    assert code_of(lambda: handlers.get_model_metadata(req))[0] == grpc.StatusCode.INVALID_ARGUMENT
    req.metadata_field.append("graph")
    assert code_of(lambda: handlers.get_model_metadata(req)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    )


def test_status_lists_versions_and_finds_one(handlers: RequestHandlers) -> None:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "fraud"
    response = handlers.get_model_status(req)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]
    assert response.model_version_status[0].status.error_code == 0
    req.model_spec.version.value = 1
    assert code_of(lambda: handlers.get_model_status(req)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 1 of model fraud",
    )
    req.model_spec.name = "other"
    req.model_spec.ClearField("version")
    assert code_of(lambda: handlers.get_model_status(req)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model other",
    )
