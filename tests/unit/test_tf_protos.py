from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.tf_protos import make_tensor, tensor_pb2, tensor_to_floats, types_pb2

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _fresh_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return done.stdout.strip()


def test_importing_the_protos_does_not_import_the_tensorflow_runtime() -> None:
    out = _fresh_python(
        "import sys, serving.tf_protos, serving.batching_client;"
        "print(sorted(m for m in sys.modules if m.startswith('tensorflow.python')))"
    )
    assert out == "[]"


def test_touching_tensorflow_afterwards_loads_the_real_package() -> None:
    # The model server imports the protos first and TensorFlow later, in one process.
    out = _fresh_python(
        "import serving.tf_protos as p, tensorflow as tf;"
        "print(tf.__version__ != '', tf.make_ndarray(p.make_tensor([1.5, 2.0])).tolist())"
    )
    assert out == "True [1.5, 2.0]"


def test_make_tensor_is_float32_vector_in_tensor_content() -> None:
    tensor = make_tensor([1.0, 2.5, -3.25])
    assert tensor.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in tensor.tensor_shape.dim] == [3]
    assert len(tensor.tensor_content) == 12 and not tensor.float_val
    assert tensor_to_floats(tensor) == [1.0, 2.5, -3.25]


def test_empty_tensor_round_trips() -> None:
    assert tensor_to_floats(make_tensor([])) == []


def test_reads_float_val_as_tf_serving_answers() -> None:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.25, 0.5])
    tensor.tensor_shape.dim.add(size=2)
    assert tensor_to_floats(tensor) == [0.25, 0.5]


def test_single_float_val_fills_the_shape() -> None:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5])
    tensor.tensor_shape.dim.add(size=3)
    assert tensor_to_floats(tensor) == [0.5, 0.5, 0.5]


def test_reads_doubles_and_rejects_other_types() -> None:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[0.1])
    assert tensor_to_floats(tensor) == [0.1]
    with pytest.raises(ValueError, match="DT_INT32"):
        tensor_to_floats(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[1]))


def test_values_are_rounded_to_float32() -> None:
    assert tensor_to_floats(make_tensor([0.1]))[0] == pytest.approx(0.1, rel=1e-7)
