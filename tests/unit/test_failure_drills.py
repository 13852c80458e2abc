"""The failure drills' arithmetic (bench/drills.py): the audit by event id, recovery
times around each action, the windows of the chart, and the report's section."""

from __future__ import annotations

import pytest

from bench.drills import audit_ids, publish_section, recovery_times, windows

pytestmark = pytest.mark.unit


def test_audit_counts_lost_duplicated_and_unexpected():
    assert audit_ids({"a", "b", "c"}, ["a", "b", "b", "x"]) == {
        "expected": 3, "received": 4, "lost": 1, "duplicated": 1, "unexpected": 1}
    assert audit_ids({"a"}, ["a"])["lost"] == 0


def test_recovery_is_the_gap_around_each_action():
    decided = [1_000, 2_000, 3_000, 9_500, 10_000, 30_000, 41_000]
    assert recovery_times(decided, [3_500, 31_000]) == [
        {"gap_s": 6.5, "since_action_s": 6.0}, {"gap_s": 11.0, "since_action_s": 10.0}]
    (never,) = recovery_times(decided, [50_000])
    assert never["gap_s"] == float("inf")


def test_windows_rate_and_latency():
    rows = windows([0, 1_000, 2_000, 11_000], [10.0, 20.0, 30.0, 40.0], 0, width_s=5)
    assert [r["t_s"] for r in rows] == [0, 5, 10]
    assert [r["per_s"] for r in rows] == [0.6, 0.0, 0.2]
    assert rows[1]["p99_ms"] is None and rows[2]["p50_ms"] == 40.0


def test_publish_replaces_only_its_own_section(tmp_path):
    doc = tmp_path / "RELIABILITY.md"
    doc.write_text("# Reliability drills\n\nintro\n")
    publish_section(doc, "broker-restart", "first")
    publish_section(doc, "taskmanager-kill", "kills")
    publish_section(doc, "broker-restart", "second")
    text = doc.read_text()
    assert "intro" in text and "kills" in text and "second" in text and "first" not in text
    assert text.count("<!-- drill:broker-restart -->") == 1


def test_longest_stall_counts_from_the_action():
    from bench.drills import longest_stall

    assert longest_stall([1_000, 2_000, 9_000, 9_500], 1_500) == 7.0
    assert longest_stall([1_000, 2_000], 5_000) is None
    assert longest_stall([1_000, 8_000], 2_000) == 6.0


def _context(lags, settings, logged):
    from bench.drills.core import DrillContext

    reads = iter(lags)
    return DrillContext(config=None, cluster=None, job_id="j", settings=settings,  # type: ignore[arg-type]
                        log=logged.append, lag=lambda _config: next(reads))


def test_the_first_action_waits_for_the_job_to_catch_up(monkeypatch):
    """A job still working off its start's backlog is not acted on: the warm-up goes on
    until the input the job has not committed is within CAUGHT_UP_S of input."""
    from bench.drills import core

    monkeypatch.setattr(core, "CATCH_UP_POLL_S", 0.0)
    settings = core.DrillSettings(rate=100, warmup_s=0, caught_up_readings=1)
    logged: list[str] = []
    _context([5_000, 900, 201, 200, 0], settings, logged).warm_up()
    assert logged == ["warm-up done, caught up: 200 input records not yet committed by the job"]


def test_the_first_action_waits_until_the_job_stays_caught_up(monkeypatch):
    """One reading within CAUGHT_UP_S can come while the backlog of the start is still
    being worked off: a reading past it starts the count again."""
    from bench.drills import core

    monkeypatch.setattr(core, "CATCH_UP_POLL_S", 0.0)
    settings = core.DrillSettings(rate=100, warmup_s=0, caught_up_readings=3)
    logged: list[str] = []
    _context([150, 120, 900, 190, 180, 170, 0], settings, logged).warm_up()
    assert logged == ["warm-up done, caught up: 170 input records not yet committed by the job"]


def test_a_job_that_never_catches_up_is_acted_on_after_the_longest_wait(monkeypatch):
    from bench.drills import core

    monkeypatch.setattr(core, "CATCH_UP_POLL_S", 0.0)
    settings = core.DrillSettings(rate=100, warmup_s=0, catch_up_max_s=0.05)
    logged: list[str] = []
    _context(iter(lambda: 10_000, None), settings, logged).warm_up()
    assert logged == [("warm-up done, not caught up after 0.05 s more; acting anyway: "
                       "10000 input records not yet committed by the job")]
