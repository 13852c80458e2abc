"""A TF-free stand-in for a loaded SavedModel version, and a base path of fake versions."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Registers the bare tensorflow package before any tensorflow.* import (no TF runtime).
from serving.tf_protos import types_pb2

# isort: split
from tensorflow.core.protobuf import meta_graph_pb2

INPUTS = ("amount", "count")
OUTPUTS = ("score", "logit")


def signature_def() -> Any:
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for name in INPUTS:
        info = signature.inputs[name]
        info.name, info.dtype = f"serving_default_{name}:0", types_pb2.DT_FLOAT
        info.tensor_shape.dim.add(size=-1)
    for name in OUTPUTS:
        info = signature.outputs[name]
        info.name, info.dtype = f"StatefulPartitionedCall:{OUTPUTS.index(name)}", types_pb2.DT_FLOAT
        info.tensor_shape.dim.add(size=-1)
    return signature


class FakeModel:
    """score = amount / 1000 + version / 100; logit = count. Records every run."""

    def __init__(self, version_dir: Path, gate: threading.Event | None = None) -> None:
        if (version_dir / "broken").exists():
            raise OSError(f"cannot read {version_dir}")
        if gate is not None:
            gate.wait(10)
        self.version = int(version_dir.name)
        self.runs: list[tuple[str, dict[str, np.ndarray]]] = []
        self._signatures = {"serving_default": signature_def()}

    @property
    def signature_defs(self) -> Mapping[str, Any]:
        return self._signatures

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.runs.append((signature_name, dict(inputs)))
        if inputs["amount"].shape != inputs["count"].shape:
            raise ValueError("inputs have different batch sizes")
        result = {
            "score": (inputs["amount"] / 1000 + self.version / 100).astype(np.float32),
            "logit": inputs["count"].astype(np.float32),
        }
        return {name: result[name] for name in outputs}


def add_version(base: Path, version: int, *, broken: bool = False) -> Path:
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    if broken:
        (path / "broken").write_bytes(b"")
    return path
