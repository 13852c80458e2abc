"""The point index: RocksDB (rocksdict) holding every trace, its secondary keys, the
completeness ledger and the consumer offsets that cover them.

Exactly-once rests on one rule: the data of a batch of Kafka records and the offsets
after them go into the same ``WriteBatch``, which RocksDB applies atomically (WAL
first). After a kill -9 the store holds either the whole batch and its offsets or
neither, and the service resumes from the stored offsets.

Key layout (one keyspace, prefixes sort the families apart):
  t|<decision_id>                      the trace as received (block-compressed, zstd)
  e|<event_id>                         -> decision_id
  c|<card>\\0<decided_at>\\0<id>        card range scans; u| the same by customer
  h|<hour>|<decision_id>               -> [event_id, card, customer, decided_at] (expiry)
  q|<partition>|<offset>               -> archive row (JSON), traces not yet archived
  D|<decision_id>                      a decision record was seen
  pd|<id> / pt|<id>                    a decision without its trace / the reverse
  pi|<id>                              a trace missing a part the contract asks for
  x|<topic>|<partition>|<offset>       a record that could not be read, kept as it was
  o|<topic>|<partition>                the next offset to consume
  a|<partition>                        the next trace offset to archive
  m|counts                             running totals (completeness)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
)

from audit.columns import row_dict
from audit.records import (
    AuditRow,
    DecisionRef,
    UnknownSchemaVersion,
    read_decision,
    read_trace,
)

HOUR_MS = 3_600_000
COUNT_KEYS = ("decisions", "traces", "duplicate_decisions", "duplicate_traces", "unreadable",
              "incomplete_traces", "last_decided_at")


def _k(*parts: str) -> bytes:
    return "|".join(parts).encode()


def _entity_key(prefix: str, entity: str, decided_at: int, decision_id: str) -> bytes:
    # Zero-padded so that byte order is time order within one entity.
    return f"{prefix}|{entity}\0{decided_at:013d}\0{decision_id}".encode()


def hour_of(ms: int) -> int:
    return ms - ms % HOUR_MS


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class IngestResult:
    traces: int = 0
    decisions: int = 0
    duplicates: int = 0
    unreadable: list[str] = field(default_factory=list)
    # What this batch newly stored (duplicates left out): the health monitor's input.
    rows: list[AuditRow] = field(default_factory=list)
    decision_refs: list[DecisionRef] = field(default_factory=list)


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    # Traces are ~5 KB of repetitive JSON: block compression packs many of them together,
    # which compresses far better than each value on its own.
    opts.set_compression_type(DBCompressionType.zstd())
    table = BlockBasedOptions()
    # Ingest asks "is this decision already stored?" for every record, nearly always of
    # an id that is not: bloom filters answer that without reading a block.
    table.set_bloom_filter(10, False)
    table.set_block_size(16 * 1024)
    table.set_block_cache(Cache(256 * 2**20))
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_size(64 * 2**20)
    opts.increase_parallelism(2)
    return opts


# A read-only open lists the live files from the MANIFEST, then opens them; the writer's
# compaction may delete one in between ("Corruption: IO error: No such file"), seen when
# `rtd explain` ran beside a filling store. Once open, the files stay readable (POSIX), so
# opening again is the whole fix.
READ_ONLY_OPEN_TRIES = 5


def _open_read_only(path: Path) -> Rdict:
    for attempt in range(READ_ONLY_OPEN_TRIES):
        try:
            return Rdict(str(path), options=_options(), access_type=AccessType.read_only())
        except Exception as exc:  # rocksdict raises a bare Exception
            if "No such file" not in str(exc) or attempt == READ_ONLY_OPEN_TRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class AuditStore:
    """One RocksDB store. One writer process (the service); readers open it read-only."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            if not (path / "CURRENT").exists():
                raise FileNotFoundError(
                    f"no audit store at {path}: start the audit service (`rtd stack up`) "
                    "and let it index the topics")
            self.db = _open_read_only(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self.db = Rdict(str(path), options=_options())
        raw = self.db.get(b"m|counts")
        stored = orjson.loads(raw) if raw else {}
        self.counts = {key: int(stored.get(key, 0)) for key in COUNT_KEYS}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- writing -----------------------------------------------------------------

    def ingest(self, traces_topic: str, records: Sequence[KafkaRecord],
               next_offsets: dict[tuple[str, int], int]) -> IngestResult:
        """Index ``records`` and store ``next_offsets`` in one atomic write batch."""
        batch = WriteBatch(raw_mode=True)
        result = IngestResult()
        seen_traces: set[str] = set()
        seen_decisions: set[str] = set()
        pending_put: dict[bytes, bytes] = {}
        pending_del: set[bytes] = set()
        counts = dict(self.counts)
        for record in records:
            try:
                obj = orjson.loads(record.value or b"null")
                if record.topic == traces_topic:
                    self._trace(batch, record, obj, seen_traces, seen_decisions,
                                pending_put, pending_del, counts, result)
                else:
                    self._decision(batch, record, obj, seen_traces, seen_decisions,
                                   pending_put, pending_del, counts, result)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                    UnknownSchemaVersion) as exc:
                # Never lost: kept with its position, counted, listed by completeness.
                where = f"{record.topic}|{record.partition:05d}|{record.offset:020d}"
                batch.put(_k("x", where), orjson.dumps(
                    {"error": str(exc), "value": (record.value or b"").decode(errors="replace")}))
                counts["unreadable"] += 1
                result.unreadable.append(where)
        for key, value in pending_put.items():
            batch.put(key, value)
        for key in pending_del - pending_put.keys():
            batch.delete(key)
        for (topic, partition), offset in next_offsets.items():
            batch.put(_k("o", topic, f"{partition:05d}"), str(offset).encode())
        batch.put(b"m|counts", orjson.dumps(counts))
        self.db.write(batch)
        self.counts = counts
        return result

    def _has(self, key: bytes, pending_put: dict[bytes, bytes],
             pending_del: set[bytes]) -> bool:
        if key in pending_put:
            return True
        return key not in pending_del and self.db.get(key) is not None

    def _trace(self, batch: WriteBatch, record: KafkaRecord, obj: Any,
               seen: set[str], seen_decisions: set[str], pending_put: dict[bytes, bytes],
               pending_del: set[bytes], counts: dict[str, int], result: IngestResult) -> None:
        row = read_trace(obj)
        did = row.decision_id
        counts["traces"] += 1
        result.traces += 1
        if did in seen or self.db.get(_k("t", did)) is not None:
            # A second trace of one decision: the log has a duplicate, the store keeps one.
            counts["duplicate_traces"] += 1
            result.duplicates += 1
            return
        seen.add(did)
        result.rows.append(row)
        counts["last_decided_at"] = max(counts["last_decided_at"], row.decided_at)
        batch.put(_k("t", did), record.value or b"")
        batch.put(_k("e", row.event_id), did.encode())
        batch.put(_entity_key("c", row.card_id, row.decided_at, did), b"")
        batch.put(_entity_key("u", row.customer_id, row.decided_at, did), b"")
        batch.put(_k("h", f"{hour_of(row.decided_at):013d}", did), orjson.dumps(
            [row.event_id, row.card_id, row.customer_id, row.decided_at]))
        batch.put(_k("q", f"{record.partition:05d}", f"{record.offset:020d}"),
                  orjson.dumps(row_dict(row, record.partition, record.offset)))
        where = orjson.dumps([record.partition, record.offset, row.decided_at])
        if not row.complete:
            counts["incomplete_traces"] += 1
            batch.put(_k("pi", did), where)
        if did in seen_decisions or self._has(_k("D", did), pending_put, pending_del):
            pending_del.add(_k("pd", did))
            pending_put.pop(_k("pd", did), None)
        else:
            pending_put[_k("pt", did)] = where

    def _decision(self, batch: WriteBatch, record: KafkaRecord, obj: Any,
                  seen_traces: set[str], seen: set[str], pending_put: dict[bytes, bytes],
                  pending_del: set[bytes], counts: dict[str, int],
                  result: IngestResult) -> None:
        ref = read_decision(obj)
        did = ref.decision_id
        counts["decisions"] += 1
        result.decisions += 1
        if did in seen or self._has(_k("D", did), pending_put, pending_del):
            counts["duplicate_decisions"] += 1
            result.duplicates += 1
            return
        seen.add(did)
        result.decision_refs.append(ref)
        pending_put[_k("D", did)] = orjson.dumps([record.partition, record.offset])
        if did in seen_traces or self.db.get(_k("t", did)) is not None:
            pending_del.add(_k("pt", did))
            pending_put.pop(_k("pt", did), None)
        else:
            pending_put[_k("pd", did)] = orjson.dumps(
                [record.partition, record.offset, ref.decided_at])

    # ---- reading -----------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to consume of every (topic, partition) the store has seen."""
        out = {}
        for key, value in self._prefix(b"o|"):
            _o, topic, partition = key.decode().rsplit("|", 2)
            out[(topic, int(partition))] = int(value)
        return out

    def trace_bytes(self, event_or_decision_id: str) -> bytes | None:
        value = self.db.get(_k("t", event_or_decision_id))
        if value is not None:
            return value
        did = self.db.get(_k("e", event_or_decision_id))
        return None if did is None else self.db.get(_k("t", did.decode()))

    def trace(self, event_or_decision_id: str) -> dict[str, Any] | None:
        raw = self.trace_bytes(event_or_decision_id)
        return None if raw is None else orjson.loads(raw)

    def search(self, *, card: str | None = None, customer: str | None = None,
               start_ms: int = 0, end_ms: int = 9_999_999_999_999,
               limit: int = 1_000) -> list[dict[str, Any]]:
        """Traces of one card or customer decided in [start_ms, end_ms), oldest first."""
        if (card is None) == (customer is None):
            raise ValueError("search by exactly one of card or customer")
        prefix, entity = ("c", card) if card is not None else ("u", customer)
        assert entity is not None
        low = _entity_key(prefix, entity, start_ms, "")
        high = _entity_key(prefix, entity, end_ms, "")
        out: list[dict[str, Any]] = []
        it = self.db.iter()
        it.seek(low)
        while it.valid() and it.key() < high and len(out) < limit:
            did = it.key().rsplit(b"\0", 1)[1].decode()
            raw = self.db.get(_k("t", did))
            if raw is not None:
                out.append(orjson.loads(raw))
            it.next()
        return out

    def _prefix(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start or prefix)
        while it.valid() and it.key().startswith(prefix):
            yield it.key(), it.value()
            it.next()

    def pending(self, kind: str) -> list[tuple[str, list[int]]]:
        """``pd`` (decisions without a trace), ``pt`` (traces without a decision) or
        ``pi`` (incomplete traces): (decision_id, [partition, offset, decided_at])."""
        prefix = f"{kind}|".encode()
        return [(k[len(prefix):].decode(), orjson.loads(v)) for k, v in self._prefix(prefix)]

    def unreadable(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k[2:].decode(), orjson.loads(v)) for k, v in self._prefix(b"x|")]

    # ---- archive bookkeeping -----------------------------------------------------

    def unarchived(self, partition: int, limit: int) -> list[dict[str, Any]]:
        """The archive rows of a trace partition's indexed, not yet archived traces, in
        offset order."""
        prefix = _k("q", f"{partition:05d}") + b"|"
        out = []
        for key, value in self._prefix(prefix):
            if value.startswith(b"{"):
                out.append(orjson.loads(value))
            else:  # a log entry of a store written before rows were kept in the log
                raw = self.db.get(b"t|" + value)
                if raw is not None:
                    out.append(row_dict(read_trace(orjson.loads(raw)), partition,
                                        int(key[len(prefix):])))
            if len(out) >= limit:
                break
        return out

    def unarchived_partitions(self) -> list[int]:
        parts = set()
        it = self.db.iter()
        it.seek(b"q|")
        while it.valid() and it.key().startswith(b"q|"):
            p = int(it.key()[2:7])
            parts.add(p)
            it.seek(f"q|{p + 1:05d}".encode())
        return sorted(parts)

    def mark_archived(self, partition: int, up_to_offset: int) -> None:
        """Drop the ingest log up to and including ``up_to_offset`` once a file holds it."""
        batch = WriteBatch(raw_mode=True)
        base = f"q|{partition:05d}|"
        batch.delete_range(base.encode(), f"{base}{up_to_offset + 1:020d}".encode())
        batch.put(_k("a", f"{partition:05d}"), str(up_to_offset + 1).encode())
        self.db.write(batch)

    # ---- retention ---------------------------------------------------------------

    def expire_before(self, cutoff_ms: int) -> int:
        """Delete every decision of the whole hours before ``cutoff_ms``'s hour."""
        removed = 0
        limit = f"h|{hour_of(cutoff_ms):013d}".encode()
        batch = WriteBatch(raw_mode=True)
        for key, value in self._prefix(b"h|"):
            if key >= limit:
                break
            did = key.rsplit(b"|", 1)[1].decode()
            event_id, card, customer, decided_at = orjson.loads(value)
            for k in (_k("t", did), _k("e", event_id), _k("D", did), _k("pd", did),
                      _k("pt", did), _k("pi", did), _entity_key("c", card, decided_at, did),
                      _entity_key("u", customer, decided_at, did), key):
                batch.delete(k)
            removed += 1
            if batch.len() > 20_000:
                self.db.write(batch)
                batch = WriteBatch(raw_mode=True)
        self.db.write(batch)
        return removed

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
