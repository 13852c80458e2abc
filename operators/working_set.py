"""A bounded Python working set in front of a keyed ``MapState``: the store stays RocksDB.

The feature operator keeps each entity's window state in a ``MapState`` of the entity's
shard (entity key -> state). Reading it back costs a JNI crossing and an unpickle per
read, so the states used most recently stay in Python, least recently used evicted once
``capacity`` entities are held. Every write goes through to the ``MapState`` at once,
so checkpoints see every update and an evicted entity loses nothing: the next read of it
is a miss that reads the store. Memory is bounded by ``capacity``, not by entities seen.

An entity key belongs to exactly one shard (the shard is a hash of it), so one LRU can
serve every shard of a subtask; reads and writes happen only while the keyed context is
that entity's shard, as ``MapState`` needs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any


class WorkingSet:
    __slots__ = ("_capacity", "_lru", "_store", "hits", "miss_seconds", "misses")

    def __init__(self, store: Any, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self._store = store
        self._capacity = capacity
        self._lru: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.miss_seconds = 0.0  # time spent reading the store on misses: a miss's cost

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, key: str) -> Any | None:
        """The entity's state from memory, else from the store (None: never seen)."""
        lru = self._lru
        state = lru.get(key)
        if state is not None:
            lru.move_to_end(key)
            self.hits += 1
            return state
        self.misses += 1
        started = time.perf_counter()
        state = self._store.get(key)
        self.miss_seconds += time.perf_counter() - started
        if state is not None:
            self._hold(key, state)
        return state

    def put(self, key: str, state: Any) -> None:
        """Write through to the store and hold the state as most recently used."""
        self._store.put(key, state)
        self._hold(key, state)

    def remove_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._store.remove(key)
            self._lru.pop(key, None)

    def stored_items(self) -> Iterable[tuple[str, Any]]:
        """Every entity of the current shard, from the store (the truth, not the LRU)."""
        return self._store.items()

    def _hold(self, key: str, state: Any) -> None:
        lru = self._lru
        lru[key] = state
        lru.move_to_end(key)
        if len(lru) > self._capacity:
            lru.popitem(last=False)
