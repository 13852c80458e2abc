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


def _bench_result(folder, run_id: str, peak, mtime: float) -> None:
    import json
    import os

    folder.mkdir(parents=True)
    result = {"run_id": run_id, "date": "2026-12-03 20:03 UTC",
              "systems": {"ours": {"peak_decisions_per_s": peak}}}
    (folder / "result.json").write_text(json.dumps(result))
    os.utime(folder / "result.json", (mtime, mtime))


def test_a_drill_takes_its_peak_from_the_newest_bench_result_made_here(tmp_path) -> None:
    from bench.drills.core import latest_peak

    assert latest_peak(tmp_path) is None
    _bench_result(tmp_path / "a", "aaaaaa", 900.0, 1_000.0)
    _bench_result(tmp_path / "b", "bbbbbb", 708.2, 2_000.0)
    _bench_result(tmp_path / "c", "cccccc", None, 3_000.0)  # a fixed-rate run: no peak
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "result.json").write_text("{not json")
    found = latest_peak(tmp_path)
    assert found is not None
    assert (found.per_s, found.run) == (708.2, "bbbbbb, 2026-12-03 20:03 UTC")
    assert found.path == tmp_path / "b" / "result.json"
