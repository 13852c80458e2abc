"""The TaskManager's end of the pipe to the model relay (serving/predict_relay.py): the
child process, requests written to its stdin, answers read from its stdout. Nothing
here calls gRPC: the task thread must never run it (serving/pipelined_batch_client.py
says why)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from rtd_core.config import ServingConfig
from serving.predict_calls import ModelCallError
from serving.predict_relay import ANSWER_HEADER, READY_ID, REQUEST_HEADER

# How long a starting relay may take to import gRPC and open its channel.
RELAY_START_S = 30.0


def python_executable() -> str:
    """An interpreter for the relay. In thread mode ``sys.executable`` may name the JVM
    (PEMJA embeds Python), so the base installation's binary is the fallback."""
    if os.path.basename(sys.executable).startswith("python") and os.access(sys.executable,
                                                                           os.X_OK):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for prefix in (sys.exec_prefix, sys.base_exec_prefix):
        candidate = os.path.join(prefix, "bin", version)
        if os.access(candidate, os.X_OK):
            return candidate
    return "python3"


class RelayGone(Exception):
    pass


class Relay:
    """The relay child process and the bytes of answers read from it so far."""

    def __init__(self, serving: ServingConfig, concurrency: int) -> None:
        # The child imports this package: give it the interpreter's own search path
        # (in thread mode PYTHONPATH and --pyFiles directories, not a virtualenv).
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        self.process = subprocess.Popen(
            [python_executable(), "-m", "serving.predict_relay", serving.model_dump_json(),
             str(concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in = self.process.stdin.fileno()
        self.out = self.process.stdout.fileno()
        os.set_blocking(self.out, False)
        self._buffer = b""
        deadline = time.monotonic() + RELAY_START_S
        while not self._ready():
            if time.monotonic() > deadline:
                self.close()
                raise RelayGone("model relay did not start")

    def _ready(self) -> bool:
        answers = self.answers(0.05)
        return any(call_id == READY_ID for call_id, _, _ in answers)

    def send(self, call_id: int, timeout_s: float, wait_for_ready: bool,
             request: bytes) -> None:
        data = memoryview(REQUEST_HEADER.pack(call_id, timeout_s, int(wait_for_ready),
                                              len(request)) + request)
        try:
            while data:
                data = data[os.write(self._in, data):]
        except OSError as exc:
            raise RelayGone(f"model relay not accepting calls: {exc}") from exc

    def answers(self, wait_s: float) -> list[tuple[int, int, bytes]]:
        """(call id, status, payload) of every complete answer, waiting up to ``wait_s``
        for the first bytes; raises ``RelayGone`` once the relay has exited."""
        if wait_s > 0:
            select.select([self.out], [], [], wait_s)
        while True:
            try:
                chunk = os.read(self.out, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                raise RelayGone("model relay exited")
            self._buffer += chunk
        out: list[tuple[int, int, bytes]] = []
        buffer, size = self._buffer, ANSWER_HEADER.size
        start = 0
        while len(buffer) - start >= size:
            call_id, status, length = ANSWER_HEADER.unpack_from(buffer, start)
            if len(buffer) - start - size < length:
                break
            out.append((call_id, status, buffer[start + size:start + size + length]))
            start += size + length
        self._buffer = buffer[start:]
        return out

    def close(self) -> None:
        process = self.process
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.close()
            process.stdout.close()
            process.wait(timeout=2)
        except Exception:  # noqa: BLE001 - closing: it must go either way
            process.kill()
            process.wait(timeout=2)


def rpc_error(payload: bytes) -> ModelCallError:
    code, _, details = payload.decode("utf-8", errors="replace").partition("\n")
    detail = f"{code}: {details}"
    if code == "DEADLINE_EXCEEDED":
        return ModelCallError("timeout", detail)
    if code == "UNAVAILABLE":
        return ModelCallError("unavailable", detail)
    return ModelCallError("error", detail)
