"""A bounded Python working set in front of a keyed ``MapState``: the store stays RocksDB.

The feature operator keeps each entity's window state in a ``MapState`` of the entity's
shard (entity key -> state). Reading it back costs a JNI crossing and an unpickle per
read, so the states used most recently stay in Python, least recently used evicted once
``capacity`` entities are held, or once their summed ``weigh`` (a feature state's
history entries, one per event still in a window) passes ``weight_capacity``: a state
grows with its entity's events, so an entity count alone does not bound memory (the
hour's soak: 50,000 states per view held 7,800 more entries a minute, docs/
RELIABILITY.md). Every write goes through to the ``MapState`` at once, so checkpoints
see every update and an evicted entity loses nothing: the next read of it is a miss that
reads the store. Memory is bounded by the two capacities, not by entities seen.

An entity key belongs to exactly one shard (the shard is a hash of it), so one LRU can
serve every shard of a subtask; reads and writes happen only while the keyed context is
that entity's shard, as ``MapState`` needs.

Most entities a stream brings are new, and a miss for an entity the store does not hold
would still cost a store read: in process mode a blocking round trip to the JVM each
(the async scorer behind it then timed out rows, 310 of 2,909 in the end-to-end test).
So the first use of a shard since (re)start reads the shard's keys once, and a key not
among them is new without a read. The key sets hold only keys of live entities (expiry
removes them), far smaller than their states, and at most ``key_capacity`` of them in
all: past that, the largest shard's set is dropped and that shard's misses read the
store again (``untracked_shards`` counts them). So memory is bounded by the two
settings, not by entities seen: a million cards in 30 days fit neither.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any


def _weightless(state: Any) -> int:
    return 0


class WorkingSet:
    __slots__ = ("_capacity", "_key_capacity", "_key_count", "_known", "_lru", "_store",
                 "_weigh", "_weight", "_weight_capacity", "_weights", "hits", "miss_seconds",
                 "misses", "untracked_shards")

    def __init__(self, store: Any, capacity: int, key_capacity: int = 500_000, *,
                 weigh: Callable[[Any], int] | None = None,
                 weight_capacity: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        if key_capacity < 0:
            raise ValueError(f"key_capacity must be >= 0, not {key_capacity}")
        if (weigh is None) != (weight_capacity is None):
            raise ValueError("weigh and weight_capacity go together")
        if weight_capacity is not None and weight_capacity < 1:
            raise ValueError(f"weight_capacity must be >= 1, not {weight_capacity}")
        self._store = store
        self._capacity = capacity
        self._key_capacity = key_capacity
        # Unweighed, every state weighs 0 and only ``capacity`` evicts.
        self._weigh = weigh or _weightless
        self._weight_capacity = weight_capacity or 0
        self._weight = 0  # summed weight of the states held
        self._weights: dict[str, int] = {}  # per held key, its weight when last put
        self._lru: OrderedDict[str, Any] = OrderedDict()
        # Per shard: the keys the store holds, or None once the shard is not tracked.
        self._known: dict[int, set[str] | None] = {}
        self._key_count = 0
        self.untracked_shards = 0
        self.hits = 0
        self.misses = 0
        self.miss_seconds = 0.0  # time spent reading the store on misses: a miss's cost

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def weight(self) -> int:
        """Summed ``weigh`` of the states held (0 without ``weigh``)."""
        return self._weight

    @property
    def keys_tracked(self) -> int:
        """Entity keys held to tell a new entity without a store read."""
        return self._key_count

    def _keys(self, shard: int) -> set[str] | None:
        if shard in self._known:
            return self._known[shard]
        if self._key_capacity == 0:
            self._known[shard] = None
            return None
        known = self._known[shard] = set(self._store.keys())
        self._key_count += len(known)
        self._bound()
        return self._known[shard]

    def _bound(self) -> None:
        """Drop the largest key sets until at most ``key_capacity`` keys are held."""
        while self._key_count > self._key_capacity:
            shard, keys = max(((s, k) for s, k in self._known.items() if k is not None),
                              key=lambda item: len(item[1]))
            self._known[shard] = None
            self._key_count -= len(keys)
            self.untracked_shards += 1

    def get(self, key: str, shard: int = 0) -> Any | None:
        """The entity's state from memory, else from the store (None: never seen)."""
        lru = self._lru
        state = lru.get(key)
        if state is not None:
            lru.move_to_end(key)
            self.hits += 1
            return state
        known = self._keys(shard)
        if known is not None and key not in known:
            return None  # new: the store does not hold it either
        self.misses += 1
        started = time.perf_counter()
        state = self._store.get(key)
        self.miss_seconds += time.perf_counter() - started
        if state is not None:
            self._hold(key, state)
        return state

    def put(self, key: str, state: Any, shard: int = 0) -> None:
        """Write through to the store and hold the state as most recently used."""
        self._store.put(key, state)
        known = self._keys(shard)
        if known is not None and key not in known:
            known.add(key)
            self._key_count += 1
            self._bound()
        self._hold(key, state)

    def remove_all(self, keys: Iterable[str], shard: int = 0) -> None:
        # A shard not yet used since (re)start has no key set to mend: it is read
        # whole, after these removals, on its first use.
        known = self._known.get(shard)
        for key in keys:
            self._store.remove(key)
            if self._lru.pop(key, None) is not None:
                self._weight -= self._weights.pop(key)
            if known is not None and key in known:
                known.discard(key)
                self._key_count -= 1

    def stored_items(self) -> Iterable[tuple[str, Any]]:
        """Every entity of the current shard, from the store (the truth, not the LRU)."""
        return self._store.items()

    def _hold(self, key: str, state: Any) -> None:
        lru = self._lru
        lru[key] = state
        lru.move_to_end(key)
        # Weighed when put: the caller changes a state between its get and its put.
        weights = self._weights
        weight = self._weigh(state)
        self._weight += weight - weights.get(key, 0)
        weights[key] = weight
        # The state just put stays, even alone over the weight capacity: it is in use.
        while len(lru) > 1 and (len(lru) > self._capacity
                                or self._weight > self._weight_capacity):
            evicted, _ = lru.popitem(last=False)
            self._weight -= weights.pop(evicted)
