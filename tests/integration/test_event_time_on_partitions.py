"""Features and late flags on 4 partitions: hours of backlog, then live, with and without a
TaskManager killed mid-backlog, judged against the independent reference.

The backlog is produced before the job starts, as after an outage: five hours of event
time appended within seconds, so the source reads it a fetch of one partition at a time.
Then live events follow at a steady rate. Every committed trace is checked:

- card features: a card lives on one partition, so its processing order is its partition's
  offset order, whatever the interleaving: they must equal the reference exactly;
- customers with one card: the same, exactly;
- customers with cards on several partitions: the job's order across partitions is not
  knowable from outside, so each value must lie between the reference over the events
  certainly processed before (same partition, lower offset) and over every event that
  may have been (any other partition);
- late flags: the job's watermark is the minimum over partitions, so how late it may
  call an event depends on how far the other partitions had been read. Bounds again: an
  event is never flagged unless it is late against its own partition's history (only
  the planted ones are), and it must be flagged when, before it was processed, every
  partition had delivered events far enough ahead of it (judged from the traces' own
  stage timings, with a second's margin for periodic watermark emission). Both sets
  are checked to be non-trivial.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from typing import Any

import pytest

from bench.reference_features import DAY, all_features
from decisioning.trace import feature_values, trace_event, trace_timings
from rtd_core.sharding import shard_of
from stack.flink_cluster import FlinkCluster
from tests.builders import HOUR, MIN, SEC, txn
from tests.integration.model_drills import produce, running_job, wait_decided

pytestmark = pytest.mark.integration

DELAY, LATENESS = 5 * SEC, MIN
CARD_FEATURES = ("card_txn_count_1m", "card_txn_count_1h", "card_amount_sum_1h",
                 "card_distinct_merchants_5m", "card_seconds_since_last_txn",
                 "card_country_changed_10m")
CUSTOMER_WINDOWS = {"customer_amount_sum_24h": DAY, "customer_txn_count_24h": DAY,
                    "customer_distinct_cards_1h": HOUR}


def population(rng: random.Random) -> dict[str, str]:
    """card -> customer: 30 customers with one card, 20 with two to five."""
    cards = {f"solo{i}": f"solo-cust{i}" for i in range(30)}
    for c in range(20):
        for k in range(rng.randint(2, 5)):
            cards[f"multi{c}-{k}"] = f"multi-cust{c}"
    return cards


def stream(rng: random.Random, cards: dict[str, str], start: int, count: int, step_ms: int,
           late_every: int, late_by: int, tag: str) -> tuple[list[dict[str, Any]], set[str]]:
    """Events in production order on a clock from ``start``: bursts, 5% out of order
    (under the 5 s bound), and one event in ``late_every`` planted ``late_by`` behind."""
    names = sorted(cards)
    events, late = [], set()
    clock = start
    for i in range(count):
        clock += rng.randint(step_ms // 2, step_ms * 3 // 2)
        card = rng.choice(names)
        at = clock
        if rng.random() < 0.05:
            at = clock - rng.randint(1, 4 * SEC)
        event = txn(card, round(rng.uniform(1, 400), 2), at=at, customer=cards[card],
                    merchant=f"m{rng.randint(0, 6)}", country=rng.choice(["US", "US", "FR"]),
                    event_id=f"{tag}-{i:05d}")
        if i > count // 5 and i % late_every == 0:
            event["event_time"] = clock - late_by
            late.add(event["event_id"])
        events.append(event)
        if rng.random() < 0.1:  # a burst: the same card again within seconds
            clock += rng.randint(1, 3 * SEC)
            events.append(txn(card, 5.0, at=clock, customer=cards[card], merchant="m9",
                              event_id=f"{tag}-{i:05d}b"))
    return events, late


def processing_order(traces: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Events in (partition, offset) order: each partition's own order, as processed."""
    ordered = sorted(traces.values(), key=lambda t: (t["input"]["partition"],
                                                     t["input"]["offset"]))
    return [trace_event(t) for t in ordered]


def reference_late(traces: dict[str, dict[str, Any]]) -> set[str]:
    """Late by the contract's rule from each partition's own history: behind that
    partition's watermark by more than the allowed lateness (an upper bound of what the
    job may flag, its watermark being the minimum over partitions)."""
    late, newest = set(), {}
    for t in sorted(traces.values(), key=lambda t: (t["input"]["partition"],
                                                    t["input"]["offset"])):
        p, at = t["input"]["partition"], trace_event(t)["event_time"]
        if p in newest and at < newest[p] - DELAY - LATENESS:
            late.add(t["event_id"])
        newest[p] = max(newest.get(p, at), at)
    return late


def certainly_late(traces: dict[str, dict[str, Any]], partitions: int,
                   restarted_at: int = 0, shards: int = 32) -> set[str]:
    """Events the job must flag late: behind a watermark it certainly had by more than
    the allowed lateness. It works with the higher of two lower bounds
    (operators/shard_watermarks.py), and so does this:

    - Flink's, from records that passed the source since the (re)start at least 400 ms
      before (the watermark is emitted every 200 ms), once each partition had one;
    - the customer shard's own (the feature operator is keyed by the customer's shard),
      from the events of its customers processed before, across the restart too (kept
      in state, saved in steps of up to a second).

    The source's order shows in each trace's ``received`` time: when the source task
    read the record, before the shuffle (flink_jobs/kafka_tables.py, ``read_at``). The
    keyed operator's own time would not do: records wait in the shuffle's buffers, so a
    record it takes 400 ms after another may have been read before the watermark that
    covers the other was even emitted."""
    by_arrival = sorted(traces.values(), key=lambda t: trace_timings(t)["received"])
    since_start: dict[int, int] = {}
    by_shard: dict[int, dict[int, int]] = defaultdict(dict)
    out, i, j = set(), 0, 0
    for trace in by_arrival:
        received = trace_timings(trace)["received"]
        while i < len(by_arrival) and trace_timings(by_arrival[i])["received"] < received - 400:
            other = by_arrival[i]
            if trace_timings(other)["received"] > restarted_at:
                p = other["input"]["partition"]
                since_start[p] = max(since_start.get(p, other["event_time"]),
                                     other["event_time"])
            i += 1
        while j < len(by_arrival) and trace_timings(by_arrival[j])["received"] < received:
            other = by_arrival[j]
            latest = by_shard[shard_of(trace_event(other)["customer_id"], shards)]
            p = other["input"]["partition"]
            latest[p] = max(latest.get(p, other["event_time"]), other["event_time"])
            j += 1
        bounds = []
        if len(since_start) == partitions:
            bounds.append(min(since_start.values()) - DELAY)
        mine = by_shard[shard_of(trace_event(trace)["customer_id"], shards)]
        if len(mine) == partitions:
            bounds.append(min(mine.values()) - DELAY - SEC)
        if bounds and trace["event_time"] < max(bounds) - LATENESS:
            out.add(trace["event_id"])
    return out


def customer_bounds(trace: dict[str, Any], by_customer: dict[str, list[dict[str, Any]]]
                    ) -> dict[str, tuple[float, float]]:
    me = trace["input"]
    event = trace_event(trace)
    t = event["event_time"]
    certain, possible = [], []
    for other in by_customer[event["customer_id"]]:
        src = other["input"]
        if src["partition"] == me["partition"] and src["offset"] > me["offset"]:
            continue  # processed after e, certainly
        target = certain if (src["partition"] == me["partition"]) else possible
        target.append(trace_event(other))
    possible += certain

    def values(events: list[dict[str, Any]]) -> dict[str, float]:
        day = [x for x in events if t - DAY < x["event_time"] <= t]
        hour = [x for x in events if t - HOUR < x["event_time"] <= t]
        return {"customer_amount_sum_24h": round(sum(x["amount"] for x in day), 6),
                "customer_txn_count_24h": len(day),
                "customer_distinct_cards_1h": len({x["card_id"] for x in hour})}

    low, high = values(certain), values(possible)
    return {name: (low[name], high[name]) for name in CUSTOMER_WINDOWS}


def kill_taskmanager_when(config: Any, committed_at_least: int, event_ids: list[str]) -> int:
    """Kill -9 the TaskManager once enough is committed; the epoch ms of the restart."""
    from rtd_core.topic_reader import read_all

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if len(read_all(config, config.kafka.topics.decisions)) >= committed_at_least:
            break
        time.sleep(0.2)
    cluster = FlinkCluster(config)
    for pid in cluster._pids("taskexecutor"):
        os.kill(pid, signal.SIGKILL)
    # Counted after the kill: the sinks commit in the TaskManager, so nothing commits
    # until it is back, and this is what was committed when it died. The job drains
    # this backlog in a few seconds, so the kill follows the first commits at once.
    committed = len(read_all(config, config.kafka.topics.decisions))
    assert committed_at_least <= committed < len(event_ids), \
        f"the kill must fall mid-backlog ({committed} of {len(event_ids)} committed)"
    time.sleep(1)
    restarted_at = int(time.time() * 1000)
    cluster.start()
    return restarted_at


def last_failure_at(config: Any) -> int:
    """Epoch ms of the job's latest failure (0 if none). A TaskManager kill can fail the
    job more than once (its recovery too), and Flink's watermark starts from nothing at
    each restart, so the "certainly late" bound counts only what was read after the
    last one."""
    cluster = FlinkCluster(config)
    job = cluster.running_job(config.job.name)
    assert job is not None, "the job is not running"
    return max((int(entry["timestamp"]) for entry in cluster.failures(job["jid"])),
               default=0)


@pytest.mark.parametrize("kill", [False, True], ids=["steady", "taskmanager-killed"])
def test_backlog_then_live_on_four_partitions_gives_reference_features(local_stack, run_id,
                                                                        kill):
    rng = random.Random(41 + kill)
    cards = population(rng)
    now = int(time.time() * 1000)
    backlog, late_backlog = stream(rng, cards, now - 6 * HOUR, 5000, 4 * SEC, 400, 2 * HOUR,
                                   f"b{run_id}")
    with running_job(run_id, kafka={"partitions": 4}) as config:
        assert config.kafka.partitions == 4
        produce(config, backlog)
        restarted_at = 0
        if kill:
            restarted_at = kill_taskmanager_when(config, 600, [e["event_id"] for e in backlog])
        decided = wait_decided(config, [e["event_id"] for e in backlog], timeout_s=300)
        live_start = int(time.time() * 1000)
        # live: produced at the pace of its clock, so event time follows the wall clock
        live, late_live = stream(rng, cards, live_start, 600, 15, 100, 20 * MIN,
                                 f"l{run_id}")
        produce(config, live, rate=60)
        decided.update(wait_decided(config, [e["event_id"] for e in live], timeout_s=180))
        if kill:
            restarted_at = max(restarted_at, last_failure_at(config))

    traces = {event_id: d.trace for event_id, d in decided.items()}
    assert len(traces) == len(backlog) + len(live)
    partitions = {t["input"]["partition"] for t in traces.values()}
    assert partitions == {0, 1, 2, 3}

    planted = late_backlog | late_live
    flagged = {e for e, t in traces.items() if t["late"]}
    assert reference_late(traces) == planted
    must = certainly_late(traces, 4, restarted_at)
    assert must <= flagged <= planted, (sorted(must - flagged), sorted(flagged - planted))
    assert late_live <= must
    assert all(decided[e].decision["late"] == (e in flagged) for e in traces)

    expected = all_features(processing_order(traces))
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces.values():
        by_customer[trace_event(t)["customer_id"]].append(t)
    exact_customers = checked_bounds = 0
    for event_id, trace in traces.items():
        if trace["late"]:
            continue  # decided with the state it finds
        got = feature_values(trace)
        want = expected[event_id]
        assert {n: got[n] for n in CARD_FEATURES} == {n: want[n] for n in CARD_FEATURES}, \
            (event_id, trace["input"])
        if trace_event(trace)["customer_id"].startswith("solo"):
            assert {n: got[n] for n in CUSTOMER_WINDOWS} == \
                {n: want[n] for n in CUSTOMER_WINDOWS}, event_id
            exact_customers += 1
        else:
            for name, (low, high) in customer_bounds(trace, by_customer).items():
                assert low <= got[name] <= high, (event_id, name, low, got[name], high)
            checked_bounds += 1
    assert exact_customers > 500 and checked_bounds > 2000
