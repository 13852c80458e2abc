"""Peer (b): the same decisions as a Quix Streams application (quixstreams 3.28).

Quix's own sliding windows over RocksDB state (with changelog topics), a repartition by
customer (``group_by``), ``processing_guarantee="exactly-once"`` (transactional producer,
read_committed consumer, a commit every ``commit_interval``, here the job's checkpoint
interval so commit-visible latencies compare), one synchronous Predict per event, and the
job's rules and decision record.

How the features map onto Quix's window API, and where they differ from the contract
(docs/BENCHMARKS.md repeats this next to the figures):
  - Quix windows emit window aggregates, not the event: each window carries the record
    through with ``Latest()``, and the windows are chained (1 h, 1 min, 5 min, 10 min per
    card; 24 h, 1 h per customer), one RocksDB window store each.
  - An out-of-order event makes a sliding window re-emit the windows of later events it
    falls into; those re-emissions are dropped by matching the carried record's source
    offset to the message being processed, so each event yields one decision whose
    windows hold only events with an event time <= its own (the contract's rule).
  - Sliding windows are closed on both ends, [t - W, t]; the contract's are (t - W, t].
    An event exactly W before counts here and not in the job.
  - Distinct counts and "country changed" need custom ``Aggregator``s (value -> count
    maps); Quix's ``Collect`` cannot be used with ``.current()``.
  - Seconds since the last transaction looks back 30 days; a 30-day sliding window per card
    is not workable, so a ``stateful=True`` apply keeps the card's recent event times
    in Quix ``State`` (RocksDB) instead.
  - Quix has no watermark: "late" is judged per card (its latest event time minus the
    watermark delay and the allowed lateness), not per partition as in the job.
  - Windows use a grace period of 15 minutes so that the simulator's late events (up to
    10 minutes) are still decided; Quix would drop anything later without a decision
    (counted by ``on_late``).
  - Malformed events are skipped (``IgnoreMessage``), not dead-lettered; no traces.

    python -m bench.peers.quix_app --config cfg.json --input T --output D --group G \
        --state-dir DIR
"""

from __future__ import annotations

import argparse
import bisect
import logging
import sys
from collections.abc import Callable
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.dataframe.windows import Count, Latest, Sum
from quixstreams.dataframe.windows.aggregations import Aggregator
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models.serializers import Deserializer, IgnoreMessage, SerializationContext

from bench.peers.common import SyncModelClient, decision_json
from decisioning.rules import load_rules
from decisioning.transaction import Rejection, validate
from feature_views.model import DAY_MS, HOUR_MS, MINUTE_MS
from rtd_core.config import RtdConfig, load_config
from rtd_core.security import kafka_client_properties

GRACE_MS = 15 * MINUTE_MS
LAST_SEEN_LOOKBACK_MS = 30 * DAY_MS
RECENT_TIMES_KEPT = 32
_late_dropped = 0


class ValidatedEvent(Deserializer):
    """The job's validation; a malformed event is ignored (Quix has no dead-letter sink)."""

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any]:
        event = validate(value)
        if isinstance(event, Rejection):
            raise IgnoreMessage(event.reason)
        return {**event, "_features": {}, "_late": False}


class ValueCounts(Aggregator):
    """A ``{value: occurrences}`` map of one column: exact distinct counts and "seen
    another value" from one window state (JSON-serialisable, as Quix state must be)."""

    def initialize(self) -> dict[str, int]:
        return {}

    def agg(self, old: dict[str, int], new: Any, timestamp: int) -> dict[str, int]:
        value = new.get(self.column)
        if value is None:
            return old
        out = dict(old)
        out[value] = out.get(value, 0) + 1
        return out

    def result(self, value: dict[str, int]) -> dict[str, int]:
        return value

    def merge(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        out = dict(a)
        for k, n in b.items():
            out[k] = out.get(k, 0) + n
        return out


def _mark_source(value: dict[str, Any]) -> dict[str, Any]:
    ctx = message_context()
    value["_src"] = [ctx.partition, ctx.offset]
    return value


def _own_window(window: dict[str, Any]) -> bool:
    """Keep the window of the message being processed, not re-emitted later ones."""
    ctx = message_context()
    return window["record"]["_src"] == [ctx.partition, ctx.offset]


def _event_time(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> int:
    return int(value["event_time"])


def _windowed(sdf: Any, name: str, duration_ms: int, aggregations: dict[str, Any],
              features: Callable[[dict[str, Any], dict[str, Any]], dict[str, float]]) -> Any:
    """One sliding window that carries the record through and adds its features."""

    def on_late(*_: Any) -> bool:
        global _late_dropped
        _late_dropped += 1
        return False  # counted here; Quix's own warning per record would flood the log

    sdf = sdf.sliding_window(duration_ms=duration_ms, grace_ms=GRACE_MS, name=name,
                             on_late=on_late) \
        .agg(record=Latest(), **aggregations).current()
    sdf = sdf.filter(_own_window)

    def merge(window: dict[str, Any]) -> dict[str, Any]:
        # A copy: the window's stored aggregate must not change under later windows.
        record = dict(window["record"])
        record["_features"] = {**record["_features"], **features(window, record)}
        return record

    return sdf.apply(merge).set_timestamp(_event_time)


def _last_seen_and_late(config: RtdConfig) -> Callable[[dict[str, Any], State], dict[str, Any]]:
    delay, lateness = config.job.watermark_delay_ms, config.job.allowed_lateness_ms

    def apply(value: dict[str, Any], state: State) -> dict[str, Any]:
        t = value["event_time"]
        times: list[int] = state.get("times", [])
        latest = state.get("latest", None)
        i = bisect.bisect_right(times, t)
        previous = times[i - 1] if i else None
        if previous is None or previous <= t - LAST_SEEN_LOOKBACK_MS:
            value["_features"]["card_seconds_since_last_txn"] = -1.0
        else:
            value["_features"]["card_seconds_since_last_txn"] = (t - previous) / 1000.0
        value["_late"] = latest is not None and t < latest - delay - lateness
        times.insert(i, t)
        state.set("times", times[-RECENT_TIMES_KEPT:])
        state.set("latest", t if latest is None else max(latest, t))
        return value

    return apply


def build_app(config: RtdConfig, args: argparse.Namespace) -> Application:
    rules = load_rules(config.path(config.rules_file) if config.rules_file else None)
    model = SyncModelClient(config.serving)
    app = Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(
            kafka_client_properties(config.kafka)),
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=config.flink.checkpoint_interval_ms / 1000.0,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    source = app.topic(args.input, value_deserializer=ValidatedEvent(), key_deserializer="str",
                       timestamp_extractor=lambda v, h, ts, tt: int(v["event_time"]))
    sink = app.topic(args.output, value_serializer="bytes", key_serializer="str")

    sdf = app.dataframe(source)
    sdf = sdf.apply(_last_seen_and_late(config), stateful=True)
    sdf = sdf.apply(_mark_source)
    sdf = _windowed(sdf, "card_1h", HOUR_MS,
                    {"n": Count(), "amount": Sum("amount")},
                    lambda w, r: {"card_txn_count_1h": w["n"],
                                  "card_amount_sum_1h": round(w["amount"], 6)})
    sdf = _windowed(sdf, "card_1m", MINUTE_MS, {"n": Count()},
                    lambda w, r: {"card_txn_count_1m": w["n"]})
    sdf = _windowed(sdf, "card_5m", 5 * MINUTE_MS, {"merchants": ValueCounts("merchant_id")},
                    lambda w, r: {"card_distinct_merchants_5m": len(w["merchants"])})
    sdf = _windowed(sdf, "card_10m", 10 * MINUTE_MS, {"countries": ValueCounts("country")},
                    lambda w, r: {"card_country_changed_10m":
                                  int(any(c != r["country"] for c in w["countries"]))})

    sdf = sdf.group_by(lambda v: v["customer_id"], name="customer_id")
    sdf = sdf.set_timestamp(_event_time).apply(_mark_source)
    sdf = _windowed(sdf, "customer_24h", DAY_MS,
                    {"n": Count(), "amount": Sum("amount")},
                    lambda w, r: {"customer_txn_count_24h": w["n"],
                                  "customer_amount_sum_24h": round(w["amount"], 6)})
    sdf = _windowed(sdf, "customer_1h", HOUR_MS, {"cards": ValueCounts("card_id")},
                    lambda w, r: {"customer_distinct_cards_1h": len(w["cards"])})

    def decide(record: dict[str, Any]) -> bytes:
        features = record["_features"]
        event = {k: v for k, v in record.items() if not k.startswith("_")}
        return decision_json(config, rules, event, features, model.score(event, features),
                             record["_late"])

    sdf = sdf.apply(decide)
    sdf.to_topic(sink, key=lambda value: _card_of(value))
    return app


def _card_of(decision: bytes) -> str:
    # The decision record's card_id, without a second JSON parse of the whole record.
    marker = b'"card_id":"'
    start = decision.index(marker) + len(marker)
    return decision[start:decision.index(b'"', start)].decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--config", "--input", "--output", "--group", "--state-dir"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = build_app(load_config(args.config), args)
    app.run()  # returns on SIGTERM/SIGINT after a final commit
    print(f"stopped; {_late_dropped} window updates dropped as late", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
