"""The exactly-once sinks' table options (flink_jobs/kafka_tables.py)."""

from __future__ import annotations

import re

import pytest

from flink_jobs.kafka_tables import sink_ddl
from rtd_core.config import load_config

pytestmark = pytest.mark.unit


def _options(ddl: str) -> dict[str, str]:
    return dict(re.findall(r"'([^']+)' = '([^']*)'", ddl))


def test_sinks_are_exactly_once_with_pooled_transaction_ids_by_default() -> None:
    options = _options(sink_ddl(load_config(), "t", "decisions", "rtd-job-decisions"))
    assert options["sink.delivery-guarantee"] == "exactly-once"
    assert options["sink.transactional-id-prefix"] == "rtd-job-decisions"
    assert options["sink.transaction-naming-strategy"] == "POOLING"
    assert options["properties.transaction.timeout.ms"] == "900000"


def test_the_connectors_incrementing_naming_stays_selectable() -> None:
    config = load_config(kafka={"transaction_naming": "incrementing"})
    options = _options(sink_ddl(config, "t", "decisions", "p"))
    assert options["sink.transaction-naming-strategy"] == "INCREMENTING"


def test_sinks_batch_their_output_until_the_commit_flushes_it() -> None:
    options = _options(sink_ddl(load_config(), "t", "decisions", "p"))
    assert options["properties.linger.ms"] == "10"
    assert options["properties.batch.size"] == "262144"
    config = load_config(kafka={"sink_linger_ms": 5, "sink_batch_bytes": 16_384})
    options = _options(sink_ddl(config, "t", "decisions", "p"))
    assert (options["properties.linger.ms"], options["properties.batch.size"]) == ("5", "16384")
