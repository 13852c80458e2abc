"""Versioned model store: TF Serving's file-system source and "latest" version policy.

The base path holds one directory per version (``<base>/1``, ``<base>/2``, ...), each a
SavedModel. A poll thread lists them every ``poll_interval_s`` (TF Serving's
``file_system_poll_wait_seconds``); the highest number is the aspired version. A new
version is loaded and warmed up (one predict on a dummy batch, so the first real request
does not pay for graph initialisation) while the old one keeps serving; then traffic
switches and the old one is unloaded once its in-flight requests finish, as TF Serving's
availability-preserving policy does. Dot-names (staging dirs of an atomic publish) and
non-numeric names are ignored.

Differences from TF Serving, on purpose: a version directory counts only once its
``saved_model.pb`` exists (a half-copied directory is not attempted yet), failed loads
are retried on the next polls (``max_load_retries``) instead of after a minute, and an
empty base path keeps the loaded version serving instead of unloading everything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.model_signature import SIGNATURE_NAME
from serving.tf_protos import types_pb2

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"
# TF's own init signature is listed in the SignatureDefMap but is not a predict endpoint.
INIT_OP_SIGNATURE = "__saved_model_init_op"
_WARMUP_ROWS = 2
_UNLOAD_DRAIN_S = 30.0


class VersionState(IntEnum):
    """tensorflow.serving.ModelVersionStatus.State, same numbers."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error: str = ""  # empty: OK


class ServableNotFound(LookupError):
    """No loaded version matches the request (gRPC NOT_FOUND)."""


class UnknownVersionLabel(ValueError):
    """A version label the store does not define (gRPC INVALID_ARGUMENT, as TF Serving)."""


class LoadedModel(Protocol):
    """What the server needs from a loaded version."""

    @property
    def signature_defs(self) -> Mapping[str, Any]:
        """Signature name -> tensorflow.SignatureDef, as in the SavedModel's MetaGraphDef."""
        ...

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """One call of the signature on a whole batch."""
        ...


def list_versions(base_path: Path) -> list[int]:
    """Version numbers present under ``base_path``, ascending."""
    if not base_path.is_dir():
        return []
    versions = []
    for child in base_path.iterdir():
        name = child.name
        if name.isascii() and name.isdigit() and (child / SAVED_MODEL_FILE).is_file():
            versions.append(int(name))
    return sorted(versions)


def read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """The ``serve`` MetaGraph's SignatureDefs, read from ``saved_model.pb`` (no TF runtime)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / SAVED_MODEL_FILE).read_bytes())
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{version_dir}: no MetaGraph tagged {SERVE_TAG!r}")


_NUMPY_DTYPES: dict[int, type[np.generic]] = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
}


def numpy_dtype(dtype: int) -> type[np.generic]:
    if dtype not in _NUMPY_DTYPES:
        raise ValueError(f"unsupported dtype {types_pb2.DataType.Name(dtype)}")
    return _NUMPY_DTYPES[dtype]


class TfSavedModel:
    """A SavedModel version loaded with ``tf.saved_model.load``."""

    def __init__(self, version_dir: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self._signature_defs = read_signature_defs(version_dir)
        loaded = tf.saved_model.load(str(version_dir), tags=[SERVE_TAG])
        self._loaded = loaded  # keeps the variables the signature functions capture alive
        self._functions = {
            name: loaded.signatures[name]
            for name in self._signature_defs
            if name != INIT_OP_SIGNATURE and name in loaded.signatures
        }

    @property
    def signature_defs(self) -> Mapping[str, Any]:
        return self._signature_defs

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        fn = self._functions[signature_name]
        result = fn(**{k: self._tf.constant(v) for k, v in inputs.items()})
        return {name: result[name].numpy() for name in outputs}


def warm_up(model: LoadedModel) -> None:
    """One predict on a dummy batch of the default signature (or the first one)."""
    names = [n for n in model.signature_defs if n != INIT_OP_SIGNATURE]
    if not names:
        raise ValueError("the SavedModel has no signatures to serve")
    name = SIGNATURE_NAME if SIGNATURE_NAME in names else names[0]
    signature = model.signature_defs[name]
    inputs = {
        alias: np.zeros(_WARMUP_ROWS, dtype=numpy_dtype(info.dtype))
        for alias, info in signature.inputs.items()
    }
    model.run(name, inputs, list(signature.outputs))


class _Servable:
    """A loaded version plus the count of requests currently using it."""

    def __init__(self, version: int, model: LoadedModel) -> None:
        self.version = version
        self.model = model
        self.in_flight = 0
        self.idle = threading.Condition()

    def enter(self) -> None:
        with self.idle:
            self.in_flight += 1

    def leave(self) -> None:
        with self.idle:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.notify_all()

    def drain(self, timeout_s: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.in_flight == 0, timeout=timeout_s)


@dataclass(frozen=True)
class ServableHandle:
    version: int
    model: LoadedModel


Loader = Callable[[Path], LoadedModel]


class ModelStore:
    """One model's versions under ``base_path``; serves the latest loaded one."""

    def __init__(
        self,
        name: str,
        base_path: Path,
        *,
        poll_interval_s: float = 2.0,
        loader: Loader = TfSavedModel,
        max_load_retries: int = 5,
    ) -> None:
        self.name = name
        self.base_path = base_path
        self.poll_interval_s = poll_interval_s
        self._loader = loader
        self._max_load_retries = max_load_retries
        self._lock = threading.Lock()
        self._serving: _Servable | None = None
        self._states: dict[int, VersionStatus] = {}
        self._failed_attempts: dict[int, int] = {}
        self._poll_lock = threading.Lock()
        self._warned_empty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Load what is there now (blocking, like TF Serving's start-up), then keep polling."""
        self.poll_once()
        self._thread = threading.Thread(
            target=self._poll_loop, name="model-store-poll", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_interval_s + _UNLOAD_DRAIN_S)
        with self._lock:
            old, self._serving = self._serving, None
        if old is not None:
            self._unload(old)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll_once()
            except Exception:  # a poll failure must not kill the poller
                log.exception("model %s: poll of %s failed", self.name, self.base_path)

    # --- polling / loading -----------------------------------------------------------
    def poll_once(self) -> None:
        """List versions; load the aspired (latest) one if it is not the one serving."""
        with self._poll_lock:
            versions = list_versions(self.base_path)
            if not versions:
                if not self._warned_empty:  # once, not every poll interval
                    self._warned_empty = True
                    log.warning("model %s: no versions found under %s", self.name, self.base_path)
                return
            self._warned_empty = False
            aspired = versions[-1]
            current = self._serving
            if current is not None and current.version == aspired:
                return
            if self._failed_attempts.get(aspired, 0) > self._max_load_retries:
                return
            self._load(aspired)

    def _set_state(self, version: int, state: VersionState, error: str = "") -> None:
        with self._lock:
            self._states[version] = VersionStatus(version, state, error)
        log.info(
            "model %s version %d: %s%s",
            self.name,
            version,
            state.name,
            f" ({error})" if error else "",
        )

    def _load(self, version: int) -> None:
        if version not in self._states or self._states[version].state is VersionState.END:
            self._set_state(version, VersionState.START)
        self._set_state(version, VersionState.LOADING)
        try:
            model = self._loader(self.base_path / str(version))
            warm_up(model)
        except Exception as exc:  # noqa: BLE001 - any load failure: keep serving the old version
            attempts = self._failed_attempts.get(version, 0) + 1
            self._failed_attempts[version] = attempts
            detail = f"{type(exc).__name__}: {exc}"
            if attempts > self._max_load_retries:
                self._set_state(version, VersionState.END, f"load failed: {detail}")
            else:
                log.warning(
                    "model %s version %d: load attempt %d failed, retrying next poll: %s",
                    self.name,
                    version,
                    attempts,
                    detail,
                )
            return
        self._failed_attempts.pop(version, None)
        with self._lock:
            old, self._serving = self._serving, _Servable(version, model)
        self._set_state(version, VersionState.AVAILABLE)
        if old is not None:
            self._unload(old)

    def _unload(self, servable: _Servable) -> None:
        self._set_state(servable.version, VersionState.UNLOADING)
        if not servable.drain(_UNLOAD_DRAIN_S):
            log.warning(
                "model %s version %d: unloading with %d requests still in flight",
                self.name,
                servable.version,
                servable.in_flight,
            )
        self._set_state(servable.version, VersionState.END)

    # --- serving ---------------------------------------------------------------------
    def resolve_label(self, label: str) -> int:
        """Version labels: ``stable`` is the serving version; no ``canary`` under "latest"."""
        with self._lock:
            serving = self._serving
        if label == "stable" and serving is not None:
            return serving.version
        if label == "stable":
            raise ServableNotFound(f"Servable not found for request: Latest({self.name})")
        raise UnknownVersionLabel(f"Unrecognized servable version label: {label}")

    @contextmanager
    def acquire(self, version: int | None = None) -> Iterator[ServableHandle]:
        """The serving version (or ``version`` if it is the one loaded), held for a request."""
        with self._lock:
            servable = self._serving
            if servable is None or (version is not None and servable.version != version):
                what = (
                    f"Latest({self.name})"
                    if version is None
                    else f"Specific({self.name}, {version})"
                )
                raise ServableNotFound(f"Servable not found for request: {what}")
            servable.enter()
        try:
            yield ServableHandle(servable.version, servable.model)
        finally:
            servable.leave()

    def statuses(self) -> list[VersionStatus]:
        """Every version seen so far, highest first (TF Serving's ServableStateMonitor view)."""
        with self._lock:
            return sorted(self._states.values(), key=lambda s: s.version, reverse=True)

    @property
    def serving_version(self) -> int | None:
        with self._lock:
            return None if self._serving is None else self._serving.version
