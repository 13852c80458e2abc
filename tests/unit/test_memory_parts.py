"""The soak's split of native memory by part: which Flink metrics feed which figure
(bench/flink_metrics.py), and the growth per part the soak's judge reports."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.drills.core import Action, DrillSettings
from bench.drills.judges import Outputs, soak
from bench.flink_metrics import FlinkSampler, memory_figure

pytestmark = pytest.mark.unit
OP = "Features__scoring__decision"


def test_memory_figures_by_metric_id():
    assert memory_figure(f"{OP}.card_features-v2.rocksdb_block-cache-usage") == (
        "rocksdb_block-cache-usage", True)  # one cache per slot: max, not sum
    assert memory_figure(f"{OP}.card_features-v2.rocksdb_cur-size-all-mem-tables") == (
        "rocksdb_cur-size-all-mem-tables", False)
    assert memory_figure(f"{OP}.rtd.memory.malloc_free_kib") == ("memory.malloc_free_kib", False)
    assert memory_figure(f"{OP}.rtd.card_features.keys_tracked") == (
        "card_features.keys_tracked", False)
    assert memory_figure(f"{OP}.rtd.card_features.working_set_miss_us") == (
        "card_features.working_set_miss_us", False)
    assert memory_figure(f"{OP}.rtd.card_features.working_set_hits") is None
    assert memory_figure("busyTimeMsPerSecond") is None


def test_sampler_sums_column_families_but_not_the_shared_block_cache():
    listed = [f"{OP}.a.rocksdb_block-cache-usage", f"{OP}.b.rocksdb_block-cache-usage",
              f"{OP}.a.rocksdb_cur-size-all-mem-tables", f"{OP}.b.rocksdb_cur-size-all-mem-tables",
              f"{OP}.rtd.memory.malloc_in_use_kib", f"{OP}.numRecordsIn"]
    values = {listed[0]: 100, listed[1]: 100, listed[2]: 10, listed[3]: 20, listed[4]: 7}
    sampler = FlinkSampler("http://unused", "job", memory=True)
    sampler._vertices = [("v1", "features")]

    def fake_get(path: str):
        if "?get=" not in path:
            return [{"id": i} for i in listed]
        asked = path.split("?get=")[1].split("&")[0].split(",")
        assert f"{OP}.numRecordsIn" not in asked
        return [{"id": i, "sum": values[i]} for i in asked]

    sampler._get = fake_get
    sampler._sample_memory(1_000)
    assert sampler.samples.memory == [(1_000, {"rocksdb_block-cache-usage": 100.0,
                                               "rocksdb_cur-size-all-mem-tables": 30.0,
                                               "memory.malloc_in_use_kib": 7.0})]


def test_soak_reports_each_part_s_growth_over_the_second_half():
    start = 1_000_000
    settings = DrillSettings(warmup_s=0, soak_minutes=10)
    ctx = SimpleNamespace(settings=settings, actions=[Action(start, "soak begins")],
                          config=SimpleNamespace(serving=SimpleNamespace(timeout_ms=250)))
    minutes = range(11)
    out = Outputs([], [], [], [], {})
    out.memory = [(m * 60.0, 1000.0 + 2 * m, 400.0, [1]) for m in minutes]  # 2 MiB/min
    # The block cache fills in the first half and stays; the key sets grow all along.
    out.memory_parts = [(start + m * 60_000, {"rocksdb_block-cache-usage": min(m, 5) * 2**20,
                                              "card_features.keys_tracked": 1000.0 * m})
                        for m in minutes]
    out.checkpoint_state = [(start + m * 60_000, (100 + 2 * m) * 2**20) for m in minutes]
    checks, figures = soak(out, ctx)
    parts = figures["parts_per_min_second_half"]
    assert parts["rocksdb_block-cache-usage"] == pytest.approx(0.0, abs=1e-6)
    assert parts["card_features.keys_tracked"] == pytest.approx(1000.0)
    assert figures["checkpoint_state_mib_per_min_second_half"] == pytest.approx(2.0)
    assert not checks["RSS grows <= 1 MiB/min over the second half"]
    assert figures["rss_mib_per_min_second_half"] == pytest.approx(2.0)


def test_soak_fails_a_p99_that_is_stable_but_over_the_budget(monkeypatch):
    # A job uniformly behind its input: every 5-min window's p99 near 1 s. The stability
    # check cannot see it; the budget check (2 deadlines of 250 ms) must.
    from bench.drills import judges

    monkeypatch.setattr(judges, "_decided_ms", lambda t: t["decided"])
    monkeypatch.setattr(judges, "_decision_ms", lambda t: t["ms"])
    start = 1_000_000
    ctx = SimpleNamespace(settings=DrillSettings(warmup_s=0, soak_minutes=20),
                          actions=[Action(start, "soak begins")],
                          config=SimpleNamespace(serving=SimpleNamespace(timeout_ms=250)))

    def verdict(ms_at):
        out = Outputs([], [], [{"decided": start + i * 1_000, "ms": ms_at(i)}
                               for i in range(20 * 60)], [], {})
        checks, figures = soak(out, ctx)
        return ({k: v for k, v in checks.items() if k.startswith("p99")}, figures)

    slow, figures = verdict(lambda i: 900 + i % 100)
    assert figures["budget_ms"] == 500 and len(figures["p99_ms_per_5_min"]) == 4
    assert slow["p99 stable: no later 5-min window over twice the earlier median (or 100 ms)"]
    assert not slow["p99 <= 500 ms in every 5-min window"]
    quick, _ = verdict(lambda i: 40 + i % 50)
    assert all(quick.values())
    one_bad_window, _ = verdict(lambda i: 2_000 if i > 15 * 60 else 40)
    assert not any(one_bad_window.values())


def test_soak_fails_a_job_behind_its_input_however_quick_it_is_inside(monkeypatch):
    # Records waiting in Kafka come before "received": in the job every decision takes
    # 20 ms, but from the event's append they come later and later.
    from bench.drills import judges

    monkeypatch.setattr(judges, "_decided_ms", lambda t: t["decided"])
    monkeypatch.setattr(judges, "_decision_ms", lambda t: 20)
    start = 1_000_000
    ctx = SimpleNamespace(settings=DrillSettings(warmup_s=0, soak_minutes=10),
                          actions=[Action(start, "soak begins")],
                          config=SimpleNamespace(serving=SimpleNamespace(timeout_ms=250)))
    check = "kept up: p99 event append -> decision append <= 500 ms in every 5-min window"

    def verdict(wait_at):
        events = range(10 * 60)
        out = Outputs([{"event_id": f"e{i}", "decided_at": start + i * 1_000} for i in events],
                      [start + i * 1_000 + wait_at(i) for i in events],
                      [{"decided": start + i * 1_000} for i in events], [],
                      {f"e{i}": start + i * 1_000 for i in events})
        checks, figures = soak(out, ctx)
        return checks, figures

    behind, figures = verdict(lambda i: 30 * i)  # 30 ms more behind each second
    assert behind["p99 <= 500 ms in every 5-min window"] and not behind[check]
    # By append time: the last decisions land 18 s after the tenth minute, in a third window.
    assert len(figures["append_p99_ms_per_5_min"]) == 3
    keeping_up, _ = verdict(lambda i: 25)
    assert keeping_up[check]
