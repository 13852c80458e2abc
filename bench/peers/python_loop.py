"""Peer (a): the plain Python consumer loop a team would write first.

consume one event -> validate -> features from local dict state (the job's own
``ViewComputer``, so the values are the job's) -> one synchronous Predict -> rules and
decision (the job's code) -> produce. One process, one thread, no batching.

What it does not do, and the job does (docs/BENCHMARKS.md lists it next to the figures):
no exactly-once (auto-committed offsets, a plain producer: a crash loses or repeats
decisions), no traces, no dead-letter topic (malformed events are counted and skipped),
no durable state (a restart forgets every window), no checkpoints.

    python -m bench.peers.python_loop --config cfg.json --input T --output D --group G
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from confluent_kafka import Consumer, Producer

from bench.peers.common import SyncModelClient, decision_json
from decisioning.rules import load_rules
from decisioning.transaction import Rejection, validate
from feature_views.definitions import ALL_VIEWS
from feature_views.window_state import State, ViewComputer, empty_state
from rtd_core.config import load_config
from rtd_core.security import kafka_client_properties


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)

    config = load_config(args.config)
    rules = load_rules(config.path(config.rules_file) if config.rules_file else None)
    job = config.job
    consumer = Consumer(kafka_client_properties(config.kafka, **{
        "group.id": args.group,
        "auto.offset.reset": "earliest",
    }))
    producer = Producer(kafka_client_properties(config.kafka, **{"linger.ms": 5}))
    model = SyncModelClient(config.serving)
    computers = [(view.entity_key, ViewComputer(view)) for view in ALL_VIEWS]
    states: list[dict[str, State]] = [{} for _ in computers]
    max_event_time: int | None = None
    malformed = 0
    running = True

    def on_term(signum: int, frame: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, on_term)
    consumer.subscribe([args.input])
    while running:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            print(f"consumer error: {msg.error()}", file=sys.stderr)
            continue
        event = validate(msg.value())
        if isinstance(event, Rejection):
            malformed += 1
            continue
        t = event["event_time"]
        # One watermark for the whole process (it reads every partition), as in the job:
        # max event time seen minus the bounded out-of-orderness.
        watermark = None if max_event_time is None else max_event_time - job.watermark_delay_ms
        late = watermark is not None and t < watermark - job.allowed_lateness_ms
        features: dict[str, float] = {}
        for (entity_key, computer), entities in zip(computers, states, strict=True):
            key = event[entity_key]
            state = entities.get(key)
            if state is None:
                state = entities[key] = empty_state()
            elif watermark is not None:
                computer.prune(state, watermark, job.allowed_lateness_ms)
            features.update(computer.apply(state, event))
        if max_event_time is None or t > max_event_time:
            max_event_time = t
        result = model.score(event, features)
        value = decision_json(config, rules, event, features, result, late)
        while True:
            try:
                producer.produce(args.output, value, event["card_id"].encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(10)
    consumer.close()
    model.close()
    print(f"stopped; skipped {malformed} malformed events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
