"""The decision console: web pages and the JSON behind them, served by the audit service.

Pages (one HTML shell and one script, audit/console_static/) render the JSON API:
  /                       health tiles with sparklines, fallback causes, freshness, search
  /decision/{id}          one decision's explanation (the content of `rtd explain`)
  /accuracy/{version}     precision/recall over time of one model version ("all": every event)
  /api/health             the latest health snapshot (audit/health.py)
  /api/search?q=          an event, decision, card or customer id
  /api/decision/{id}      the explanation as typed parts (audit/records.py)
  /api/accuracy/{version} the rolling windows and the per-minute series
  /metrics                Prometheus
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audit.metrics import HealthMetrics
from audit.records import explain_trace, read_trace
from audit.store import AuditStore
from decisioning.trace import stage_durations
from rtd_core.config import RtdConfig

STATIC = Path(__file__).with_name("console_static")
SEARCH_LIMIT = 50


class ConsoleSource(Protocol):
    """What the console reads: the service itself, or a test's stand-in."""

    config: RtdConfig
    store: AuditStore
    snapshot: dict[str, Any] | None
    accuracy_series: dict[str, list[dict[str, Any]]]
    metrics: HealthMetrics


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def summary(trace: dict[str, Any]) -> dict[str, Any]:
    row = read_trace(trace)
    return {"decision_id": row.decision_id, "event_id": row.event_id, "card_id": row.card_id,
            "customer_id": row.customer_id, "decided_at": row.decided_at,
            "outcome": row.outcome, "path": row.path, "score": row.score,
            "amount": row.event.get("amount"), "currency": row.event.get("currency"),
            "reasons": list(row.reasons)}


def progress(store: AuditStore) -> dict[str, Any]:
    """How far the store has got, for an id it has not indexed (yet)."""
    return {"offsets": {f"{t}[{p}]": o for (t, p), o in sorted(store.offsets().items())},
            "last_decided_at": store.counts.get("last_decided_at") or None,
            "decisions": store.counts.get("decisions")}


def create_app(source: ConsoleSource) -> FastAPI:
    app = FastAPI(title="rtd decision console", default_response_class=OrjsonResponse,
                  docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def page() -> FileResponse:
        # The script picks the page by the path.
        return FileResponse(STATIC / "console.html", media_type="text/html")

    app.add_api_route("/", page, include_in_schema=False)
    app.add_api_route("/decision/{ident}", page, include_in_schema=False)
    app.add_api_route("/accuracy/{version}", page, include_in_schema=False)

    @app.get("/api/health")
    def health() -> Any:
        if source.snapshot is None:
            raise HTTPException(503, "the health monitor has not computed its first snapshot")
        return source.snapshot

    @app.get("/api/search")
    def search(q: str) -> Any:
        q = q.strip()
        if not q:
            raise HTTPException(400, "search for an event, decision, card or customer id")
        trace = source.store.trace(q)
        if trace is not None:
            return {"query": q, "match": "decision", "decisions": [summary(trace)]}
        for match in ("card", "customer"):
            found = source.store.search(**{match: q}, limit=SEARCH_LIMIT)
            if found:
                # Newest first: an analyst looks at the latest decisions of a card.
                return {"query": q, "match": match,
                        "decisions": [summary(t) for t in reversed(found)]}
        return {"query": q, "match": None, "decisions": [], "store": progress(source.store)}

    @app.get("/api/decision/{ident}")
    def decision(ident: str) -> Any:
        trace = source.store.trace(ident)
        if trace is None:
            raise HTTPException(404, {
                "error": f"{ident} is not in the store: not an event or decision id, or not "
                         "indexed yet", "store": progress(source.store)})
        explanation = explain_trace(trace)
        body = dataclasses.asdict(explanation)
        # Durations between the stages reached, whatever the trace carried.
        body["stage_ms"] = dict(explanation.stage_ms) or stage_durations(
            {k: v for k, v in explanation.row.timings.items() if v is not None})
        return body

    @app.get("/api/accuracy/{version}")
    def accuracy(version: str) -> Any:
        snap = source.snapshot
        if snap is None:
            raise HTTPException(503, "the health monitor has not computed its first snapshot")
        if version != "all" and version not in source.accuracy_series:
            raise HTTPException(404, f"no labelled decision of model version {version} yet; "
                                f"versions: {snap.get('versions')}")
        windows = {}
        for minutes, body in snap["accuracy"]["windows"].items():
            groups = [g for g in body["groups"]
                      if (version == "all" and g["path"] == "ALL")
                      or str(g["model_version"]) == version]
            windows[minutes] = {**{k: v for k, v in body.items() if k != "groups"},
                                "groups": groups}
        return {"version": version, "maturity_ms": snap["accuracy"]["maturity_ms"],
                "windows": windows, "series": source.accuracy_series.get(version, []),
                "versions": snap.get("versions", [])}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(source.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    return app
