"""The two keyed feature operators alone, on a local Flink mini cluster.

Isolates the feature path (validation, watermarks, card and customer operators) from
Kafka, the model and the sinks: simulated events come from a collection and the
enriched records go to a discarding sink. Prints events/s; settings as JSON overrides
(``job.execution_mode`` included), and ``--backend`` for the state backend:

    .venv/bin/python -m bench.feature_operators --events 50000 \
        --override '{"flink": {"bundle_size": 5000}, "job": {"state_shards": 16}}'

"events/s" counts from job submission to its end, mini-cluster start included; each run
is its own process (own JVM), so run settings alternately and compare medians.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.functions import SinkFunction

from flink_jobs.decision_job import job_configuration
from flink_jobs.embedded_python import embedded_python_path
from flink_jobs.jvm_streams import keyed_by_first_field
from flink_jobs.topology import build_features
from rtd_core.config import load_config
from rtd_core.sharding import shard_of
from simulator.generator import GeneratorSettings, generate

RAW_ROW = Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE()),
                     Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(),
                     Types.LONG()])
KEYED_ROW = Types.ROW([Types.INT(), RAW_ROW])


def discarding_sink() -> SinkFunction:
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    return SinkFunction(jvm.org.apache.flink.streaming.api.functions.sink.legacy.DiscardingSink())


def run(events: int, overrides: dict, backend: str) -> dict:
    config = load_config(None, **overrides)
    conf = job_configuration(config)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("state.backend.type", backend)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(config.flink.parallelism)
    records = generate(GeneratorSettings(start_time_ms=1_700_000_000_000, seed=3,
                                         malformed_share=0.0), events)
    shards = config.job.state_shards
    rows = [Row(shard_of(json.loads(r.value)["customer_id"], shards),
                Row(r.key, r.value, "transactions", 0, i, None, None))
            for i, r in enumerate(records) if r.kind == "txn"]
    # Keyed in the JVM, as the job's source keys its rows (flink_jobs/kafka_tables.py).
    raw = keyed_by_first_field(env.from_collection(rows, type_info=KEYED_ROW), RAW_ROW)
    features = build_features(raw, config)
    features.map(lambda r: 1, output_type=Types.INT()).add_sink(discarding_sink())
    started = time.perf_counter()
    env.execute("feature-operators-bench")
    elapsed = time.perf_counter() - started
    return {"events": len(rows), "seconds": round(elapsed, 2),
            "events_per_s": round(len(rows) / elapsed, 1), "mode": config.job.execution_mode,
            "backend": backend, "override": overrides}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--override", default="{}")
    parser.add_argument("--backend", default="rocksdb", choices=("rocksdb", "hashmap"))
    args = parser.parse_args()
    embedded_python_path()  # before the first PyFlink call: thread mode needs it
    print(json.dumps(run(args.events, json.loads(args.override), args.backend)))


if __name__ == "__main__":
    main()
