"""Peer (c): the batched exactly-once Python service a capable team would run instead of
Flink on one machine, built from the project's own validation, features, model inputs,
rules, decision and trace code (``bench/peers/batch_decisions.py``).

The loop, one process, one thread:
  1. a batch of up to 500 input records or ~20 ms (read_committed, no auto-commit);
  2. validate, compute features against state, one blocking batched ``Predict`` for all
     rows (on failure or past ``serving.timeout_ms`` the rules alone decide, with the
     job's ``fallback_reason``), decisions and traces as the job writes them, malformed
     records as dead letters of the job's shape;
  3. decisions, traces, dead letters AND the consumer offsets in one Kafka transaction
     (``send_offsets_to_transaction`` then ``commit_transaction``);
  4. then the batch's state, with the offsets it reflects, in one rocksdict write batch.

Exactly-once, and the crash window. Outputs and offsets commit atomically in Kafka, so
no crash repeats or loses a decision, trace or dead letter. State is written after the
commit, so a crash between 3 and 4 leaves rocksdict one batch behind Kafka. That window
is closed on restart: rocksdict stores the offsets its state reflects (``Progress``),
and the records between those and the group's committed offsets are read again and
folded into state without emitting anything (their outputs are already committed).
Features depend only on the state and the events, not on the wall clock, so the
rebuilt state is the one the lost write would have stored (pruning is invisible to
events that are not late, and the largest event time is a max, whatever the order).
The other order, state before the Kafka commit, would need an undo log for a batch
whose transaction then aborted; this one needs only a re-read. A fenced or failed
transaction is aborted, the batch's state changes discarded and the batch read again.

What it does not have that the Flink job has (docs/BENCHMARKS.md says so with the
figures): no scale-out beyond one process and one core (one instance owns every
partition; a second instance would fence the first, by design), no rescaling of keyed
state, a single process-wide watermark instead of checkpointed per-partition event time
with idleness, no web UI or metrics, no circuit breaker or last-score fallback, and
entities are never expired from rocksdict (only from the in-memory LRU).

    python -m bench.peers.batched_service --config cfg.json --input T --output D \
        --group G --state-dir DIR [--max-batch 500] [--max-wait-ms 20] [--cache 100000]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from bench.peers.batch_decisions import BatchDecider, InputRecord, Output
from bench.peers.entity_store import EntityStore, Progress
from decisioning.rules import load_rules
from rtd_core.config import RtdConfig, load_config
from rtd_core.security import kafka_client_properties, serving_channel
from serving.model_signature import MODEL_INPUT_NAMES
from serving.predict_calls import (
    CHANNEL_OPTIONS,
    classify_rpc_error,
    predict_request,
    read_scores,
)
from serving.tf_protos import prediction_service_pb2_grpc


def next_batch(consume: Callable[[int, float], list[Any]], max_records: int,
               max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> list[Any]:
    """Up to ``max_records`` from ``consume(n, timeout_s)``, waiting at most about
    ``max_wait_s`` once the first call returns (an idle topic returns [] after it)."""
    deadline = clock() + max_wait_s
    batch: list[Any] = []
    while len(batch) < max_records:
        left = deadline - clock()
        if left <= 0:
            break
        batch.extend(consume(max_records - len(batch), left))
    return batch


def input_record(msg: Message) -> InputRecord:
    _type, ts = msg.timestamp()
    return InputRecord(msg.key(), msg.value(), msg.topic(), msg.partition(), msg.offset(),
                       ts if ts is not None and ts >= 0 else None)


class BatchScorer:
    """One blocking ``Predict`` with every row of the batch."""

    def __init__(self, config: RtdConfig) -> None:
        self.serving = config.serving
        self.channel = serving_channel(config.serving, CHANNEL_OPTIONS)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def __call__(self, rows: Sequence[dict[str, float]]) -> tuple[list[float], int, float]:
        started = time.perf_counter()
        request = predict_request(self.serving, MODEL_INPUT_NAMES, rows)
        try:
            response = self.stub.Predict(request, timeout=self.serving.timeout_ms / 1000)
        except grpc.RpcError as exc:
            raise classify_rpc_error(exc) from exc
        scores, version = read_scores(response, len(rows))
        return scores, version, (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.channel.close()


def _consumer(config: RtdConfig, group: str) -> Consumer:
    return Consumer(kafka_client_properties(config.kafka, **{
        "group.id": group,
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,
    }))


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=30)
    if meta.topics[topic].error is not None:
        raise KafkaException(meta.topics[topic].error)
    return sorted(meta.topics[topic].partitions)


def catch_up_state(config: RtdConfig, topic: str, decider: BatchDecider, store: EntityStore,
                   committed: dict[int, int]) -> int:
    """Fold into state, emitting nothing, the records Kafka has committed outputs for but
    rocksdict's state does not reflect (a crash between the two writes). Returns how many."""
    stored = decider.progress.offsets
    gaps = {p: (stored.get(p, 0), end) for p, end in committed.items() if stored.get(p, 0) < end}
    behind = [p for p, end in committed.items() if stored.get(p, 0) > end]
    if behind:
        raise RuntimeError(f"state is ahead of Kafka's committed offsets on {behind}")
    if not gaps:
        decider.progress.offsets.update(committed)
        return 0
    reader = _consumer(config, f"{config.kafka.consumer_group}-catch-up")
    folded = 0
    try:
        reader.assign([TopicPartition(topic, p, start) for p, (start, _end) in gaps.items()])
        pending = set(gaps)
        while pending:
            for msg in reader.consume(500, 1.0):
                if msg.error() is not None or msg.partition() not in pending:
                    continue
                if msg.offset() < gaps[msg.partition()][1]:
                    decider.fold(input_record(msg))
                    folded += 1
                if msg.offset() + 1 >= gaps[msg.partition()][1]:
                    pending.discard(msg.partition())
            for p in list(pending):  # transaction markers or compaction: position says
                position = reader.position([TopicPartition(topic, p)])[0].offset
                if position >= gaps[p][1]:
                    pending.discard(p)
    finally:
        reader.close()
    decider.progress.offsets.update(committed)
    store.flush(decider.progress)
    return folded


def _produce(producer: Producer, outputs: list[Output]) -> None:
    for out in outputs:
        while True:
            try:
                producer.produce(out.topic, out.value, out.key.encode() if out.key else None)
                break
            except BufferError:
                producer.poll(0.05)
    producer.poll(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("--config", "--input", "--output", "--group", "--state-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--cache", type=int, default=100_000, help="entities kept in memory")
    args = parser.parse_args(argv)

    from flink_jobs.topology import job_info  # the trace's job block, as the job writes it

    base = load_config(args.config)
    topics = base.kafka.topics.model_copy(update={"transactions": args.input,
                                                  "decisions": args.output})
    config = base.model_copy(update={"kafka": base.kafka.model_copy(
        update={"topics": topics, "consumer_group": args.group})})
    rules = load_rules(config.path(config.rules_file) if config.rules_file else None)
    store = EntityStore(Path(args.state_dir), args.cache)
    decider = BatchDecider(config, rules, store.cache, store.progress(), job_info(config, rules))
    consumer = _consumer(config, args.group)
    partitions = _partitions(consumer, args.input)
    tps = [TopicPartition(args.input, p) for p in partitions]
    committed = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(tps, timeout=30)}
    folded = catch_up_state(config, args.input, decider, store, committed)
    print(f"started: committed offsets {committed}, {folded} records folded into state",
          file=sys.stderr, flush=True)
    producer = Producer(kafka_client_properties(config.kafka, **{
        "transactional.id": f"{args.group}-batched-service",
        "transaction.timeout.ms": 60_000, "linger.ms": 5,
        "compression.type": config.kafka.compression_type,
    }))
    producer.init_transactions(30)
    consumer.assign([TopicPartition(args.input, p, committed[p]) for p in partitions])
    scorer = BatchScorer(config)
    running = True

    def on_term(signum: int, frame: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, on_term)
    batches = decided = 0
    while running:
        messages = [m for m in next_batch(consumer.consume, args.max_batch,
                                          args.max_wait_ms / 1000)
                    if m.error() is None]
        if not messages:
            continue
        before = Progress(dict(decider.progress.offsets), decider.progress.max_event_time)
        outputs = decider.decide_batch([input_record(m) for m in messages], scorer)
        try:
            producer.begin_transaction()
            _produce(producer, outputs)
            # The next offset after each partition's last record in the batch (or the one
            # committed before), i.e. consumer.position() of what this batch consumed.
            producer.send_offsets_to_transaction(
                [TopicPartition(args.input, p, o) for p, o in decider.progress.offsets.items()],
                consumer.consumer_group_metadata())
            producer.commit_transaction()
        except KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise  # fenced or fatal: a restart recovers from Kafka and rocksdict
            print(f"transaction aborted, batch read again: {exc}", file=sys.stderr, flush=True)
            producer.abort_transaction()
            store.cache.discard_dirty()
            decider.progress = before
            for p, offset in before.offsets.items():
                consumer.seek(TopicPartition(args.input, p, offset))
            continue
        store.flush(decider.progress)
        batches += 1
        decided += sum(1 for o in outputs if o.topic == config.kafka.topics.decisions)
    # CPU time of this process: decisions per CPU second hardly move with the machine's
    # load, unlike decisions per wall second.
    print(f"stopped: {batches} batches, {decided} decisions, "
          f"{time.process_time():.1f} s CPU", file=sys.stderr, flush=True)
    consumer.close()
    scorer.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
