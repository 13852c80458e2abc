"""Every feature of every decision the real cluster made for the simulator's stream on 4
partitions, against the independent reference (bench/reference_features.py).

The simulator's stream has what production streams have: RFC 3339 string times, events
out of order within the 5 s bound, late events, malformed records. It is written as fast
as the producer can (a backlog) starting an hour back. Judged with the bounds of
test_event_time_on_partitions: card features exactly, customer features between the
events certainly and possibly processed before, late flags between what the job had to
flag and what any partition's own history allows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest

from bench.reference_features import HOUR, all_features
from decisioning.trace import feature_values, trace_event
from simulator.producer import run_simulation
from tests.integration.model_drills import running_job, wait_decided
from tests.integration.test_event_time_on_partitions import (
    CARD_FEATURES,
    certainly_late,
    customer_bounds,
    processing_order,
    reference_late,
)

pytestmark = pytest.mark.integration


def test_simulated_stream_on_four_partitions_matches_the_reference(local_stack, run_id):
    with running_job(run_id, kafka={"partitions": 4}) as config:
        summary = run_simulation(config, count=3000, rate=None, seed=11,
                                 start_time_ms=int(time.time() * 1000) - HOUR,
                                 malformed_share=0.01, progress=False)
        decided = wait_decided(config, summary.valid_event_ids, timeout_s=240)

    traces = {event_id: d.trace for event_id, d in decided.items()}
    assert {t["input"]["partition"] for t in traces.values()} == {0, 1, 2, 3}
    strings = sum(1 for t in traces.values() if '"event_time":"' in t["input"]["raw"])
    assert strings > 50, "the stream must carry RFC 3339 event times"
    flagged = {e for e, t in traces.items() if t["late"]}
    allowed = reference_late(traces)
    assert certainly_late(traces, 4) <= flagged <= allowed
    assert flagged, "the simulator's late events must be flagged"

    expected = all_features(processing_order(traces))
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces.values():
        by_customer[trace_event(t)["customer_id"]].append(t)
    checked = 0
    for event_id, trace in traces.items():
        if trace["late"]:
            continue
        got = feature_values(trace)
        assert {n: got[n] for n in CARD_FEATURES} == \
            {n: expected[event_id][n] for n in CARD_FEATURES}, event_id
        for name, (low, high) in customer_bounds(trace, by_customer).items():
            assert low <= got[name] <= high, (event_id, name, low, got[name], high)
        checked += 1
    assert checked >= 0.95 * len(traces)
