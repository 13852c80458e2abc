"""The exported SavedModel's signature, inspected like ``saved_model_cli show`` does.

Trains a deliberately small model (a second or two) and needs TensorFlow in-process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.model_signature import MODEL_INPUT_NAMES
from serving.model_store import TfSavedModel, read_signature_defs
from serving.tf_protos import types_pb2

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_training.bootstrap import train_and_export

    path = tmp_path_factory.mktemp("model") / "1"
    train_and_export(path, rows=8_000, epochs=3, seed=5)
    return path


def test_serving_default_signature_has_named_float_vector_inputs(exported: Path) -> None:
    signatures = read_signature_defs(exported)
    assert "serving_default" in signatures
    signature = signatures["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert set(signature.inputs) == set(MODEL_INPUT_NAMES)
    for name, info in signature.inputs.items():
        assert info.dtype == types_pb2.DT_FLOAT, name
        assert [d.size for d in info.tensor_shape.dim] == [-1], name
    assert set(signature.outputs) == {"score"}
    score = signature.outputs["score"]
    assert score.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in score.tensor_shape.dim] == [-1]


def test_raw_inputs_give_scores_in_unit_interval_that_rank_fraud_higher(exported: Path) -> None:
    from model_training.bootstrap import simulate_feature_rows

    model = TfSavedModel(exported)
    x, y = simulate_feature_rows(4_000, seed=99)
    inputs = {name: x[:, i] for i, name in enumerate(MODEL_INPUT_NAMES)}
    scores = model.run("serving_default", inputs, ["score"])["score"]
    assert scores.shape == (4_000,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[y == 1].mean() > scores[y == 0].mean() + 0.4
