"""Failure drills for the model server: injected latency and an error rate.

Off by default. Start-up flags set the baseline (``--latency-ms``, ``--error-rate``,
``--error-code``); a JSON control file overrides it at run time without a restart:

    {"latency_ms": 400, "error_rate": 0.2, "error_code": "UNAVAILABLE"}

Keys left out fall back to the flags; deleting the file returns to the flags. The server
re-reads the file (if its mtime changed) at most once per poll interval, on the request
path, so a drill takes effect within one poll interval. The default file is
``<base-path>/.drill.json``: beside the versions, dot-named so the version scan skips it,
and reachable by anyone who can publish a model. ``write_drill_file`` writes it
atomically for tests and operator tooling.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

DRILL_FILE_NAME = ".drill.json"


@dataclass(frozen=True)
class DrillSettings:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_code: str = "INTERNAL"  # a grpc.StatusCode name

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
        if self.error_code not in grpc.StatusCode.__members__ or self.error_code == "OK":
            raise ValueError(
                f"error_code must be a non-OK grpc.StatusCode name, got {self.error_code}"
            )

    @property
    def status_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.error_code]

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or self.error_rate > 0


def write_drill_file(path: Path, settings: DrillSettings | None) -> None:
    """Publish drill settings atomically; ``None`` removes the file (back to the flags)."""
    if settings is None:
        path.unlink(missing_ok=True)
        return
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(asdict(settings)))
    staging.replace(path)


class DrillControl:
    """The drill settings in force: the flags, overridden by the control file if present."""

    def __init__(
        self,
        baseline: DrillSettings,
        control_file: Path | None,
        refresh_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._baseline = baseline
        self._file = control_file
        self._refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._current = baseline
        self._checked_at = float("-inf")
        self._seen_mtime: float | None = None

    def current(self) -> DrillSettings:
        now = self._clock()
        if self._file is None or now - self._checked_at < self._refresh_interval_s:
            return self._current
        with self._lock:
            if now - self._checked_at >= self._refresh_interval_s:
                self._checked_at = now
                self._refresh()
            return self._current

    def _refresh(self) -> None:
        assert self._file is not None
        try:
            mtime: float | None = self._file.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._seen_mtime:
            return
        self._seen_mtime = mtime
        settings = self._baseline
        if mtime is not None:
            try:
                overrides: dict[str, Any] = json.loads(self._file.read_text())
                settings = replace(self._baseline, **overrides)
            except (OSError, ValueError, TypeError) as exc:
                log.error("drill file %s ignored, keeping %s: %s", self._file, self._current, exc)
                return
        if settings != self._current:
            log.warning(
                "drills now %s (from %s)", settings, self._file if mtime is not None else "flags"
            )
        self._current = settings

    def injected_failure(self, settings: DrillSettings) -> grpc.StatusCode | None:
        """The status code to fail this request with, or None to serve it."""
        if settings.error_rate > 0 and self._rng.random() < settings.error_rate:
            return settings.status_code
        return None
