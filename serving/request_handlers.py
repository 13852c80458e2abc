"""TF Serving's request semantics over a ModelStore, independent of the gRPC flavour.

Each handler takes the request message and returns the response message or raises
``ServingError`` with the status code and message TF Serving would give (its
``predict_util.cc``, ``get_model_metadata_impl.cc`` and ``get_model_status_impl.cc``):
unknown model or version -> NOT_FOUND, unknown signature -> FAILED_PRECONDITION, inputs
not matching the signature -> INVALID_ARGUMENT. Responses carry ``model_spec`` with the
version that answered, which the job records in every decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import grpc
import numpy as np

from serving.model_signature import SIGNATURE_NAME
from serving.model_store import (
    ModelStore,
    ServableHandle,
    ServableNotFound,
    UnknownVersionLabel,
    numpy_dtype,
)
from serving.tf_protos import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    tensor_pb2,
    types_pb2,
)

SIGNATURE_DEF_FIELD = "signature_def"
_TF_TYPE_NAMES = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_INT64: "int64",
}


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _type_name(dtype: int) -> str:
    return _TF_TYPE_NAMES.get(dtype) or types_pb2.DataType.Name(dtype)


def _joined(keys: object) -> str:
    return ",".join(sorted(keys))  # type: ignore[call-overload]


class RequestHandlers:
    """Predict / GetModelMetadata / GetModelStatus for the models in ``stores``."""

    def __init__(self, stores: Mapping[str, ModelStore]) -> None:
        self._stores = dict(stores)

    # --- model spec resolution ------------------------------------------------------
    def _store(self, spec: model_pb2.ModelSpec) -> ModelStore:
        store = self._stores.get(spec.name)
        if store is None:
            if spec.HasField("version"):
                what = f"Specific({spec.name}, {spec.version.value})"
            else:
                what = f"Latest({spec.name})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {what}")
        return store

    @contextmanager
    def _servable(self, spec: model_pb2.ModelSpec) -> Iterator[ServableHandle]:
        store = self._store(spec)
        try:
            version: int | None = None
            if spec.HasField("version"):
                version = spec.version.value
            elif spec.version_label:
                version = store.resolve_label(spec.version_label)
            with store.acquire(version) as handle:
                yield handle
        except ServableNotFound as exc:
            raise ServingError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except UnknownVersionLabel as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    # --- Predict ----------------------------------------------------------------------
    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        signature_name = spec.signature_name or SIGNATURE_NAME
        with self._servable(spec) as handle:
            signature = handle.model.signature_defs.get(signature_name)
            if signature is None:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f'Serving signature key "{signature_name}" not found.',
                )
            inputs = _decode_inputs(signature, request)
            aliases = _output_aliases(signature, request)
            try:
                outputs = handle.model.run(signature_name, inputs, aliases)
            except Exception as exc:  # noqa: BLE001 - mapped like a TF session error
                raise _model_error(exc) from None
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = handle.version
            response.model_spec.signature_name = signature_name
            for alias in aliases:
                _encode_output(outputs[alias], response.outputs[alias])
            return response

    # --- GetModelMetadata -------------------------------------------------------------
    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
                )
        with self._servable(request.model_spec) as handle:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for name, signature in handle.model.signature_defs.items():
                signature_map.signature_def[name].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = handle.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
            return response

    # --- GetModelStatus ---------------------------------------------------------------
    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        store = self._stores.get(spec.name)
        statuses = store.statuses() if store is not None else []
        if spec.HasField("version"):
            statuses = [s for s in statuses if s.version == spec.version.value]
            if not statuses:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {spec.version.value} of model {spec.name}",
                )
        elif not statuses:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(
                version=status.version, state=int(status.state)
            )
            entry.status.SetInParent()  # TF Serving always sets it; OK is error_code 0
            if status.error:
                entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                entry.status.error_message = status.error
        return response


def _decode_inputs(signature: object, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
    expected = signature.inputs  # type: ignore[attr-defined]
    sent = request.inputs
    if len(sent) != len(expected):
        extra = set(sent) - set(expected)
        missing = set(expected) - set(sent)
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{_joined(sent)}}}) != len({{{_joined(expected)}}}). "
            f"Sent extra: {{{_joined(extra)}}}. Missing but required: {{{_joined(missing)}}}.",
        )
    arrays: dict[str, np.ndarray] = {}
    for position, (alias, tensor) in enumerate(sorted(sent.items())):
        info = expected.get(alias)
        if info is None:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{_joined(expected)}}}.",
            )
        if tensor.dtype != info.dtype:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[{position}] to be {_type_name(info.dtype)} "
                f"but {_type_name(tensor.dtype)} is provided",
            )
        arrays[alias] = _tensor_to_ndarray(alias, tensor)
    return arrays


def _tensor_to_ndarray(alias: str, tensor: tensor_pb2.TensorProto) -> np.ndarray:
    try:
        dtype = np.dtype(numpy_dtype(tensor.dtype)).newbyteorder("<")
    except ValueError as exc:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{exc}: {alias}") from None
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype=dtype)
    else:
        field = {
            types_pb2.DT_FLOAT: tensor.float_val,
            types_pb2.DT_DOUBLE: tensor.double_val,
            types_pb2.DT_INT32: tensor.int_val,
            types_pb2.DT_INT64: tensor.int64_val,
        }
        values = np.asarray(field[tensor.dtype], dtype=dtype)
        if values.size == 1 and count > 1:  # TF fills the shape from a single value
            values = np.full(count, values[0], dtype=dtype)
    if values.size != count or any(d < 0 for d in shape):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")
    return values.reshape(shape)


def _output_aliases(signature: object, request: predict_pb2.PredictRequest) -> list[str]:
    outputs = signature.outputs  # type: ignore[attr-defined]
    if not request.output_filter:
        return list(outputs)
    seen: list[str] = []
    for alias in request.output_filter:
        if alias not in outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_joined(outputs)}}}.",
            )
        if alias in seen:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}"
            )
        seen.append(alias)
    return seen


def _encode_output(array: np.ndarray, tensor: tensor_pb2.TensorProto) -> None:
    """Like TF Serving's default (AsProtoField): typed repeated field, not tensor_content."""
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    flat = array.ravel()
    if array.dtype == np.float32:
        tensor.dtype = types_pb2.DT_FLOAT
        tensor.float_val.extend(flat.tolist())
    elif array.dtype == np.float64:
        tensor.dtype = types_pb2.DT_DOUBLE
        tensor.double_val.extend(flat.tolist())
    elif array.dtype == np.int32:
        tensor.dtype = types_pb2.DT_INT32
        tensor.int_val.extend(flat.tolist())
    elif array.dtype == np.int64:
        tensor.dtype = types_pb2.DT_INT64
        tensor.int64_val.extend(flat.tolist())
    else:
        raise ServingError(grpc.StatusCode.INTERNAL, f"unsupported output dtype {array.dtype}")


def _model_error(exc: Exception) -> ServingError:
    # tf.errors.OpError.error_code uses the same numbers as gRPC status codes.
    code_number = getattr(exc, "error_code", None)
    if isinstance(code_number, int):
        for code in grpc.StatusCode:
            if code.value[0] == code_number:
                return ServingError(code, str(exc))
    if isinstance(exc, (ValueError, TypeError)):
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
