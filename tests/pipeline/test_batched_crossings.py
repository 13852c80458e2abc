"""The batched-crossings bench's per-batch shape (bench/batched_crossings.py) loses no
event in the JVM's batching window and computes every feature of each: its figures in
docs/BENCHMARKS.md stand only if it does the same work as the job's path."""

import pytest

from bench.batched_crossings import run
from feature_views.definitions import FEATURE_NAMES

pytestmark = pytest.mark.pipeline


def test_every_event_reaches_python_in_a_batch_with_all_its_features():
    result = run("per-batch", 3_000, 200, {}, "features")
    assert result["events"] > 2_500
    assert result["processed"] == result["events"]
    # Grouped by shard and window: many batches, each far fewer rows than events.
    assert 10 < result["batches"] < result["events"] / 2
    assert result["feature_values"] == result["events"] * len(FEATURE_NAMES)
