"""Hostile payloads mixed into valid traffic on the real stack: the job never restarts, and
every input ends as exactly one committed decision or one dead letter with its reason.

Dead letters carry the input's partition and offset, which the producer's delivery
reports give for each payload, so each one is matched to the payload it came from.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Producer

from rtd_core.topic_reader import read_all
from simulator.hostile import VALID, hostile_payloads
from simulator.producer import producer_settings
from stack.flink_cluster import FlinkCluster
from tests.builders import SEC, encode, txn
from tests.integration.model_drills import running_job, wait_decided

pytestmark = pytest.mark.integration


def produce_raw(config: Any, payloads: list[tuple[bytes | None, bytes | None]],
                rate: float) -> list[tuple[int, int]]:
    """(partition, offset) of each payload, in order."""
    producer = Producer({**producer_settings(config), "delivery.report.only.error": False})
    placed: dict[int, tuple[int, int]] = {}
    errors: list[str] = []
    started = time.monotonic()
    for i, (key, value) in enumerate(payloads):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

        def delivered(err: Any, msg: Any, i: int = i) -> None:
            if err is not None:
                errors.append(f"payload {i}: {err}")
            else:
                placed[i] = (msg.partition(), msg.offset())

        producer.produce(config.kafka.topics.transactions, key=key, value=value,
                         on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    return [placed[i] for i in range(len(payloads))]


def test_hostile_corpus_in_live_traffic_never_restarts_the_job(local_stack, run_id):
    rng = random.Random(5)
    now = int(time.time() * 1000)
    hostile = hostile_payloads(
        lambda event_id: txn(f"hc{rng.randint(0, 40)}", at=now + 30 * SEC, event_id=event_id),
        now, seed=int(run_id, 16) % 1000)
    valid = [txn(f"c{rng.randint(0, 40)}", at=now + i * 50, event_id=f"v-{run_id}-{i:04d}")
             for i in range(900)]
    mixed: list[tuple[str, Any]] = [("valid", e) for e in valid]
    for h in hostile:
        mixed.insert(rng.randrange(len(mixed) + 1), ("hostile", h))
    payloads = [(e["card_id"].encode(), encode(e)) if kind == "valid" else (e.key, e.value)
                for kind, e in mixed]

    with running_job(run_id, kafka={"partitions": 4}) as config:
        cluster = FlinkCluster(config)
        job_id = cluster.running_job(config.job.name)["jid"]
        placed = produce_raw(config, payloads, rate=150)
        expect_decided = [e["event_id"] for e in valid] + [
            json.loads(h.value)["event_id"] for h in hostile if h.expected == VALID]
        decided = wait_decided(config, expect_decided, timeout_s=180)
        expected_dead = {placed[i]: h.expected for i, (kind, h) in enumerate(mixed)
                         if kind == "hostile" and h.expected != VALID}
        deadline = time.monotonic() + 60
        dead: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            dead = [json.loads(r.value) for r in read_all(config, config.kafka.topics.dlq)]
            if len(dead) >= len(expected_dead):
                break
            time.sleep(1)
        time.sleep(3)  # a duplicate, if any, would be committed by now
        decisions = read_all(config, config.kafka.topics.decisions)
        dead = [json.loads(r.value) for r in read_all(config, config.kafka.topics.dlq)]
        details = cluster.rest(f"/jobs/{job_id}")
        exceptions = cluster.failures(job_id)

    assert details["state"] == "RUNNING"
    assert exceptions == [], "a record's content restarted the job"
    assert Counter(json.loads(r.value)["event_id"] for r in decisions) == \
        Counter(expect_decided)
    assert len(decided) == len(expect_decided)
    got_dead = {(d["partition"], d["offset"]): d["reason"] for d in dead}
    assert len(got_dead) == len(dead), "one dead letter per input"
    assert got_dead == expected_dead
    assert all(d["detail"] and d["stage"] == "validate" for d in dead)
