"""The benchmark's pure parts: percentiles, the latency join, step judgement, the report."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from bench.consumers import decision_id_of
from bench.latency import DecisionMeta, first_receipts, join_phase
from bench.presets import PRESETS, keeps_up, step_rates
from bench.report import (
    SECTION_TITLE,
    append_to_benchmarks,
    markdown_section,
    own_resources,
    throughput_ratios,
)
from bench.stats import latency_summary, linear_slope, per_second_counts, percentile, ratio
from decisioning.decision import decision_id_for

pytestmark = pytest.mark.unit


# -- percentiles ------------------------------------------------------------------------

def test_nearest_rank_percentiles_of_one_to_a_hundred():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100  # rank ceil(99.9) = 100
    assert percentile(values, 100) == 100


def test_p99_9_of_a_thousand_values_is_the_999th_not_the_maximum():
    values = list(range(1, 1001))
    assert percentile(values, 99.9) == 999
    assert percentile(values, 99) == 990


def test_percentile_is_an_observed_value_never_an_interpolation():
    assert percentile([10, 20], 50) == 10
    assert percentile([10, 20], 51) == 20
    assert percentile([7], 99.9) == 7


@pytest.mark.parametrize("pct", [0, -1, 100.1])
def test_percentile_rejects_out_of_range(pct):
    with pytest.raises(ValueError):
        percentile([1, 2, 3], pct)


def test_percentile_of_nothing_is_an_error_and_the_summary_says_none():
    with pytest.raises(ValueError):
        percentile([], 50)
    summary = latency_summary([])
    assert summary["count"] == 0 and summary["p99"] is None


def test_latency_summary_sorts_its_input():
    summary = latency_summary([30, 10, 20, 40])
    assert (summary["p50"], summary["max"], summary["count"], summary["mean"]) == (20, 40, 4, 25)


def test_per_second_counts_buckets_by_whole_seconds_and_ignores_outside():
    start = 1_000_000
    times = [start - 1, start, start + 999, start + 1000, start + 2500, start + 3000]
    assert per_second_counts(times, start, start + 3000) == [2, 1, 1]


def test_linear_slope_and_ratio():
    assert linear_slope([(0, 0), (1, 10), (2, 20)]) == pytest.approx(10)
    assert linear_slope([(1, 5)]) == 0.0
    assert ratio(400, 200) == 2.0
    assert ratio(1, 0) is None and ratio(None, 3) is None


# -- the latency join -------------------------------------------------------------------

def _ids(*events: str) -> dict[str, str]:
    return {e: decision_id_for(e) for e in events}


def test_join_measures_each_latency_from_the_append_time():
    ids = _ids("e1", "e2", "e3")
    appends = {"e1": 1000, "e2": 2000, "e3": 3000}
    uncommitted = {ids["e1"]: 1010, ids["e2"]: 2050}
    committed = {ids["e1"]: 3000}
    meta = {ids["e1"]: DecisionMeta(1005, None, False),
            ids["e2"]: DecisionMeta(2040, "timeout", True)}
    joined = join_phase(["e1", "e2", "e3"], appends, uncommitted, committed, meta)
    assert joined.decision_ms == [10, 50]
    assert joined.commit_visible_ms == [2000]
    assert joined.freshness_ms == [5, 40]
    summary = joined.summary()
    assert summary["missing_uncommitted"] == 1  # e3 was never decided
    assert summary["missing_committed"] == 2
    assert summary["fallback_rate"] == 0.5 and summary["fallbacks"] == {"timeout": 1}
    assert summary["late_share"] == 0.5


def test_join_counts_events_it_cannot_place_in_time():
    joined = join_phase(["lost"], {}, {decision_id_for("lost"): 5}, {}, {})
    assert joined.without_append_time == 1 and joined.decided == 0


def test_join_ignores_decisions_of_other_phases():
    ids = _ids("mine", "other")
    joined = join_phase(["mine"], {"mine": 0, "other": 0},
                        {ids["mine"]: 7, ids["other"]: 1}, {}, {})
    assert joined.decision_ms == [7]


def test_first_receipts_keeps_the_earliest_and_counts_duplicates():
    first, duplicates = first_receipts([("a", 10), ("b", 5), ("a", 8), ("a", 12)])
    assert first == {"a": 8, "b": 5}
    assert duplicates == 2


def test_decision_id_is_sliced_from_the_first_field_and_parsed_otherwise():
    did = decision_id_for("evt-1")
    first = json.dumps({"decision_id": did, "event_id": "evt-1"}, separators=(",", ":"))
    other = json.dumps({"event_id": "evt-1", "decision_id": did})
    assert decision_id_of(first.encode()) == did
    assert decision_id_of(other.encode()) == did


# -- steps ------------------------------------------------------------------------------

def test_a_flat_small_backlog_keeps_up():
    lags = [(t, 40 + (t % 2)) for t in range(1, 9)]
    assert keeps_up(lags, rate=500, tolerance_s=5)


def test_a_growing_backlog_does_not_keep_up():
    lags = [(t, 200 * t) for t in range(1, 9)]  # 200 more undecided events every second
    assert not keeps_up(lags, rate=500, tolerance_s=5)


def test_a_steady_but_huge_backlog_does_not_keep_up():
    lags = [(t, 6_000) for t in range(1, 9)]  # 12 s of input at 500/s
    assert not keeps_up(lags, rate=500, tolerance_s=5)
    assert not keeps_up([], rate=500, tolerance_s=5)


def test_step_rates_grow_geometrically():
    rates = step_rates(PRESETS["short"])
    assert rates[0] == PRESETS["short"].step_start_rate
    assert all(b > a for a, b in pairwise(rates))


# -- report -----------------------------------------------------------------------------

def _result(ours_rate: float, python_rate: float, p99: float) -> dict:
    def system(rate: float, p99_ms: float, cpu_group: str) -> dict:
        quantiles = {"count": 100, "p50": 10.0, "p95": 20.0, "p99": p99_ms, "p99_9": 99.0}
        return {
            "saturated_decisions_per_s": rate * 0.9, "saturated_is_lower_bound": False,
            "peak_decisions_per_s": rate,
            "max_sustainable_rate": rate * 0.8,
            "fixed": {"rate": 100, "decision_latency_ms": quantiles,
                      "commit_visible_latency_ms": {**quantiles, "p99": 900.0},
                      "feature_freshness_ms": quantiles, "fallback_rate": 0.01,
                      "resources": {}},
            "saturated": {"rate": rate, "resources": {
                cpu_group: {"cpu_pct_mean": 80.0, "rss_mib_max": 100.0},
                "others": {"cpu_pct_mean": 30.0, "rss_mib_max": 0.0}}},
        }
    return {
        "run_id": "abc123", "date": "2026-11-23 12:00 UTC", "label": "",
        "command": "rtd bench --preset short", "machine": "2-core, 24 GiB",
        "preset": PRESETS["short"].to_dict(), "overrides": {},
        "systems": {"ours": system(ours_rate, p99, "flink-taskmanager"),
                    "python": system(python_rate, 30.0, "python"),
                    "quix": {"error": "RuntimeError: boom"}},
    }


def test_ratios_are_ours_over_each_system():
    ratios = throughput_ratios(_result(600, 200, 40)["systems"])
    assert ratios["ours"] == 1.0 and ratios["python"] == 3.0 and ratios["quix"] is None


def test_report_has_every_system_the_command_and_the_goals():
    text = markdown_section(_result(600, 200, 40), {"latency CDF": "img/x.png"})
    assert "`rtd bench --preset short`" in text
    assert "| ours (PyFlink job) | 600 (540) |" in text
    assert "| plain Python loop | 200 (180) |" in text
    assert "failed: RuntimeError: boom" in text
    assert "| 3.00 |" in text  # ours ÷ python
    assert "| throughput ours ÷ plain Python | >= 2.0 | 3.00 | yes |" in text
    assert "| p99 decision latency ms (fixed rate) | <= 50 | 40 | yes |" in text
    assert "| decisions/s (peak) | >= 5,000 | 600 | **no** |" in text
    assert "![latency CDF](img/x.png)" in text


def test_report_marks_a_missed_latency_goal():
    text = markdown_section(_result(600, 200, 75), None)
    assert "| p99 decision latency ms (fixed rate) | <= 50 | 75 | **no** |" in text


def test_own_resources_sum_the_systems_process_groups():
    resources = {"flink-taskmanager": {"cpu_pct_mean": 50.0, "rss_mib_max": 1000.0},
                 "flink-python-workers": {"cpu_pct_mean": 70.0, "rss_mib_max": 200.0},
                 "kafka": {"cpu_pct_mean": 10.0, "rss_mib_max": 900.0}}
    assert own_resources("ours", resources) == (120.0, 1200.0)
    assert own_resources("python", resources) == (None, None)


def test_sections_are_appended_under_one_heading(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## Someone else's section\n\nkept\n")
    append_to_benchmarks(doc, "### first\n")
    append_to_benchmarks(doc, "### second\n")
    text = doc.read_text()
    assert text.count(f"## {SECTION_TITLE}") == 1
    assert "kept" in text
    assert text.index("### first") < text.index("### second")


def test_sections_go_before_a_later_heading_of_someone_else(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\n## {SECTION_TITLE}\n\n### old run\n\n## Later section\n\nx\n")
    append_to_benchmarks(doc, "### new run\n")
    text = doc.read_text()
    assert text.index("### old run") < text.index("### new run") < text.index("## Later section")
    assert text.rstrip().endswith("x")


def test_a_missing_file_is_created_with_the_heading(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    append_to_benchmarks(doc, "### run\n")
    text = doc.read_text()
    assert text.startswith("# Benchmarks") and f"## {SECTION_TITLE}" in text
    assert text.index(SECTION_TITLE) < text.index("### run")


def test_pid_files_with_several_lines_yield_every_live_pid(tmp_path):
    import os

    from bench.resources import pids_from_file

    pid_file = tmp_path / "flink--taskexecutor.pid"
    # Flink's daemon scripts append a line per start; the first process may be gone.
    pid_file.write_text(f"999999999\n{os.getpid()}\n")
    assert pids_from_file(pid_file) == [os.getpid()]
    assert pids_from_file(tmp_path / "missing.pid") == []


def test_resource_summary_means_cpu_and_peaks_memory_within_the_window():
    from bench.resources import summarize_resources

    samples = [(1000, "kafka", 10.0, 100 * 2**20), (2000, "kafka", 30.0, 300 * 2**20),
               (3000, "kafka", 90.0, 900 * 2**20)]
    assert summarize_resources(samples, 1000, 3000) == {
        "kafka": {"cpu_pct_mean": 20.0, "rss_mib_max": 300.0}}


def test_flink_window_summary_keeps_what_happened_inside_the_window():
    from bench.flink_metrics import FlinkSamples, summarize_window

    samples = FlinkSamples(
        vertex=[(500, "Card features", {"busyTimeMsPerSecond": 999.0}),
                (1000, "Card features", {"busyTimeMsPerSecond": 400.0,
                                         "backPressuredTimeMsPerSecond": 0.0}),
                (2000, "Card features", {"busyTimeMsPerSecond": 600.0,
                                         "backPressuredTimeMsPerSecond": 100.0})],
        checkpoints={1: {"trigger_ms": 900, "duration_ms": 50, "size_bytes": 1,
                         "status": "COMPLETED"},
                     2: {"trigger_ms": 1100, "duration_ms": 300, "size_bytes": 10,
                         "status": "COMPLETED"},
                     3: {"trigger_ms": 1500, "duration_ms": 700, "size_bytes": 30,
                         "status": "COMPLETED"},
                     4: {"trigger_ms": 1600, "duration_ms": 9000, "size_bytes": 0,
                         "status": "FAILED"}},
    )
    summary = summarize_window(samples, 1000, 2500)
    card = summary["operators"]["Card features"]
    assert card["busyTimeMsPerSecond"] == 500.0
    assert card["backPressuredTimeMsPerSecond"] == 50.0
    assert summary["checkpoints"] == {"completed": 2, "duration_ms_median": 500.0,
                                      "duration_ms_max": 700, "size_bytes_median": 20.0}
