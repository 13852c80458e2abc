"""`rtd explain` and `rtd audit ...` on a store filled in the test (no broker, no service)."""

from __future__ import annotations

import json

import orjson
import pytest
from typer.testing import CliRunner

from audit.archive import ArchiveWriter
from audit.service import archive_path, index_path
from audit.store import AuditStore, KafkaRecord
from bench.audit_traces import decision_and_trace
from rtd.cli import app
from rtd_core.config import load_config

pytestmark = pytest.mark.unit
runner = CliRunner()


@pytest.fixture
def config_file(tmp_path):
    # A broker address nobody listens on: the CLI must answer from the store alone.
    config = load_config(None, stack_dir=str(tmp_path / "stack"),
                         kafka={"bootstrap_servers": "127.0.0.1:9"})
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    return config, path


def fill(config, n: int = 20) -> list[tuple[dict, dict]]:
    pairs = [decision_and_trace(i, card="c-1" if i % 2 else None) for i in range(n)]
    with AuditStore(index_path(config)) as store:
        records = [KafkaRecord(config.kafka.topics.traces, 0, i, orjson.dumps(t))
                   for i, (_, t) in enumerate(pairs)]
        records += [KafkaRecord(config.kafka.topics.decisions, 0, i, orjson.dumps(d))
                    for i, (d, _) in enumerate(pairs[:-1])]  # the last decision is missing
        store.ingest(config.kafka.topics.traces, records,
                     {(config.kafka.topics.traces, 0): n})
        ArchiveWriter(store, archive_path(config)).flush()
    return pairs


def test_explain_answers_from_the_store(config_file):
    config, path = config_file
    decision, trace = fill(config)[3]
    result = runner.invoke(app, ["explain", decision["event_id"], "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert f"Decision {decision['decision_id']}" in result.output
    raw = runner.invoke(app, ["explain", decision["decision_id"], "--json", "--config",
                              str(path)])
    assert json.loads(raw.output) == trace


def test_an_id_not_indexed_says_how_far_the_store_has_got(config_file):
    config, path = config_file
    fill(config)
    result = runner.invoke(app, ["explain", "evt-unknown", "--config", str(path)])
    assert result.exit_code == 1
    assert "not in the audit store" in result.output
    assert f"{config.kafka.topics.traces}[0] next offset 20" in result.output


def test_no_store_yet_says_what_to_do(config_file):
    _config, path = config_file
    result = runner.invoke(app, ["explain", "x", "--config", str(path)])
    assert result.exit_code == 1 and "rtd stack up" in result.output
    result = runner.invoke(app, ["audit", "sql", "SELECT 1", "--config", str(path)])
    assert result.exit_code == 1 and "no Parquet file yet" in result.output


def test_search_sql_and_completeness(config_file):
    config, path = config_file
    pairs = fill(config)
    found = runner.invoke(app, ["audit", "search", "--card", "c-1", "--json", "--config",
                                str(path)])
    ids = [json.loads(line)["event_id"] for line in found.output.splitlines()]
    assert ids == [d["event_id"] for d, _ in pairs if d["card_id"] == "c-1"]
    table = runner.invoke(app, ["audit", "search", "--config", str(path)])
    assert table.exit_code == 2 and "exactly one of --card or --customer" in table.output
    by_sql = runner.invoke(app, ["audit", "sql", "SELECT count(*) AS n FROM decisions",
                                 "--json", "--config", str(path)])
    assert json.loads(by_sql.output) == {"n": 20}
    bad = runner.invoke(app, ["audit", "sql", "SELECT nope FROM decisions", "--config",
                              str(path)])
    assert bad.exit_code == 2 and "SQL error" in bad.output
    report = runner.invoke(app, ["audit", "completeness", "--json", "--config", str(path)])
    assert report.exit_code == 0  # a trace without its decision is listed, not a failure
    assert [e["decision_id"] for e in json.loads(report.output)["traces_without_decision"]] \
        == [pairs[-1][0]["decision_id"]]
