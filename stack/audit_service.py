"""The audit service process (audit/service.py) of the local stack."""

from __future__ import annotations

import os
import sys

import requests

from rtd_core.config import PROJECT_ROOT, RtdConfig
from stack.processes import ManagedProcess, StackError, wait_until


class AuditServiceProcess:
    def __init__(self, config: RtdConfig, name: str = "audit") -> None:
        # ``name``: pid, log and config files, so that instances can run side by side.
        self.config = config
        self.process = ManagedProcess(name, config.stack_path / "run",
                                      config.stack_path / "logs")

    def running(self) -> bool:
        return self.process.pid() is not None

    def start(self) -> bool:
        if self.running():
            return False
        config_file = self.config.stack_path / "run" / f"{self.process.name}-config.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        # The service reads the very config the stack was started with, topics included.
        config_file.write_text(self.config.to_json())
        self.process.start([sys.executable, "-m", "audit.service",
                            "--config", str(config_file)],
                           env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=PROJECT_ROOT)
        # It has started once it has opened its store (a second instance on the same
        # store would fail on RocksDB's lock, and say so in the log).
        wait_until(lambda: (self.config.audit_path / "index" / "CURRENT").exists()
                   or not self.running(), 30, "audit service", lambda: self.process.tail())
        if not self.running():
            raise StackError("the audit service exited at start. Log:\n"
                             + self.process.tail(40))
        if self.config.audit.console_port:
            wait_until(lambda: self.console_up() or not self.running(), 30,
                       "audit console", lambda: self.process.tail())
        return True

    def console_up(self) -> bool:
        try:
            requests.get(f"{self.config.audit.console_url}/metrics", timeout=1)
        except requests.RequestException:
            return False
        return True

    def stop(self) -> bool:
        # SIGTERM lets it archive and report what it holds; SIGKILL after is still safe.
        return self.process.stop(timeout_s=30)
