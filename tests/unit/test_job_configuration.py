"""The job-level Flink settings the job carries to any cluster (flink_jobs/decision_job.py)."""

from __future__ import annotations

import pytest

from flink_jobs.decision_job import job_configuration
from rtd_core.config import load_config

pytestmark = pytest.mark.unit

COMPACTION = "state.backend.rocksdb.compaction.style"
TIMERS = "state.backend.rocksdb.timer-service.factory"


def test_rocksdb_compaction_and_timer_placement_follow_the_config() -> None:
    default = job_configuration(load_config(None))
    assert default.get_string("state.backend.type", "") == "rocksdb"
    assert default.get_string(COMPACTION, "") == "UNIVERSAL"
    assert default.get_string(TIMERS, "") == "HEAP"
    chosen = job_configuration(load_config(None, flink={"rocksdb_compaction_style": "LEVEL",
                                                        "timer_service": "ROCKSDB"}))
    assert chosen.get_string(COMPACTION, "") == "LEVEL"
    assert chosen.get_string(TIMERS, "") == "ROCKSDB"


def test_an_unknown_compaction_style_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="rocksdb_compaction_style"):
        load_config(None, flink={"rocksdb_compaction_style": "FIFO"})
