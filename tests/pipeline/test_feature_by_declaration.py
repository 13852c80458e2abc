"""A new feature is a declaration: no operator code names it."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from pyflink.common import Row, Types
from pyflink.datastream import StreamExecutionEnvironment

from feature_views.definitions import CARD_FEATURES, CUSTOMER_FEATURES
from feature_views.model import DAY_MS, Aggregation, Feature
from flink_jobs.decision_job import job_configuration
from flink_jobs.topology import build_features
from rtd_core.config import load_config
from tests.builders import HOUR, T0, encode, txn
from tests.pipeline.collection_source import collection_source

pytestmark = pytest.mark.pipeline



def test_card_amount_max_24h_added_by_declaration_alone():
    card_view = dataclasses.replace(
        CARD_FEATURES,
        version=CARD_FEATURES.version + 1,
        features=(*CARD_FEATURES.features,
                  Feature("card_amount_max_24h", Aggregation.MAX, DAY_MS, field="amount")),
    )
    events = [txn("c", 30.0, at=T0), txn("c", 700.0, at=T0 + HOUR),
              txn("c", 5.0, at=T0 + 2 * HOUR), txn("c", 1.0, at=T0 + DAY_MS + HOUR)]
    config = load_config(None, flink={"parallelism": 1, "bundle_time_ms": 5},
                         kafka={"partitions": 1})
    conf = job_configuration(config)
    conf.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    rows = [Row(e["card_id"].encode(), encode(e), "transactions", 0, i, None, None)
            for i, e in enumerate(events)]
    enriched = build_features(collection_source(env, rows), config,
                              views=(card_view, CUSTOMER_FEATURES))
    out = enriched.map(lambda r: (r.event["event_id"], r.features["card_amount_max_24h"]),
                       output_type=Types.TUPLE([Types.STRING(), Types.DOUBLE()]))
    got = dict(out.execute_and_collect())
    assert [got[e["event_id"]] for e in events] == [30.0, 700.0, 700.0, 5.0]
