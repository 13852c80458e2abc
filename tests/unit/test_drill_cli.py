"""`rtd drill` refuses, saying what to start, when its config's stack is down."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rtd.cli import app
from rtd_core.config import load_config

pytestmark = pytest.mark.unit


def test_a_drill_on_a_stack_that_is_down_says_how_to_start_it(tmp_path) -> None:
    # Ports nobody listens on, a stack folder with no processes.
    config = load_config(None, stack_dir=str(tmp_path / "stack"),
                         kafka={"bootstrap_servers": "127.0.0.1:9"},
                         flink={"rest_port": 10}, serving={"port": 11})
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    result = CliRunner().invoke(app, ["drill", "model-chaos", "--config", str(path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Kafka, Flink, the model server of this config's stack" in text
    assert f"rtd stack up --config {path}" in text
    assert "Traceback" not in result.output
