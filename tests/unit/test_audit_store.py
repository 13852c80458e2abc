"""The audit store on its own: point index, search, ledger, archive, expiry (no broker)."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from audit.archive import ArchiveWriter, archived_files, sql
from audit.completeness import completeness_report
from audit.records import TRACE_READERS, UnknownSchemaVersion, read_trace
from audit.store import HOUR_MS, AuditStore, KafkaRecord
from bench.audit_traces import T0, decision_and_trace
from tests.builders import v1_traces, v2_of_v1

pytestmark = pytest.mark.unit
TRACES, DECISIONS = "decision-traces", "decisions"


def records(n: int, start: int = 0, **kw: object) -> tuple[list[KafkaRecord], list[KafkaRecord]]:
    traces, decisions = [], []
    for i in range(start, start + n):
        decision, trace = decision_and_trace(i, **kw)  # type: ignore[arg-type]
        traces.append(KafkaRecord(TRACES, 0, i, orjson.dumps(trace)))
        decisions.append(KafkaRecord(DECISIONS, 1, i, orjson.dumps(decision)))
    return traces, decisions


def ingest(store: AuditStore, batch: list[KafkaRecord]) -> None:
    offsets = {(r.topic, r.partition): r.offset + 1 for r in batch}
    store.ingest(TRACES, batch, offsets)


def report(store: AuditStore, now: int) -> dict:
    return completeness_report(store, decisions_topic=DECISIONS, traces_topic=TRACES,
                               grace_ms=60_000, now_ms=now)


def test_lookup_by_decision_and_event_id_and_offsets_in_the_same_batch(tmp_path):
    traces, decisions = records(5)
    with AuditStore(tmp_path) as store:
        ingest(store, traces + decisions)
        trace = orjson.loads(traces[3].value)
        assert store.trace(trace["decision_id"]) == trace
        assert store.trace(trace["event_id"]) == trace
        assert store.trace("nope") is None
        assert store.offsets() == {(TRACES, 0): 5, (DECISIONS, 1): 5}
    with AuditStore(tmp_path, read_only=True) as again:
        assert again.counts["traces"] == 5 and again.counts["decisions"] == 5


def test_search_returns_one_card_in_a_time_range_oldest_first(tmp_path):
    traces, _ = records(10, card="c-1", customer="u-1")
    other, _ = records(3, start=10, card="c-2")
    with AuditStore(tmp_path) as store:
        ingest(store, traces + other)
        found = store.search(card="c-1", start_ms=T0 + 2_000, end_ms=T0 + 5_000)
        assert [t["event_id"] for t in found] == ["sim-0000000002", "sim-0000000003",
                                                  "sim-0000000004"]
        assert len(store.search(customer="u-1")) == 10
        with pytest.raises(ValueError):
            store.search()


def test_a_redelivered_record_is_counted_as_a_duplicate_not_stored_twice(tmp_path):
    traces, decisions = records(3)
    with AuditStore(tmp_path) as store:
        ingest(store, traces + decisions)
        ingest(store, traces[:1] + decisions[:1])
        assert store.counts["duplicate_traces"] == 1
        assert store.counts["duplicate_decisions"] == 1
        assert len(store.unarchived(0, 100)) == 3


def test_completeness_lists_a_decision_without_trace_and_a_trace_without_decision(tmp_path):
    traces, decisions = records(4)
    with AuditStore(tmp_path) as store:
        ingest(store, traces[:3] + decisions[1:])  # trace 3 and decision 0 are missing
        late = report(store, now=T0 + 10 * HOUR_MS)
        assert [e["decision_id"] for e in late["decisions_without_trace"]] == [
            orjson.loads(decisions[3].value)["decision_id"]]
        assert late["decisions_without_trace"][0]["offset"] == 3
        assert [e["offset"] for e in late["traces_without_decision"]] == [0]
        assert late["share_complete"] == pytest.approx(2 / 3)
        # within the grace period the same gap is in flight, not missing
        early = report(store, now=T0 + 4_000)
        assert early["decisions_without_trace"] == []
        assert early["in_flight"]["decisions_without_trace"] == 1
        # the trace arrives later: complete
        ingest(store, traces[3:] + decisions[:1])
        assert report(store, now=T0 + 10 * HOUR_MS)["share_complete"] == 1.0


def test_unreadable_and_unknown_version_records_are_kept_aside(tmp_path):
    _, trace = decision_and_trace(1)
    v9 = {**trace, "schema_version": 9}
    with pytest.raises(UnknownSchemaVersion):
        read_trace(v9)
    with AuditStore(tmp_path) as store:
        store.ingest(TRACES, [KafkaRecord(TRACES, 0, 0, b"{not json"),
                              KafkaRecord(TRACES, 0, 1, orjson.dumps(v9))], {(TRACES, 0): 2})
        assert store.counts["unreadable"] == 2
        assert [k for k, _ in store.unreadable()] == [
            f"{TRACES}|00000|{0:020d}", f"{TRACES}|00000|{1:020d}"]
        assert store.offsets()[(TRACES, 0)] == 2


def test_the_store_reads_version_1_and_version_2_traces_alike(tmp_path):
    """A v1 trace the job wrote and the v2 trace of the same decision: the same row, the
    same lookups, search and archive columns, told apart only by schema_version."""
    assert set(TRACE_READERS) == {1, 2}
    v1 = v1_traces()[0]
    v2 = {**v2_of_v1(v1), "decision_id": "d-v2", "event_id": "e-v2"}
    row1, row2 = read_trace(v1), read_trace(v2)
    assert (row1.schema_version, row2.schema_version) == (1, 2)
    assert row1.complete and row2.complete
    assert replace(row2, decision_id=row1.decision_id, event_id=row1.event_id,
                   schema_version=1) == row1
    batch = [KafkaRecord(TRACES, 0, 0, orjson.dumps(v1)), KafkaRecord(TRACES, 0, 1, orjson.dumps(v2))]
    card = v1["input"]["event"]["card_id"]
    with AuditStore(tmp_path / "index") as store:
        ingest(store, batch)
        assert store.counts["traces"] == 2 and store.counts["incomplete_traces"] == 0
        assert store.trace("e-v2") == v2 and store.trace(v1["event_id"]) == v1
        assert {t["event_id"] for t in store.search(card=card)} == {v1["event_id"], "e-v2"}
        assert ArchiveWriter(store, tmp_path / "archive").flush() == 2
    columns, rows = sql(tmp_path / "archive",
                        "SELECT * EXCLUDE (decision_id, event_id, trace_offset) FROM decisions "
                        "ORDER BY schema_version")
    differ = [c for c, a, b in zip(columns, *rows, strict=True) if a != b]
    assert differ == ["schema_version"]
    assert rows[0][columns.index("card_country_changed_10m")] == 1


def test_archive_writes_hourly_files_with_offset_ranges_and_answers_sql(tmp_path):
    traces, _ = records(6, card="c-9")
    # the last two decisions fall into the next hour
    late, _ = records(2, start=6, card="c-9", decided_at=T0 + 2 * HOUR_MS)
    with AuditStore(tmp_path / "index") as store:
        ingest(store, traces + late)
        writer = ArchiveWriter(store, tmp_path / "archive")
        assert writer.flush() == 8
        assert writer.flush() == 0
        files = archived_files(tmp_path / "archive")
        assert [(f.first_offset, f.last_offset) for f in files] == [(0, 5), (6, 7)]
        _columns, rows = sql(tmp_path / "archive",
                            "SELECT count(*), count(DISTINCT decision_id), "
                            "max(card_txn_count_1m) >= 0 FROM decisions WHERE card_id = 'c-9'")
        assert rows == [(8, 8, True)]
        assert writer.expire_before(T0 + 2 * HOUR_MS) == 1
        assert store.expire_before(T0 + 2 * HOUR_MS) == 6
        assert store.search(card="c-9") and len(store.search(card="c-9")) == 2


def test_archive_recovery_neither_loses_nor_repeats_a_file(tmp_path):
    traces, _ = records(4)
    with AuditStore(tmp_path / "index") as store:
        ingest(store, traces)
        logged = store.unarchived(0, 100)
        writer = ArchiveWriter(store, tmp_path / "archive")
        writer.flush()
        # a crash after the rename but before the log was dropped: the log is back
        more, _ = records(2, start=4)
        ingest(store, more)
        store.db.put(b"q|00000|" + f"{1:020d}".encode(), orjson.dumps(logged[1]))
        (tmp_path / "archive" / "hour=x").mkdir()
        (tmp_path / "archive" / "hour=x" / ".tmp-p00000-partial.parquet").write_bytes(b"..")
        writer.recover()
        writer.flush()
        _cols, rows = sql(tmp_path / "archive",
                          "SELECT count(*), count(DISTINCT decision_id) FROM decisions")
        assert rows == [(6, 6)]
        assert not list((tmp_path / "archive").glob("hour=*/.tmp-*"))
