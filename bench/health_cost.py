"""What the health monitor (audit/health.py) costs the audit service at a sustained
rate: feed it an hour of decisions and their labels, in the service's batch size, and
time the per-record work and one snapshot. `python -m bench.health_cost [--rate 1000]`."""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time

from audit.health import MINUTE_MS, HealthMonitor, Label
from audit.records import read_trace
from bench.audit_traces import decision_and_trace
from rtd_core.config import AuditConfig, ThresholdsConfig

BATCH = 2_000  # audit.batch_size's default


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1_000, help="decisions per second")
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args(argv)
    base = [read_trace(decision_and_trace(i)[1]) for i in range(1_000)]
    m0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS
    monitor = HealthMonitor(AuditConfig(), ThresholdsConfig(), lambda _v: None)
    n = args.rate * args.minutes * 60
    step_ms = 1_000 / args.rate
    observe = join = 0.0
    for chunk in range(0, n, BATCH):
        rows = [dataclasses.replace(base[i % 1_000], decided_at=m0 + int(i * step_ms),
                                    appended_at=m0 + int(i * step_ms) - 20, event_id=f"e{i}")
                for i in range(chunk, min(n, chunk + BATCH))]
        started = time.perf_counter()
        monitor.observe_rows(rows)
        observe += time.perf_counter() - started
        by_id = {r.event_id: r for r in rows}
        started = time.perf_counter()
        for r in rows:
            monitor.observe_label(Label(r.event_id, hash(r.event_id) % 50 == 0, 0), m0)
        monitor.join(by_id.get, m0 + int(chunk * step_ms))
        join += time.perf_counter() - started
    end = m0 + int(n * step_ms)
    started = time.perf_counter()
    snap = monitor.snapshot(end, None)
    snapshot_s = time.perf_counter() - started
    started = time.perf_counter()
    monitor.accuracy_series(end, 3)
    series_s = time.perf_counter() - started
    print(f"{n:,} decisions and labels at {args.rate}/s over {args.minutes} min")
    print(f"observe_rows {observe / n * 1e6:.1f} us/decision, label + join "
          f"{join / n * 1e6:.1f} us/label")
    print(f"snapshot {snapshot_s:.2f} s, accuracy series {series_s:.2f} s, labelled in the "
          f"60-min window {snap['accuracy']['windows']['60']['labelled']:,}")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
