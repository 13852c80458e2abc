"""The one frozen configuration object, loaded once at each entry point.

Defaults describe the local stack on loopback. A JSON file (``--config``) or
``RTD_CONFIG`` overrides any part of it; unknown keys are an error, so a typo in
a deployment file fails at start-up instead of being ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rtd_core.contract import ALLOWED_LATENESS_MS, MAX_FUTURE_SKEW_MS, WATERMARK_DELAY_MS

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicsConfig(_Frozen):
    transactions: str = "transactions"
    labels: str = "labels"
    decisions: str = "decisions"
    traces: str = "decision-traces"
    dlq: str = "transactions-dlq"

    def all(self) -> list[str]:
        return [self.transactions, self.labels, self.decisions, self.traces, self.dlq]


class KafkaSecurityConfig(_Frozen):
    """How every Kafka client of the project (job, simulator, CLI, audit, bench)
    connects; rtd_core/security.py turns it into client properties. Secrets are never part
    of the config: the password comes from ``password_file`` or from the environment
    variable ``password_env``, read when a client is made."""

    protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    username: str | None = None
    password_file: str | None = None
    password_env: str = "RTD_KAFKA_PASSWORD"
    # PEM file of the CA that signed the brokers' certificates; None: the system's CAs.
    ca_file: str | None = None


class KafkaConfig(_Frozen):
    bootstrap_servers: str = "127.0.0.1:9092"
    security: KafkaSecurityConfig = KafkaSecurityConfig()
    controller_port: int = 9093
    partitions: int = Field(default=4, ge=1)
    topics: TopicsConfig = TopicsConfig()
    consumer_group: str = "rtd-decision-job"
    # Must stay below the broker's transaction.max.timeout.ms (the stack sets 1 h).
    transaction_timeout_ms: int = 900_000
    # How the exactly-once sinks name their transactions (the connector's
    # sink.transaction-naming-strategy). "pooling" reuses a fixed pool of transactional
    # ids and, on recovery, finds lingering transactions with one ListTransactions call
    # (Kafka 3.0+). "incrementing" (the connector's default) takes a new id per checkpoint,
    # so at 2 checkpoints/s the broker keeps ~170,000 new ids a day per sink subtask until
    # transactional.id.expiration.ms, and recovery probes ids one by one.
    transaction_naming: Literal["pooling", "incrementing"] = "pooling"
    # Compression of the job's output records (decisions, traces, dead letters). Traces
    # are ~5 KB of repetitive JSON; consumers decompress transparently.
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    # The exactly-once sinks' producer batching (Kafka's linger.ms and batch.size). Every
    # batch a sink opens builds an lz4 stream (two 64 KiB buffers), so with Kafka's
    # defaults (5 ms, 16 KiB) batches were small and many. Consumers reading committed
    # output see it only when a checkpoint commits it (the commit flushes what lingers),
    # but the linger adds to when a decision is first appended, which the bench's
    # decision latency measures: 100 ms drained 4,192-4,264/s with p99 126 ms at 100/s;
    # 20 ms 4,050-4,096/s; 5 ms 3,787-3,887/s; 10 ms within 1% of 20 ms in one more pair
    # (docs/BENCHMARKS.md).
    sink_linger_ms: int = Field(default=10, ge=0)
    sink_batch_bytes: int = Field(default=262_144, ge=1_024)
    # The job's source fetches at most this much per partition at a time (Kafka's
    # max.partition.fetch.bytes, default 1 MiB). The source emits a fetch one partition
    # after the other, so in a backlog this sets how much of one partition is read
    # before the next (flink_jobs/kafka_tables.py); Kafka still returns at least one
    # whole record batch.
    source_max_partition_fetch_bytes: int = Field(default=65_536, ge=1_024)
    heap: str = "768m"


class FlinkConfig(_Frozen):
    rest_host: str = "127.0.0.1"
    rest_port: int = 8081
    rpc_port: int = 6123
    # Jar URIs the job adds with env.add_jars (the Kafka SQL connector). `rtd submit`
    # fills in the one resolved into the jars folder when this is empty.
    connector_jars: tuple[str, ...] = ()
    # TaskManager processes on the local stack. In thread mode each runs its Python in one
    # interpreter (one GIL), so more TaskManagers, not more slots, use more cores.
    taskmanagers: int = Field(default=1, ge=1)
    task_slots: int = Field(default=2, ge=1)
    parallelism: int = Field(default=1, ge=1)
    # Exactly-once output becomes visible to read_committed consumers when the checkpoint
    # covering it completes: about interval + checkpoint duration (docs/BENCHMARKS.md).
    checkpoint_interval_ms: int = Field(default=500, ge=100)
    min_pause_between_checkpoints_ms: int = 100
    # Failure recovery (docs/RELIABILITY.md has each setting's reason and the drill that
    # measures it). A lost TaskManager is noticed after heartbeat_interval_ms x Flink's
    # heartbeat.rpc-failure-threshold (2) when its RPC port is gone (kill -9), or after
    # heartbeat_timeout_ms when it hangs; Flink's default timeout, 50 s, alone exceeds the
    # 15 s recovery goal.
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    heartbeat_timeout_ms: int = Field(default=12_000, ge=1_000)
    # Restarts back off exponentially from the initial delay to the maximum; the backoff
    # resets after restart_reset_backoff_ms without a failure, so failures a minute apart
    # each restart after the initial delay.
    restart_initial_backoff_ms: int = Field(default=500, ge=0)
    restart_max_backoff_ms: int = Field(default=10_000, ge=0)
    restart_reset_backoff_ms: int = Field(default=45_000, ge=1_000)
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "3072m"
    # The native allocator of the local stack's Flink processes (RocksDB, the embedded
    # Python and the JVM's own allocations share it). "jemalloc" preloads Debian's
    # libjemalloc2 where the machine has it, as Flink's own images do against glibc's
    # fragmentation under RocksDB; the drill stack (bench/drill-stack.json) uses it, to
    # measure it in the soak. "glibc" (the default, unchanged until the soak shows the
    # difference) keeps glibc's malloc, with MALLOC_ARENA_MAX set when glibc_arena_max is.
    allocator: Literal["jemalloc", "glibc"] = "glibc"
    glibc_arena_max: int | None = Field(default=None, ge=1)
    # PyFlink bundle settings (process mode): the main per-record cost lever there (see
    # docs/BENCHMARKS.md). Thread mode has no bundles.
    bundle_size: int = 1_000
    bundle_time_ms: int = 20
    state_cache_size: int = 10_000
    # RocksDB's compaction style and where Flink keeps timers (job-level, so they hold
    # on any cluster). Each checkpoint (every 500 ms) flushes the memtables into new L0
    # files, and with keys spread at random every L0->L1 compaction under LEVEL (Flink's
    # default) rewrites all of L1: in the hour's soak at 350/s, RocksDB's compaction
    # threads took as much CPU as the job's Python task. UNIVERSAL merges sorted runs of
    # similar size instead. HEAP keeps the timers (one per shard key, for answers and
    # expiry: a handful) on the JVM heap rather than a RocksDB write and delete each.
    # Measured together (docs/BENCHMARKS.md, docs/RELIABILITY.md): RocksDB's CPU down by
    # two thirds, p99 by two thirds and the longest checkpoint by half at the same rate, and
    # memory flat over an hour's second half.
    rocksdb_compaction_style: Literal["LEVEL", "UNIVERSAL"] = "UNIVERSAL"
    timer_service: Literal["ROCKSDB", "HEAP"] = "HEAP"
    # How long a network buffer may wait before it is sent downstream (Flink's
    # execution.buffer-timeout, default 100 ms): a floor on each shuffle's latency at
    # low rates. -1 keeps Flink's default.
    buffer_timeout_ms: int = Field(default=2, ge=-1)
    # The decision and trace sinks in tasks of their own (threads, in the same slot),
    # rather than chained to the keyed Python operator, whose thread is the job's
    # bottleneck while the machine still has a quarter of its CPU idle: their Kafka
    # producers' serialisation, compression and checkpoint flush then run beside it.
    # 150k-event drains, warm, alternating: 4,524 / 4,666 / 4,808 against 4,342 / 4,617 /
    # 4,599 chained (docs/BENCHMARKS.md). Dead letters (few) stay chained.
    sinks_in_own_task: bool = True
    # Flink's Prometheus metrics reporter (flink-metrics-prometheus, from Maven Central)
    # listens here on every JobManager and TaskManager (a range: one port per process);
    # 0 turns it off.
    prometheus_port: int = Field(default=9249, ge=0)
    prometheus_port_range: int = Field(default=8, ge=1)

    @property
    def rest_url(self) -> str:
        return f"http://{self.rest_host}:{self.rest_port}"


class ServingTlsConfig(_Frozen):
    """TLS on the model server's gRPC port. Clients verify the server against
    ``ca_file`` (None: the system's CAs); the server presents ``cert_file`` with the
    private key in ``key_file`` (a file, never config text)."""

    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # The name the server's certificate is checked against, when it differs from
    # ``host`` (e.g. a certificate for the service name behind an IP address).
    server_name: str | None = None


class ServingConfig(_Frozen):
    host: str = "127.0.0.1"
    tls: ServingTlsConfig = ServingTlsConfig()
    port: int = 8500
    model_name: str = "fraud"
    signature_name: str = "serving_default"
    # None: the server's latest version.
    model_version: int | None = None
    base_path: str = "models/fraud"
    poll_interval_s: float = 2.0
    timeout_ms: int = Field(default=250, ge=1)
    batch_window_ms: float = Field(default=2.0, ge=0)
    # Thread mode: a call short of max_batch_size starts at least this long after the
    # previous one, so under load rows per call grow instead of calls per second (each
    # call costs the model server more than its rows do; docs/BENCHMARKS.md).
    min_call_interval_ms: float = Field(default=10.0, ge=0)
    max_batch_size: int = Field(default=64, ge=1)
    # Thread mode: Predict calls out at once (serving/pipelined_batch_client.py); the
    # task thread goes on while they are. 0: it waits for each answer, idle for the
    # call's whole round trip, as a blocking client does.
    max_in_flight: int = Field(default=2, ge=0)
    # Process mode: records in flight in PyFlink's async operator.
    async_capacity: int = Field(default=256, ge=1)
    breaker_failure_threshold: int = 5
    breaker_reset_s: float = 2.0
    # Fallback ladder: when the live call fails, a card's last live score decides if it
    # was for an event within this much event time of the current one. Off (0) by
    # default: the contract's default is that on fallback the rules alone decide
    # (RULES_ONLY); a deployment opts in to the last-score rung, e.g. 600000 (10 min).
    last_score_max_age_ms: int = Field(default=0, ge=0)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class JobConfig(_Frozen):
    name: str = "rtd-decision-job"
    # PyFlink runs every Python operator of a job in one mode (docs/operations.md):
    # "thread" runs them inside the TaskManager JVM and scores in the one keyed operator
    # (operators/customer_shard.py, calls through serving/predict_relay.py); "process"
    # runs them in Python worker processes and scores with PyFlink's AsyncFunction
    # (operators/scoring.py).
    execution_mode: Literal["thread", "process"] = "thread"
    # Defaults: the contract's (rtd_core/contract.py), which the feature views declare too.
    watermark_delay_ms: int = Field(default=WATERMARK_DELAY_MS, ge=0)
    idleness_ms: int = Field(default=10_000, ge=0)
    # Contract: an event more than this far ahead of its Kafka record's timestamp is a
    # dead letter (event_time_in_future) and never moves a watermark.
    max_future_skew_ms: int = Field(default=MAX_FUTURE_SKEW_MS, ge=0)
    # Source watermark alignment (flink_jobs/kafka_tables.py): a partition more than
    # this far ahead of the slowest one is paused; 0 turns alignment off.
    watermark_alignment_max_drift_ms: int = Field(default=30_000, ge=0)
    watermark_alignment_update_ms: int = Field(default=200, ge=10)
    allowed_lateness_ms: int = Field(default=ALLOWED_LATENESS_MS, ge=0)
    code_version: str = "0.1.0"
    # Feature state is keyed by a shard of the entity key (see operators/keyed_features.py).
    state_shards: int = Field(default=32, ge=1)
    # Per feature view and subtask, the entities whose state stays in Python memory
    # (least recently used evicted; RocksDB holds them all: operators/working_set.py).
    working_set_entities: int = Field(default=50_000, ge=1)
    # Per feature view and subtask, the history entries (one per event still inside a
    # window, ~200 bytes each) those states may hold together: a state grows with its
    # entity's events, so the entity count alone does not bound memory.
    working_set_history: int = Field(default=250_000, ge=1)
    # Per feature view and subtask, the entity keys held to tell a new entity without a
    # store read (~100 bytes each); past it, the largest shards' misses read the store.
    working_set_keys: int = Field(default=500_000, ge=0)
    # The async operator's own per-record timeout (a safety net behind the client's
    # deadline, serving.timeout_ms). PyFlink arms one threading.Timer per in-flight
    # record for it; 0 turns it off (see docs/BENCHMARKS.md for the cost). Off by
    # default: that thread per record cost ~2/3 of the job's throughput, and the client's
    # own deadline (serving.timeout_ms) already turns a slow call into RULES_ONLY/timeout.
    async_operator_timeout_ms: int = Field(default=0, ge=0)
    start_from: str = Field(default="committed-or-earliest", pattern="^(committed-or-earliest|earliest|latest)$")


class ThresholdsConfig(_Frozen):
    decline: float = 0.90
    review: float = 0.60


class AuditConfig(_Frozen):
    """The audit store (audit/): a RocksDB point index and an hourly Parquet archive
    fed from `decisions` and `decision-traces`; see docs/audit.md."""

    # Relative paths resolve against the stack folder, so a test stack gets its own store.
    store_dir: str = "audit"
    # Its own consumer group: several instances in it share the partitions.
    consumer_group: str = "rtd-audit"
    # Started by `rtd stack up` with the rest of the stack.
    enabled: bool = True
    # Hours of decisions kept in the store and the archive; 0 keeps everything.
    # Independent of Kafka's retention: the store exists to outlive it.
    retention_hours: int = Field(default=0, ge=0)
    # Records per atomic write batch (data and offsets together).
    batch_size: int = Field(default=2_000, ge=1)
    # How often buffered archive rows become a Parquet file; smaller: fresher SQL, more files.
    archive_flush_s: float = Field(default=30.0, gt=0)
    # A decision without its trace (or the reverse) younger than this is in flight, not
    # missing: the two topics are read independently.
    completeness_grace_ms: int = Field(default=60_000, ge=0)
    # The decision console and the Prometheus endpoint (/metrics), served by the service;
    # port 0: none (a second instance of a scale-out group, tests of the indexer alone).
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8090, ge=0)
    # Health (audit/health.py). A decision counts towards accuracy once it is this old:
    # labels arrive late (the simulator's default delay is 30 s), and a minute judged
    # before its labels are in would read as missed fraud.
    label_maturity_ms: int = Field(default=60_000, ge=0)
    # A label whose decision the store has not indexed after this long is unmatched.
    label_wait_ms: int = Field(default=600_000, ge=0)
    # Rolling windows (minutes of mature decisions) accuracy is reported over.
    accuracy_windows_min: tuple[int, ...] = (5, 60)
    # Minutes of per-minute health kept in memory (sparklines, Prometheus).
    health_history_min: int = Field(default=60, ge=1)
    # Latency, fallback and drift tiles summarise this many recent minutes.
    tile_window_min: int = Field(default=5, ge=1)
    health_interval_s: float = Field(default=2.0, gt=0)

    @property
    def console_url(self) -> str:
        return f"http://{self.console_host}:{self.console_port}"


class RtdConfig(_Frozen):
    kafka: KafkaConfig = KafkaConfig()
    flink: FlinkConfig = FlinkConfig()
    serving: ServingConfig = ServingConfig()
    job: JobConfig = JobConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    audit: AuditConfig = AuditConfig()
    # Rules are data: a JSON file of rule objects; None means the contract's defaults.
    rules_file: str | None = None
    stack_dir: str = ".stack"
    # Resolved jars, shared by every stack folder (the test stack reuses them).
    jars_dir: str = ".stack/jars"

    def path(self, relative: str) -> Path:
        """Resolve a config path against the project root unless it is absolute."""
        p = Path(relative)
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def stack_path(self) -> Path:
        return self.path(self.stack_dir)

    @property
    def audit_path(self) -> Path:
        p = Path(self.audit.store_dir)
        return p if p.is_absolute() else self.stack_path / p

    @property
    def jars_path(self) -> Path:
        return self.path(self.jars_dir)

    def connector_jar_uris(self) -> tuple[str, ...]:
        """The jars a job adds for the Kafka connector: ``flink.connector_jars`` when set,
        else the one `rtd setup` installed under the jars folder."""
        if self.flink.connector_jars:
            return self.flink.connector_jars
        jars = sorted((self.jars_path / "flink").glob("flink-sql-connector-kafka-*.jar"))
        if not jars:
            raise FileNotFoundError(
                f"the Flink Kafka connector jar is missing from {self.jars_path / 'flink'}: "
                "run `rtd setup`")
        return (jars[-1].as_uri(),)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, **overrides: Any) -> RtdConfig:
    """Load the config: defaults <- file (``path`` or $RTD_CONFIG) <- overrides."""
    data: dict[str, Any] = {}
    source = path or os.environ.get("RTD_CONFIG")
    if source:
        file = Path(source)
        if not file.exists():
            raise FileNotFoundError(
                f"config file {file} does not exist: pass an existing JSON file or unset RTD_CONFIG"
            )
        data = json.loads(file.read_text())
    if overrides:
        data = _deep_merge(data, overrides)
    return RtdConfig.model_validate(data)
