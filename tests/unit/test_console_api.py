"""The JSON behind each console page, on a store filled through its own writer (no broker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from audit.completeness import completeness_report
from audit.console import create_app
from audit.health import MINUTE_MS, HealthMonitor, Label
from audit.metrics import HealthMetrics
from audit.records import read_trace
from audit.store import AuditStore, KafkaRecord
from bench.audit_traces import T0, decision_and_trace
from rtd_core.config import RtdConfig

pytestmark = pytest.mark.unit
TRACES, DECISIONS = "decision-traces", "decisions"
N = 120


@dataclass
class Source:
    config: RtdConfig
    store: AuditStore
    snapshot: dict[str, Any] | None = None
    accuracy_series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: HealthMetrics = field(default_factory=HealthMetrics)


@pytest.fixture
def console(tmp_path):
    config = RtdConfig()
    store = AuditStore(tmp_path / "index")
    traces, decisions = [], []
    for i in range(N):
        decision, trace = decision_and_trace(i, card="card-A" if i < 10 else None)
        traces.append(KafkaRecord(TRACES, 0, i, orjson.dumps(trace)))
        decisions.append(KafkaRecord(DECISIONS, 0, i, orjson.dumps(decision)))
    result = store.ingest(TRACES, traces + decisions, {(TRACES, 0): N, (DECISIONS, 0): N})
    monitor = HealthMonitor(config.audit, config.thresholds, lambda v: None)
    monitor.observe_rows(result.rows)
    now = T0 + N * 1_000 + 10 * MINUTE_MS
    for r in result.rows:  # every third event is fraud
        monitor.observe_label(Label(r.event_id, int(r.event_id[-4:]) % 3 == 0, now), now)

    def lookup(event_id: str):
        raw = store.trace_bytes(event_id)
        return None if raw is None else read_trace(orjson.loads(raw))

    assert monitor.join(lookup, now) == N
    source = Source(config, store)
    report = completeness_report(store, decisions_topic=DECISIONS, traces_topic=TRACES,
                                 grace_ms=0, now_ms=now)
    source.snapshot = monitor.snapshot(now, report) | {"versions": monitor.versions()}
    source.accuracy_series = {"3": monitor.accuracy_series(now, 3),
                              "all": monitor.accuracy_series(now, None)}
    source.metrics.update(source.snapshot)
    with TestClient(create_app(source)) as client:
        yield client, result.rows
    store.close()


def test_pages_are_served(console):
    client, _ = console
    for path in ("/", "/decision/x", "/accuracy/all", "/static/console.js"):
        response = client.get(path)
        assert response.status_code == 200, path
    assert "search" in client.get("/").text


def test_health_json_has_the_four_metrics(console):
    client, rows = console
    h = client.get("/api/health").json()
    assert h["completeness"]["share_complete"] == 1.0
    assert h["completeness"]["decisions"] == N
    all_events = h["accuracy"]["windows"]["60"]["groups"][-1]
    assert all_events["path"] == "ALL" and all_events["n"] == N
    assert all_events["fraud"] == sum(1 for r in rows if int(r.event_id[-4:]) % 3 == 0)
    paths = {g["path"] for g in h["accuracy"]["windows"]["60"]["groups"]}
    assert paths == {"MODEL", "RULES_ONLY", "ALL"}  # bench: every 50th event falls back
    assert all(key in h for key in ("latency_ms", "fallback", "freshness_p99_ms", "series"))


def test_search_by_event_decision_card_and_unknown(console):
    client, rows = console
    first = rows[0]
    for q in (first.event_id, first.decision_id):
        r = client.get("/api/search", params={"q": q}).json()
        assert r["match"] == "decision" and r["decisions"][0]["decision_id"] == first.decision_id
    card = client.get("/api/search", params={"q": "card-A"}).json()
    assert card["match"] == "card" and len(card["decisions"]) == 10
    assert card["decisions"][0]["decided_at"] > card["decisions"][-1]["decided_at"]
    missing = client.get("/api/search", params={"q": "nope"}).json()
    assert missing["decisions"] == [] and missing["store"]["offsets"] == {
        f"{DECISIONS}[0]": N, f"{TRACES}[0]": N}
    assert client.get("/api/search", params={"q": " "}).status_code == 400


def test_decision_json_is_the_explanation(console):
    client, rows = console
    model_row = next(r for r in rows if r.path == "MODEL")
    d = client.get(f"/api/decision/{model_row.event_id}").json()
    assert d["row"]["decision_id"] == model_row.decision_id
    assert d["row"]["outcome"] == model_row.outcome
    assert {f["name"] for f in d["features"]} == set(model_row.features)
    assert all(f["window_ms"] is not None and f["as_of_event_time"] for f in d["features"])
    assert d["model"]["score"] == model_row.score and d["model"]["model_version"] == 3
    assert {r["id"] for r in d["rules"]} == {"VELOCITY_1M", "EXPOSURE_24H", "GEO_JUMP_10M",
                                              "HIGH_AMOUNT"}
    assert d["stage_ms"]["total"] == 12
    fallback = next(r for r in rows if r.path == "RULES_ONLY")
    f = client.get(f"/api/decision/{fallback.decision_id}").json()
    assert f["model"]["fallback_reason"] == "timeout" and f["model"]["score"] is None
    missing = client.get("/api/decision/nope")
    assert missing.status_code == 404 and "offsets" in missing.json()["detail"]["store"]


def test_accuracy_json_per_version(console):
    client, _ = console
    a = client.get("/api/accuracy/3").json()
    assert a["versions"] == [3]
    groups = a["windows"]["60"]["groups"]
    assert [g["model_version"] for g in groups] == [3]
    assert a["series"] and all(p["n"] > 0 for p in a["series"])
    assert client.get("/api/accuracy/all").json()["windows"]["5"]["groups"][0]["path"] == "ALL"
    assert client.get("/api/accuracy/9").status_code == 404


def test_metrics_endpoint_exports_the_health(console):
    client, _ = console
    text = client.get("/metrics").text
    assert "rtd_trace_completeness 1.0" in text
    assert 'rtd_recall{level="review",model_version="3",path="MODEL",scorer="decision",' \
           'window_min="60"}' in text


def test_the_terminal_accuracy_table_shows_every_group(console):
    from rich.console import Console

    from rtd.audit_cli import accuracy_table

    client, _ = console
    body = client.get("/api/health").json()["accuracy"]["windows"]["60"]
    out = Console(record=True, width=200)
    out.print(accuracy_table("60", body))
    text = out.export_text()
    all_events = body["groups"][-1]
    assert "v3" in text and "RULES_ONLY" in text and "ALL" in text
    assert f"{100 * all_events['decision']['review']['precision']:.1f}%" in text
