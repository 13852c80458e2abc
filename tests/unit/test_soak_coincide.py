"""What a soak's p99 moved with (bench/drills/coincide.py, judges.soak_minutes): the
series must line up by minute, and the ranking must find the series that follows p99,
not one that merely trends."""

from __future__ import annotations

import json

import pytest

from bench.drills import coincide, judges
from bench.drills.judges import Outputs, soak_minutes
from bench.resources import LOAD_GROUP

pytestmark = pytest.mark.unit

START = 1_000_000
MIN = coincide.MINUTE_MS


def test_bucket_reduces_per_minute_and_drops_points_before_the_start():
    points = [(START - 1, 99.0), (START, 1.0), (START + 30_000, 3.0), (START + MIN, 5.0)]
    assert coincide.bucket(points, START) == {0: 2.0, 1: 5.0}
    assert coincide.bucket(points, START, how="max") == {0: 3.0, 1: 5.0}
    assert coincide.bucket(points, START, how="count") == {0: 2.0, 1: 1.0}


def test_counter_rate_is_the_rise_per_minute_and_a_reset_is_not_negative():
    points = [(START + 10, 100.0), (START + 50_000, 160.0), (START + MIN + 5, 200.0),
              (START + 2 * MIN + 5, 10.0), (START + 3 * MIN + 5, 70.0)]
    assert coincide.counter_rate(points, START) == {1: 40.0, 2: 0.0, 3: 60.0}


def test_spearman_handles_ties_and_refuses_constant_or_short_series():
    assert coincide.spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert coincide.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert coincide.spearman([1, 1, 2, 2, 3], [1, 1, 2, 2, 3]) == pytest.approx(1.0)
    assert coincide.spearman([1, 2, 3, 4, 5], [7, 7, 7, 7, 7]) is None
    assert coincide.spearman([1, 2, 3], [1, 2, 3]) is None


def test_moves_with_ranks_the_follower_above_a_trend_and_leaves_out_what_it_is_told():
    minutes = range(12)
    waves = [100, 900, 120, 1500, 110, 130, 1700, 90, 100, 1200, 95, 105]
    series = {
        "p99_ms": dict(zip(minutes, map(float, waves), strict=True)),
        "p50_ms": {m: w / 2 for m, w in zip(minutes, waves, strict=True)},
        "cpu others": {m: 5.0 + w / 20 for m, w in zip(minutes, waves, strict=True)},
        "keys": {m: float(m) for m in minutes},
        "flat": {m: 1.0 for m in minutes},
    }
    found = judges.coincide.moves_with(series, "p99_ms", leave_out=("p50_ms",))
    assert [name for name, _, _ in found][:1] == ["cpu others"]
    assert found[0][1] == pytest.approx(1.0) and found[0][2] == 12
    assert "flat" not in {name for name, _, _ in found}
    assert "p50_ms" not in {name for name, _, _ in found}
    assert abs({n: r for n, r, _ in found}["keys"]) < 0.5


def test_soak_minutes_lines_up_every_sampled_source(monkeypatch):
    # Traces reduced to their two timings: the judge's own readers are swapped for these.
    monkeypatch.setattr(judges, "_decided_ms", lambda t: t["decided"])
    monkeypatch.setattr(judges, "_decision_ms", lambda t: t["decided"] - t["received"])
    traces = [{"received": START + m * MIN + i * 100 - lat, "decided": START + m * MIN + i * 100}
              for m, lat in enumerate((20, 40, 600)) for i in range(100)]
    out = Outputs(decisions=[], decision_append_ms=[], traces=traces, dead_letters=[],
                  sent_at={})
    out.checkpoints = [(START + 1_000, 300), (START + 2_000, 500), (START + MIN + 1, 90)]
    out.vertex = [(START + 5_000, "Source: rtd_transactions[1] -> Calc[2]", {"busyTimeMsPerSecond": 400.0,
                   "backPressuredTimeMsPerSecond": 0.0})]
    out.memory_parts = [(START + m * MIN + 1, {"card_features.working_set_misses": 50.0 * m,
                                               "memory.python_gc_full_us": 1e3 * m * m})
                        for m in range(3)]
    out.resources = [(START + m * MIN + 2, g, cpu, 0) for m in range(3)
                     for g, cpu in (("kafka", 20.0 + m), (LOAD_GROUP, 2.5))]
    series = soak_minutes(out, START)
    assert series["decisions"] == {0: 100.0, 1: 100.0, 2: 100.0}
    assert series["p99_ms"][2] == 600.0 and series["p50_ms"][0] == 20.0
    assert series["checkpoint ms (max)"] == {0: 500.0, 1: 90.0}
    assert series["rtd_transactions busy"] == {0: 400.0}
    assert series["card_features.working_set_misses"] == {1: 50.0, 2: 50.0}
    assert series["memory.python_gc_full_us"] == {1: 1e3, 2: 3e3}  # a rate, not the total
    assert series["cpu kafka"] == {0: 20.0, 1: 21.0, 2: 22.0}
    assert series["load average"] == {0: 2.5, 1: 2.5, 2: 2.5}
    assert json.dumps({k: sorted(v.items()) for k, v in series.items()})


def test_cards_seen_counts_each_card_once_at_its_first_decision():
    decided = [("c1", START - 5_000), ("c2", START + 10), ("c1", START + 20),
               ("c3", START + 2 * MIN + 5), ("c2", START + 2 * MIN + 6), (None, START + 7)]
    decisions = [{"card_id": c, "decided_at": at} for c, at in reversed(decided)]
    # Warm-up's cards count in minute 0; minute 1 added none; a repeat is not new.
    assert judges.cards_seen(decisions, START) == {0: 2.0, 1: 2.0, 2: 3.0}
    assert judges.cards_seen([], START) == {}


def test_part_levels_keep_each_minutes_largest_level_and_leave_counters_out():
    parts = [(START + 1, {"memory.python_blocks": 10.0, "card_features.working_set_misses": 5.0}),
             (START + 2, {"memory.python_blocks": 30.0}),
             (START + MIN + 1, {"memory.python_blocks": 20.0}),
             (START - 1, {"memory.python_blocks": 99.0})]
    assert judges.part_levels(parts, START) == {"memory.python_blocks": [[0, 30.0], [1, 20.0]]}


def test_taskmanager_threads_are_told_apart_by_name():
    from bench.resources import thread_class

    assert thread_class("rocksdb:low") == thread_class("rocksdb:high") == "rocksdb"
    assert thread_class("Features, scori") == "task Features, scori"
    assert thread_class("Source: rtd_tra") == "task Source: rtd_tra"
    assert thread_class("C2 CompilerThre") == thread_class("GC Thread#0") == (
        "jvm gc and compiler")
    assert thread_class("kafka-producer-") == "kafka clients"
    assert thread_class("flink-pekko.rem") == "other"


def test_thread_cpu_is_sampled_per_class_as_a_share_of_a_core():
    import os
    import threading
    import time

    from bench.resources import ResourceSampler, thread_cpu_seconds

    assert sum(thread_cpu_seconds(os.getpid()).values()) > 0
    sampler = ResourceSampler(dict, threads_of=lambda: [os.getpid()])
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    worker = threading.Thread(target=spin)  # alive across both samples: counted
    worker.start()
    sampler.sample()  # the first sample only starts the count
    time.sleep(0.5)
    sampler.sample()
    done.set()
    worker.join()
    threads = {g: cpu for _, g, cpu, _ in sampler.samples if g.startswith("threads: ")}
    assert threads, sampler.samples
    assert 20 < sum(threads.values()) <= 100 * (os.cpu_count() or 1) + 1


def test_compare_means_each_series_over_the_minutes_asked(tmp_path, capsys):
    from bench.drills.compare import main, means

    report = {"run": "r1", "settings": {"rate": 350.0},
              "figures": {"per_minute": {"p99_ms": [[0, 900.0], [1, 100.0], [2, 300.0]],
                                         "cpu threads: rocksdb": [[2, 40.0], [3, 44.0]]}}}
    assert means(report, ["p99_ms", "cpu threads: rocksdb", "absent"], 1, 2) == {
        "p99_ms": 200.0, "cpu threads: rocksdb": 40.0}
    path = tmp_path / "soak.json"
    path.write_text(json.dumps(report))
    main([str(path), "--from-minute", "1"])
    shown = capsys.readouterr().out
    assert "200.0" in shown and "42.0" in shown and "r1" in shown


def test_moves_with_finds_nothing_when_the_target_has_no_series():
    series = {"keys": {m: float(m) for m in range(12)}}
    assert judges.coincide.moves_with(series, "p99_ms") == []
