"""The model server process (serving/server.py), over the versioned model base path."""

from __future__ import annotations

import sys

from rtd_core.config import PROJECT_ROOT, RtdConfig
from rtd_core.security import tls_server_files
from stack.processes import ManagedProcess, StackError, port_open, wait_until


class ModelServer:
    def __init__(self, config: RtdConfig) -> None:
        self.config = config
        self.process = ManagedProcess("model-server", config.stack_path / "run",
                                      config.stack_path / "logs")

    def running(self) -> bool:
        s = self.config.serving
        return self.process.pid() is not None and port_open(s.host, s.port)

    def ensure_model(self) -> int:
        from model_training.bootstrap import ensure_bootstrap_model

        return ensure_bootstrap_model(self.config.path(self.config.serving.base_path))

    def start(self, extra_args: tuple[str, ...] = ()) -> bool:
        s = self.config.serving
        if self.process.pid() is not None:
            wait_until(lambda: port_open(s.host, s.port), 60, "model server",
                       lambda: self.process.tail())
            return False
        if port_open(s.host, s.port):
            raise StackError(
                f"port {s.port} is taken by another process: stop it, or set serving.port"
            )
        self.ensure_model()
        self.process.start([
            sys.executable, "-m", "serving.server",
            "--base-path", str(self.config.path(s.base_path)),
            "--model-name", s.model_name,
            "--port", str(s.port),
            "--host", s.host,
            "--poll-interval", str(s.poll_interval_s),
            *self._tls_args(),
            *extra_args,
        ], cwd=PROJECT_ROOT)
        wait_until(lambda: port_open(s.host, s.port) or self.process.pid() is None, 120,
                   "model server", lambda: "Log:\n" + self.process.tail())
        if self.process.pid() is None:
            raise StackError("the model server exited at start. Log:\n" + self.process.tail(40))
        return True

    def _tls_args(self) -> list[str]:
        if not self.config.serving.tls.enabled:
            return []
        cert, key = tls_server_files(self.config.serving)
        return ["--tls-cert", cert, "--tls-key", key]

    def stop(self) -> bool:
        return self.process.stop(timeout_s=20)
