"""The feature operator's bounded working set in front of its MapState store."""

from __future__ import annotations

from typing import Any

import pytest

from operators.working_set import WorkingSet

pytestmark = pytest.mark.unit


class FakeMapState:
    """The MapState calls WorkingSet makes, counting the reads that reach the store."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.gets = 0

    def get(self, key: str) -> Any:
        self.gets += 1
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def remove(self, key: str) -> None:
        del self.data[key]

    def keys(self) -> Any:
        return list(self.data)

    def items(self) -> Any:
        return list(self.data.items())


def test_memory_holds_at_most_capacity_and_the_store_holds_everything() -> None:
    store = FakeMapState()
    entities = WorkingSet(store, capacity=3)
    for i in range(10):
        entities.put(f"k{i}", [i])
    assert len(entities) == 3
    assert sorted(store.data) == sorted(f"k{i}" for i in range(10))


def test_a_miss_reads_the_store_and_a_hit_does_not() -> None:
    store = FakeMapState()
    entities = WorkingSet(store, capacity=2)
    entities.put("a", [1])
    entities.put("b", [2])
    entities.put("c", [3])  # evicts a, the least recently used
    assert entities.get("c") == [3] and store.gets == 0
    assert entities.get("a") == [1] and store.gets == 1  # evicted: read back, nothing lost
    assert entities.get("a") == [1] and store.gets == 1  # held again
    assert (entities.hits, entities.misses) == (2, 1)
    # a key the store does not hold is new without a read: its shard's keys were read once
    assert entities.get("never") is None and store.gets == 1


def test_a_shard_s_keys_are_read_once_and_a_stored_key_is_read_back() -> None:
    store = FakeMapState()
    store.data.update({"old": [7]})  # in the store from before a restart, not in memory
    entities = WorkingSet(store, capacity=2)
    assert entities.get("old", shard=3) == [7] and store.gets == 1
    assert entities.get("new", shard=3) is None and store.gets == 1
    entities.remove_all(["old"], shard=3)
    assert entities.get("old", shard=3) is None and store.gets == 1


def test_use_refreshes_recency() -> None:
    store = FakeMapState()
    entities = WorkingSet(store, capacity=2)
    entities.put("a", [1])
    entities.put("b", [2])
    entities.get("a")
    entities.put("c", [3])  # b is now the least recently used
    store.gets = 0
    entities.get("a")
    assert store.gets == 0
    entities.get("b")
    assert store.gets == 1


def test_remove_all_drops_from_memory_and_store() -> None:
    store = FakeMapState()
    entities = WorkingSet(store, capacity=5)
    for key in "abc":
        entities.put(key, [key])
    entities.remove_all(["a", "b"])
    assert store.data == {"c": ["c"]} and len(entities) == 1
    assert entities.get("a") is None
    assert list(entities.stored_items()) == [("c", ["c"])]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WorkingSet(FakeMapState(), capacity=0)


class ShardedMapState(FakeMapState):
    """A MapState as the operator sees it: its content is the current key's (shard's)."""

    def __init__(self) -> None:
        super().__init__()
        self.shards: dict[int, dict[str, Any]] = {}
        self.at(0)

    def at(self, shard: int) -> ShardedMapState:
        self.data = self.shards.setdefault(shard, {})
        return self


def test_key_sets_are_bounded_and_an_untracked_shard_reads_the_store() -> None:
    """Memory is bounded by settings, not by entities seen: past ``key_capacity`` keys,
    the largest shard's key set goes and that shard's misses read the store."""
    store = ShardedMapState()
    entities = WorkingSet(store, capacity=1, key_capacity=4)
    for i in range(3):
        store.at(0)
        entities.put(f"a{i}", {"n": i}, shard=0)
    for i in range(2):
        store.at(1)
        entities.put(f"b{i}", {"n": i}, shard=1)  # 5 keys: shard 0's set is dropped
    assert entities.untracked_shards == 1
    assert entities.keys_tracked == 2  # what the operator publishes as keys_tracked
    reads = store.gets
    store.at(1)
    assert entities.get("new-b", shard=1) is None and store.gets == reads  # still tracked
    store.at(0)
    assert entities.get("new-a", shard=0) is None and store.gets == reads + 1  # read
    assert entities.get("a0", shard=0) == {"n": 0}  # not in memory: read back
    store.at(2)
    for i in range(100):
        entities.put(f"c{i}", {"n": i}, shard=2)
    assert entities.untracked_shards == 2
    assert entities.keys_tracked <= 4
    assert all(entities.get(f"c{i}", shard=2) == {"n": i} for i in range(100))


def test_key_capacity_0_tracks_no_keys() -> None:
    store = FakeMapState()
    entities = WorkingSet(store, capacity=2, key_capacity=0)
    entities.put("x", 1)
    assert entities.get("y") is None and store.gets == 1
    assert entities.get("x") == 1


def test_history_entries_bound_memory_as_states_grow() -> None:
    """A state grows with its entity's events: the summed weight evicts, not only the
    entity count, and the store still holds every state."""
    store = FakeMapState()
    entities = WorkingSet(store, capacity=100, weigh=len, weight_capacity=10)
    for key in "abc":
        entities.put(key, [0, 0, 0])
    assert (len(entities), entities.weight) == (3, 9)
    state = entities.get("a")
    state += [0, 0]  # the caller grows a held state, then puts it back
    entities.put("a", state)
    # 11 > 10: b, the least recently used, goes; a (5) and c (3) stay
    assert (len(entities), entities.weight) == (2, 8)
    assert entities.get("b") == [0, 0, 0] and store.gets == 1  # read back, nothing lost
    # b held again (11 again): c, now the least recently used, goes
    assert (len(entities), entities.weight) == (2, 8)
    assert entities.get("c") == [0, 0, 0] and store.gets == 2
    entities.remove_all(["a", "b"])
    assert "a" not in store.data and (len(entities), entities.weight) == (1, 3)


def test_a_state_over_the_history_capacity_alone_is_still_held() -> None:
    store = FakeMapState()
    entities = WorkingSet(store, capacity=100, weigh=len, weight_capacity=4)
    entities.put("small", [1])
    entities.put("big", [1] * 9)
    assert len(entities) == 1 and entities.weight == 9
    assert entities.get("big") == [1] * 9 and store.gets == 0


def test_weigh_and_weight_capacity_go_together() -> None:
    with pytest.raises(ValueError, match="together"):
        WorkingSet(FakeMapState(), capacity=1, weigh=len)
    with pytest.raises(ValueError, match="weight_capacity"):
        WorkingSet(FakeMapState(), capacity=1, weigh=len, weight_capacity=0)


def test_the_job_bounds_each_view_by_its_history_setting() -> None:
    """The setting reaches the operator, and a view's states weigh their history."""
    from feature_views.window_state import empty_state, history_size
    from flink_jobs.topology import shard_features
    from rtd_core.config import load_config

    features = shard_features(load_config(job={"working_set_history": 7}))
    assert features.history_capacity == 7
    state = empty_state()
    state[1] += [(1, 2.0), (2, 3.0)]
    assert history_size(state) == 2 and history_size(empty_state()) == 0
