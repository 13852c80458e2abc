"""The live decision job: Kafka `transactions` -> decisions, traces, dead letters.

Submit to any Flink cluster the documented PyFlink way (see docs/operations.md):

    flink run -d --python flink_jobs/decision_job.py \
        --pyFiles rtd,decisioning,feature_views,operators,serving,flink_jobs \
        --config my-config.json

with the connector jar's URI in the config's ``flink.connector_jars``

or `rtd submit` on the local stack, which does exactly that.
"""

from __future__ import annotations

import argparse
import sys

from pyflink.common import Configuration
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from decisioning.rules import load_rules
from feature_views.definitions import CUSTOMER_FEATURES
from flink_jobs.kafka_tables import (
    SINK_TABLES,
    keyed_source,
    register_kafka_tables,
    with_topic_partitions,
)
from flink_jobs.topology import build_topology
from operators.lanes import MAX_PARALLELISM
from rtd_core.config import RtdConfig, load_config


def job_configuration(config: RtdConfig) -> Configuration:
    """Job-level settings that must hold on any cluster the job is submitted to."""
    flink = config.flink
    conf = Configuration()
    # Job-wide in PyFlink; the topology picks the scorer that runs in it (topology.py).
    conf.set_string("python.execution-mode", config.job.execution_mode)
    conf.set_string("python.fn-execution.bundle.size", str(flink.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(flink.bundle_time_ms))
    conf.set_string("python.state.cache-size", str(flink.state_cache_size))
    # Map-state writes are committed when this many are pending for one key, or at the
    # end of the bundle; each commit is a blocking round trip to the JVM.
    conf.set_string("python.map-state.write-cache-size", str(flink.bundle_size * 4))
    conf.set_string("state.backend.type", "rocksdb")
    conf.set_string("execution.checkpointing.incremental", "true")
    conf.set_string("state.backend.rocksdb.compaction.style", flink.rocksdb_compaction_style)
    conf.set_string("state.backend.rocksdb.timer-service.factory", flink.timer_service)
    conf.set_string("pipeline.name", config.job.name)
    return conf


def create_environments(config: RtdConfig) -> tuple[StreamExecutionEnvironment,
                                                     StreamTableEnvironment]:
    env = StreamExecutionEnvironment.get_execution_environment(job_configuration(config))
    if config.flink.connector_jars:
        # add_jars also puts them on the client's class loader, where the table
        # planner discovers the Kafka connector factory.
        env.add_jars(*config.flink.connector_jars)
    env.set_parallelism(config.flink.parallelism)
    # Pinned: the scoring lanes are chosen for it (operators/lanes.py), and savepoints
    # stay restorable when parallelism changes.
    env.set_max_parallelism(MAX_PARALLELISM)
    if config.flink.buffer_timeout_ms >= 0:
        env.set_buffer_timeout(config.flink.buffer_timeout_ms)
    env.enable_checkpointing(config.flink.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    checkpoints = env.get_checkpoint_config()
    checkpoints.set_min_pause_between_checkpoints(config.flink.min_pause_between_checkpoints_ms)
    checkpoints.set_tolerable_checkpoint_failure_number(3)
    t_env = StreamTableEnvironment.create(env)
    # The source's row time (flink_jobs/event_time_sql.py) reads RFC 3339 times as UTC.
    t_env.get_config().set("table.local-time-zone", "UTC")
    return env, t_env


def run(config: RtdConfig) -> None:
    config = with_topic_partitions(config)
    rules = load_rules(config.path(config.rules_file) if config.rules_file else None)
    env, t_env = create_environments(config)
    register_kafka_tables(t_env, config)
    raw = keyed_source(t_env, config.job.state_shards, CUSTOMER_FEATURES.entity_key)
    outputs = build_topology(raw, config, rules)

    statements = t_env.create_statement_set()
    statements.add_insert(SINK_TABLES["decisions"], t_env.from_data_stream(outputs.decisions))
    statements.add_insert(SINK_TABLES["traces"], t_env.from_data_stream(outputs.traces))
    statements.add_insert(SINK_TABLES["dlq"], t_env.from_data_stream(outputs.dead_letters))
    statements.attach_as_datastream()
    env.execute(config.job.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rtd live decision job")
    parser.add_argument("--config", help="JSON config file (defaults: the local stack)")
    args, _ = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    run(load_config(args.config))


if __name__ == "__main__":
    main()
