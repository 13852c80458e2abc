"""The code base stays ruff clean (pyproject.toml's rules, the pinned ruff)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtd_core.config import PROJECT_ROOT

pytestmark = pytest.mark.unit


def test_ruff_finds_nothing() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed" in result.stdout
