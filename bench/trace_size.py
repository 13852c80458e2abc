"""The size of a trace as the job writes it, on simulated traffic.

The simulator's records (out-of-order, late, RFC 3339 times, fraud patterns, malformed
ones) go through the batched service's core (``bench/peers/batch_decisions.py``), which
builds each trace with the job's own ``build_trace``; every 20th batch's model call
fails, so rules-only traces (no response, a fallback reason) are in the mix. Sizes are
the serialised JSON bytes the trace sink writes (orjson, as ``operators/decide.py``).

    python -m bench.trace_size [--events 20000]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from bench.peers.batch_decisions import BatchDecider, InputRecord
from bench.peers.entity_store import EntityCache, Progress
from bench.stats import latency_summary
from decisioning.rules import load_rules
from flink_jobs.topology import job_info
from rtd_core.config import load_config
from serving.predict_calls import ModelCallError
from simulator.generator import LABEL, GeneratorSettings, TransactionGenerator

T0 = 1_764_000_000_000
BATCH = 100


def trace_sizes(events: int, seed: int = 7) -> list[int]:
    config = load_config(None)
    rules = load_rules(None)
    decider = BatchDecider(config, rules, EntityCache({}, 1_000_000), Progress(),
                           job_info(config, rules))
    calls = 0

    def scorer(rows: Sequence[dict[str, float]]) -> tuple[list[float], int, float]:
        nonlocal calls
        calls += 1
        if calls % 20 == 0:
            raise ModelCallError("timeout", "DEADLINE_EXCEEDED: deadline exceeded")
        return [round((hash(str(r)) % 10_000) / 10_000, 6) for r in rows], 3, 2.5

    stream = TransactionGenerator(GeneratorSettings(start_time_ms=T0, seed=seed)).stream(events)
    records = [InputRecord(r.key, r.value, config.kafka.topics.transactions, 0, offset, r.clock_ms)
               for offset, r in enumerate(s for s in stream if s.kind != LABEL)]
    sizes: list[int] = []
    for i in range(0, len(records), BATCH):
        for out in decider.decide_batch(records[i:i + BATCH], scorer):
            if out.topic == config.kafka.topics.traces:
                sizes.append(len(out.value))
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    sizes = trace_sizes(args.events)
    print(json.dumps({"bytes": latency_summary(sizes), "min": min(sizes)}))


if __name__ == "__main__":
    main()
