"""Audit store benchmark: `python -m bench.audit_store --decisions 1000000 --checkpoints ...`

Fills a fresh store through its own writer (AuditStore.ingest, ArchiveWriter.flush) with
simulated decisions and traces (bench/audit_traces.py: built by the job's decide and
build_trace, then varied per record), and at each checkpoint measures:
  - ingest rate: decisions/s through ingest + archive, the generation of records excluded;
  - explain lookup latency, in-process (index get + JSON decode), over HTTP from the
    console's /api/decision/{id} (a long-running endpoint), and as the CLI
    (`rtd-audit explain ID --json` and `rtd explain ID --json`, a new process each
    time: interpreter start-up and imports included);
  - search latency for one card's week; disk bytes per decision (index + archive).
Results go to a JSON file; docs/BENCHMARKS.md records them. Not a test: minutes to hours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from audit.archive import ArchiveWriter
from audit.store import AuditStore, KafkaRecord
from bench.audit_traces import T0, decision_and_trace
from bench.stats import latency_summary
from rtd_core.config import load_config

TRACES, DECISIONS = "decision-traces", "decisions"
POOL = 2_000
CARDS, CUSTOMERS = 200_000, 100_000
SPACING_MS = 100  # decided_at spacing: 10 decisions/s of simulated time (10M: 11.6 days)
BUSY_EVERY, BUSY_CARDS = 1_000, 10  # one decision in 1,000 is of one of 10 busy cards


def _records(pool: list[tuple[dict[str, Any], dict[str, Any]]], start: int,
             count: int) -> list[KafkaRecord]:
    """``count`` distinct decisions and traces, varied from the pool's templates."""
    out = []
    for i in range(start, start + count):
        decision, trace = pool[i % POOL]
        did, eid = f"d-{i:012d}", f"sim-{i:012d}"
        card = (f"busy-{(i // BUSY_EVERY) % BUSY_CARDS}" if i % BUSY_EVERY == 0
                else f"card-{(i * 7919) % CARDS}")
        cust = f"cust-{(i * 104729) % CUSTOMERS}"
        at = T0 + i * SPACING_MS
        # A version 2 trace's event is its raw payload (decisioning.trace.trace_event).
        raw = {**orjson.loads(trace["input"]["raw"]), "event_id": eid, "card_id": card,
               "customer_id": cust, "event_time": at - 20}
        t = {**trace, "decision_id": did, "event_id": eid, "decided_at": at,
             "event_time": at - 20, "input": {**trace["input"], "key": card, "offset": i,
                                              "raw": orjson.dumps(raw).decode()}}
        d = {**decision, "decision_id": did, "event_id": eid, "card_id": card,
             "customer_id": cust, "decided_at": at, "event_time": at - 20}
        out.append(KafkaRecord(TRACES, i % 4, i // 4, orjson.dumps(t)))
        out.append(KafkaRecord(DECISIONS, i % 4, i // 4, orjson.dumps(d)))
    return out


def _lookups(store: AuditStore, stored: int, samples: int) -> dict[str, Any]:
    rng = random.Random(stored)
    times = []
    for _ in range(samples):
        i = rng.randrange(stored)
        key = f"d-{i:012d}" if i % 2 else f"sim-{i:012d}"
        t0 = time.perf_counter()
        trace = store.trace(key)
        times.append((time.perf_counter() - t0) * 1000)
        assert trace is not None and trace["event_id"] == f"sim-{i:012d}"
    return latency_summary(times)


def _cli_lookups(config_file: Path, stored: int, samples: int,
                 module: str) -> dict[str, Any]:
    rng = random.Random(stored + 1)
    times = []
    for _ in range(samples):
        i = rng.randrange(stored)
        t0 = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", module, "explain", f"sim-{i:012d}", "--json",
             "--config", str(config_file)], capture_output=True, text=True, check=False)
        times.append((time.perf_counter() - t0) * 1000)
        assert result.returncode == 0, result.stdout + result.stderr
    return latency_summary(times)


def _http_lookups(store: AuditStore, config: Any, stored: int, samples: int) -> dict[str, Any]:
    """The console's /api/decision/{id} (the explanation, as the decision page gets it),
    over one kept-alive HTTP connection to uvicorn in this process: what a long-running
    endpoint answers in, without a process start per lookup."""
    import http.client
    import socket
    import threading
    from types import SimpleNamespace

    import uvicorn

    from audit.console import create_app
    from audit.metrics import HealthMetrics

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = SimpleNamespace(config=config, store=store, snapshot=None, accuracy_series={},
                             metrics=HealthMetrics())
    server = uvicorn.Server(uvicorn.Config(create_app(source), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    rng = random.Random(stored + 3)
    times = []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    try:
        for _ in range(samples):
            i = rng.randrange(stored)
            t0 = time.perf_counter()
            conn.request("GET", f"/api/decision/sim-{i:012d}")
            response = conn.getresponse()
            body = orjson.loads(response.read())
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status == 200 and body["row"]["event_id"] == f"sim-{i:012d}", body
    finally:
        conn.close()
        server.should_exit = True
        thread.join(10)
    return latency_summary(times)


def _search(store: AuditStore, stored: int, samples: int, busy: bool) -> dict[str, Any]:
    rng = random.Random(stored + 2)
    week = 7 * 24 * 3_600_000
    times, rows = [], []
    for _ in range(samples):
        card = (f"busy-{rng.randrange(BUSY_CARDS)}" if busy
                else f"card-{rng.randrange(CARDS)}")
        start = T0 + rng.randrange(max(1, stored * SPACING_MS - week))
        t0 = time.perf_counter()
        found = store.search(card=card, start_ms=start, end_ms=start + week)
        times.append((time.perf_counter() - t0) * 1000)
        rows.append(len(found))
    return {**latency_summary(times), "rows_mean": round(sum(rows) / len(rows), 1)}


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(root: Path, checkpoints: list[int], batch: int, samples: int,
        cli_samples: int, resume: bool = False) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    config = load_config(None, stack_dir=str(root), audit={"store_dir": str(root / "audit")})
    config_file = root / "config.json"
    config_file.write_text(config.to_json())
    pool = [decision_and_trace(i) for i in range(POOL)]
    store = AuditStore(root / "audit" / "index")
    archive = ArchiveWriter(store, root / "audit" / "archive")
    stored, ingest_s, archive_s, points = 0, 0.0, 0.0, []
    if resume:  # a fill stopped earlier (records are generated by index: same ones)
        archive.recover()
        stored = store.counts["traces"]
        print(f"resuming at {stored:,} stored decisions; rates count this run only",
              flush=True)
    filled_from = stored
    for target in (c for c in checkpoints if c > stored):
        while stored < target:
            n = min(batch, target - stored)
            records = _records(pool, stored, n)
            t0 = time.perf_counter()
            store.ingest(TRACES, records, {(TRACES, p): stored // 4 + n for p in range(4)})
            ingest_s += time.perf_counter() - t0
            stored += n
            if stored % 100_000 < batch:
                print(f"{stored:,} stored", flush=True)
            if stored % 100_000 < batch or stored == target:
                # The service archives every audit.archive_flush_s; here every 100k.
                t0 = time.perf_counter()
                archive.flush()
                archive_s += time.perf_counter() - t0
        store.db.flush()
        index_bytes = _disk(root / "audit" / "index")
        archive_bytes = _disk(root / "audit" / "archive")
        point = {
            "stored_decisions": stored,
            "ingest_decisions_per_s": round((stored - filled_from) / (ingest_s + archive_s)),
            "index_only_decisions_per_s": round((stored - filled_from) / ingest_s),
            "explain_in_process_ms": _lookups(store, stored, samples),
            "explain_http_ms": _http_lookups(store, config, stored, max(100, samples // 10)),
            "search_card_week_ms": _search(store, stored, max(100, samples // 10), False),
            "search_busy_card_week_ms": _search(store, stored, 100, True),
            "index_bytes": index_bytes, "archive_bytes": archive_bytes,
            "bytes_per_decision": round((index_bytes + archive_bytes) / stored),
            "index_bytes_per_decision": round(index_bytes / stored),
            "archive_bytes_per_decision": round(archive_bytes / stored),
        }
        if cli_samples:
            point["explain_cli_ms"] = _cli_lookups(config_file, stored, cli_samples,
                                                   "rtd.audit_cli")
            point["explain_rtd_cli_ms"] = _cli_lookups(config_file, stored, cli_samples,
                                                       "rtd.cli")
        points.append(point)
        print(json.dumps(point), flush=True)
    store.close()
    return {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "trace_bytes_mean": round(sum(len(orjson.dumps(t)) for _, t in pool) / POOL),
            "points": points}


def measure_only(root: Path, samples: int, cli_samples: int) -> dict[str, Any]:
    """Lookups and searches on a store a run filled (read-only: it may still be filling)."""
    store = AuditStore(root / "audit" / "index", read_only=True)
    stored = store.counts["traces"]
    config = load_config(str(root / "config.json"))
    point = {"stored_decisions": stored,
             "explain_in_process_ms": _lookups(store, stored, samples),
             "explain_http_ms": _http_lookups(store, config, stored, max(100, samples // 10)),
             "search_card_week_ms": _search(store, stored, max(100, samples // 10), False),
             "search_busy_card_week_ms": _search(store, stored, 100, True)}
    store.close()
    if cli_samples:
        point["explain_cli_ms"] = _cli_lookups(root / "config.json", stored, cli_samples,
                                               "rtd.audit_cli")
    print(json.dumps(point), flush=True)
    return {"points": [point]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(".bench-audit"),
                        help="a fresh folder for the store (removed by hand after)")
    parser.add_argument("--checkpoints", default="100000,1000000",
                        help="comma-separated store sizes to measure at")
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--cli-samples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench-audit.json"))
    parser.add_argument("--resume", action="store_true",
                        help="go on filling the store already in --root (a stopped run)")
    parser.add_argument("--measure-only", action="store_true",
                        help="measure lookups on the store already in --root; no fill")
    args = parser.parse_args()
    if args.measure_only:
        result = measure_only(args.root, args.samples, args.cli_samples)
        result["command"] = " ".join(["python -m bench.audit_store", *sys.argv[1:]])
        args.out.write_text(json.dumps(result, indent=2))
        return
    if (args.root / "audit").exists() and not args.resume:
        sys.exit(f"{args.root}/audit exists: pass a fresh --root (or remove it)")
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    result = run(args.root, checkpoints, args.batch, args.samples, args.cli_samples,
                 resume=args.resume)
    result["command"] = " ".join(["python -m bench.audit_store", *sys.argv[1:]])
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
