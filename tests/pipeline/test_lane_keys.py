"""operators/lanes.py's replica of Flink's key-group assignment, against a real Flink job."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pyflink.common import Configuration, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment

from operators.lanes import MAX_PARALLELISM, lane_keys, subtask_of

pytestmark = pytest.mark.pipeline

PARALLELISM = 3


class WhereAmI(KeyedProcessFunction):
    """Tags each key with a token of the subtask instance that processed it.

    (Not the subtask index: ``get_index_of_this_subtask`` fails in PyFlink 2.2's thread
    mode. Which keys share a subtask is what lanes need anyway.)"""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.token = uuid.uuid4().hex

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        yield value, self.token


def test_integer_keys_land_on_the_subtasks_the_replica_predicts() -> None:
    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.execution-mode", "thread")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(PARALLELISM)
    env.set_max_parallelism(MAX_PARALLELISM)
    keys = list(range(40))
    placed = env.from_collection(keys, type_info=Types.INT()) \
        .key_by(lambda k: k, key_type=Types.INT()) \
        .process(WhereAmI(), output_type=Types.TUPLE([Types.INT(), Types.STRING()]))
    token_of = dict(placed.execute_and_collect())
    observed = groups(token_of)
    predicted = groups({k: subtask_of(k, PARALLELISM) for k in keys})
    assert len(predicted) == PARALLELISM  # the keys spread over every subtask
    assert observed == predicted
    lanes = lane_keys(PARALLELISM)
    assert all(lane in keys for lane in lanes)
    assert len({token_of[lane] for lane in lanes}) == PARALLELISM  # one lane per subtask


def groups(placement: dict[int, Any]) -> set[frozenset[int]]:
    """Which keys were processed together, whatever the subtasks are called."""
    by_place: dict[Any, set[int]] = {}
    for key, place in placement.items():
        by_place.setdefault(place, set()).add(key)
    return {frozenset(ks) for ks in by_place.values()}
