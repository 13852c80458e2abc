"""The batched service's state: one rocksdict key per entity, a bounded LRU in front.

Each feature view's state of one entity (``feature_views/window_state.py``'s
``[last_time, entries, last_pruned]``) is one rocksdict value, pickled, under the key
``<view name>\\x00<entity key>``. It is loaded on first use and kept in an in-memory LRU
of at most ``capacity`` entities; entries touched by the batch in flight are dirty and
never evicted until ``flush`` has written them (so the LRU may exceed ``capacity`` by
one batch's entities, never more).

``flush`` writes every dirty entity and the service's progress (``Progress``: the next
offset per input partition and the largest event time seen, which the watermark is
derived from) in one RocksDB write batch, so state and the offsets it reflects change
together or not at all.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from feature_views.window_state import State, empty_state

PROGRESS_KEY = b"\x00progress"


@dataclass
class Progress:
    """What the stored state reflects: every input record before ``offsets[partition]``
    (nothing of a partition not named), and the largest event time among them."""

    offsets: dict[int, int] = field(default_factory=dict)
    max_event_time: int | None = None


def entity_key(view: str, key: str) -> bytes:
    return f"{view}\x00{key}".encode()


class EntityCache:
    """Lazily loaded, LRU-bounded entity state over a ``Rdict`` (or any mapping of bytes,
    in tests)."""

    def __init__(self, db: object, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.db = db
        self.capacity = capacity
        self._lru: OrderedDict[bytes, State] = OrderedDict()
        self._dirty: set[bytes] = set()
        self.loads = 0  # misses that read the store
        self.hits = 0

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, view: str, key: str) -> State:
        """The entity's state (empty if never seen), marked dirty: the caller mutates it."""
        k = entity_key(view, key)
        state = self._lru.get(k)
        if state is None:
            raw = self.db.get(k)  # type: ignore[attr-defined]
            self.loads += 1
            state = empty_state() if raw is None else pickle.loads(raw)
            self._lru[k] = state
        else:
            self.hits += 1
            self._lru.move_to_end(k)
        self._dirty.add(k)
        return state

    def discard_dirty(self) -> None:
        """Forget the batch's changes (its transaction was aborted): dirty entities are
        dropped from memory and read again from the store, which never saw them."""
        for k in self._dirty:
            self._lru.pop(k, None)
        self._dirty.clear()

    def dirty_items(self) -> list[tuple[bytes, bytes]]:
        return [(k, pickle.dumps(self._lru[k], protocol=pickle.HIGHEST_PROTOCOL))
                for k in self._dirty]

    def mark_clean(self) -> None:
        self._dirty.clear()
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)


class EntityStore:
    """The rocksdict database: entity state and ``Progress``, written together."""

    def __init__(self, path: Path, capacity: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(str(path), options)
        self.cache = EntityCache(self.db, capacity)

    def progress(self) -> Progress:
        raw = self.db.get(PROGRESS_KEY)
        return Progress() if raw is None else pickle.loads(raw)

    def flush(self, progress: Progress) -> None:
        """Every dirty entity and ``progress`` in one atomic RocksDB write."""
        batch = WriteBatch(raw_mode=True)
        for k, v in self.cache.dirty_items():
            batch.put(k, v)
        batch.put(PROGRESS_KEY, pickle.dumps(progress, protocol=pickle.HIGHEST_PROTOCOL))
        self.db.write(batch)
        self.cache.mark_clean()

    def close(self) -> None:
        self.db.close()
