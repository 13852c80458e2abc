"""A small Keras MLP over the model inputs, exported as a TF Serving SavedModel.

The exported ``serving_default`` signature takes one float32 [batch] tensor per name in
``MODEL_INPUT_NAMES`` (raw values, exactly what the job sends) and returns
``{"score": float32 [batch]}``. The input transform and the normalisation statistics are
part of the graph, so the server and the job need nothing from the training run.
"""

from __future__ import annotations

import os
from pathlib import Path

# TF's C++ start-up chatter (oneDNN, CPU feature notes) buries the useful log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras
import numpy as np
import tensorflow as tf

from serving.model_signature import MODEL_INPUT_NAMES, SCORE_OUTPUT, SIGNATURE_NAME

HIDDEN_UNITS: tuple[int, ...] = (32, 16)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames heavy-tailed amounts and counts, keeps -1 sentinels apart."""
    return np.sign(x) * np.log1p(np.abs(x))


def build_model(training_inputs: np.ndarray) -> keras.Model:
    """The MLP over a [batch, len(MODEL_INPUT_NAMES)] matrix of raw inputs.

    ``training_inputs`` (raw, same column order) only sets the normalisation statistics.
    """
    width = len(MODEL_INPUT_NAMES)
    if training_inputs.ndim != 2 or training_inputs.shape[1] != width:
        raise ValueError(f"training_inputs must be [rows, {width}], got {training_inputs.shape}")
    raw = keras.Input(shape=(width,), name="raw_inputs", dtype="float32")
    compressed = keras.layers.Lambda(
        lambda t: keras.ops.sign(t) * keras.ops.log1p(keras.ops.abs(t)), name="signed_log1p"
    )(raw)
    normalise = keras.layers.Normalization(name="normalise")
    normalise.adapt(signed_log1p(training_inputs).astype("float32"))
    hidden = normalise(compressed)
    for i, units in enumerate(HIDDEN_UNITS):
        hidden = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(hidden)
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(hidden)
    return keras.Model(raw, score, name="fraud_mlp")


def train_model(
    inputs: np.ndarray, labels: np.ndarray, *, epochs: int = 4, seed: int = 7
) -> keras.Model:
    """Build and fit the MLP; deterministic for a given seed on one machine."""
    keras.utils.set_random_seed(seed)
    model = build_model(inputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    model.fit(
        inputs.astype("float32"),
        labels.astype("float32"),
        epochs=epochs,
        batch_size=256,
        shuffle=True,
        verbose=0,
    )
    return model


class ScoringModule(tf.Module):
    """What the SavedModel holds: the Keras model behind a named-input signature."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__(name="fraud_scoring")
        self.model = model
        specs = {n: tf.TensorSpec([None], tf.float32, name=n) for n in MODEL_INPUT_NAMES}
        # A dict-typed input signature gives the SignatureDef one input per key, named
        # after the key: the names TF Serving clients put in PredictRequest.inputs.
        self.serve = tf.function(self._serve, input_signature=[specs])

    def _serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        stacked = tf.stack([inputs[n] for n in MODEL_INPUT_NAMES], axis=1)
        score = self.model(stacked, training=False)
        return {SCORE_OUTPUT: tf.reshape(score, [-1])}


def export_saved_model(model: keras.Model, export_dir: Path) -> None:
    """Write ``model`` as a SavedModel with the ``serving_default`` signature."""
    module = ScoringModule(model)
    tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE_NAME: module.serve})
