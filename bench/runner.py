"""Running one system through the benchmark's phases, and collecting what was seen.

For each system, one after the other (never side by side: they would share two cores):
create its topics, start the two observers on its decisions topic, start it, then
produce the same event stream in phases (warm-up, fixed rate, rate steps), sampling the
live lag once a second, wait for committed decisions to catch up, stop everything.
The raw observations go to ``SystemRun``; bench/analysis.py turns them into figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.consumers import Observer, ObserverResult
from bench.flink_metrics import FlinkSampler, FlinkSamples
from bench.pacer import Pacer, PhaseSent, create_topics
from bench.presets import Preset, keeps_up, step_rates
from bench.resources import ResourceSampler, stack_groups
from bench.systems import OurJob, SystemUnderTest
from rtd_core.config import RtdConfig
from rtd_core.security import kafka_client_properties

Log = Callable[[str], None]
WARMUP_RATE = 20.0  # events/s while waiting for a system to start deciding


@dataclass
class StepSeen:
    phase: PhaseSent
    # (seconds into the step, valid events sent so far in total, decisions received so far)
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    kept_up: bool = False

    def receive_rate_second_half(self) -> float | None:
        """Decisions/s received over the step's second half: the saturated throughput
        when the step did not keep up (the system then works through a backlog)."""
        if len(self.samples) < 3:
            return None
        half = self.samples[-1][0] / 2
        first = next(s for s in self.samples if s[0] >= half)
        last = self.samples[-1]
        if last[0] <= first[0]:
            return None
        return (last[2] - first[2]) / (last[0] - first[0])


@dataclass
class SystemRun:
    name: str
    config: RtdConfig
    warmup: PhaseSent | None = None
    fixed: PhaseSent | None = None
    steps: list[StepSeen] = field(default_factory=list)
    uncommitted: ObserverResult | None = None
    committed: ObserverResult | None = None
    flink: FlinkSamples | None = None
    resources: list[tuple[int, str, float, int]] = field(default_factory=list)
    started_ms: int = 0
    ended_ms: int = 0
    job_id: str | None = None
    error: str | None = None


def run_system(system: SystemUnderTest, config: RtdConfig, preset: Preset, run_dir: Path,
               start_time_ms: int, log: Log) -> SystemRun:
    """Measure one system; the event stream is the same for every system of the run."""
    names, append_time = system.topics()
    create_topics(config, names, append_time)
    out = SystemRun(name=system.name, config=config, started_ms=time.time_ns() // 1_000_000)
    kafka_conf = kafka_client_properties(config.kafka)
    uncommitted = Observer(kafka_conf, system.decisions_topic, "read_uncommitted",
                           run_dir / f"{system.name}-uncommitted.pickle")
    committed = Observer(kafka_conf, system.decisions_topic, "read_committed",
                         run_dir / f"{system.name}-committed.pickle")
    uncommitted.start()
    committed.start()
    pacer = Pacer(config, system.input_topic, seed=preset.seed, start_time_ms=start_time_ms,
                  malformed_share=preset.malformed_share)
    flink_sampler: FlinkSampler | None = None

    def groups() -> dict[str, list[int]]:
        g = stack_groups(config.stack_path / "run", None)
        g.update(system.process_groups())
        g["bench-observers"] = [p for p in (uncommitted.pid, committed.pid) if p]
        g["bench"] = [os.getpid()]
        return g

    resources = ResourceSampler(groups)
    try:
        log(f"{system.name}: starting")
        system.start()
        if isinstance(system, OurJob) and system.job_id:
            out.job_id = system.job_id
            flink_sampler = FlinkSampler(config.flink.rest_url, system.job_id)
            flink_sampler.start()
        resources.start()
        _warm_up(system, pacer, uncommitted, preset, out, log)
        log(f"{system.name}: fixed rate {preset.fixed_rate:.0f}/s for {preset.fixed_s:.0f} s")
        out.fixed = pacer.run("fixed", preset.fixed_rate, preset.fixed_s,
                              lambda phase, elapsed: _alive(system))
        for rate in step_rates(preset):
            step = StepSeen(phase=PhaseSent(name=f"step-{rate:.0f}", rate=rate, started_ms=0))

            def sample(phase: PhaseSent, elapsed: float, step: StepSeen = step) -> bool:
                _alive(system)
                step.samples.append((elapsed, pacer.valid_sent, uncommitted.count))
                return False

            step.phase = pacer.run(f"step-{rate:.0f}", rate, preset.step_s, sample)
            lags = [(t, sent - got) for t, sent, got in step.samples]
            step.kept_up = keeps_up(lags, rate, preset.lag_tolerance_s)
            out.steps.append(step)
            got_rate = step.receive_rate_second_half()
            log(f"{system.name}: step {rate:.0f}/s: "
                f"{'kept up' if step.kept_up else 'fell behind'} "
                f"(lag {lags[-1][1] if lags else '?'}, received "
                f"{got_rate if got_rate is None else round(got_rate)}/s)")
            if not step.kept_up:
                break
        pacer.close()
        _wait_committed(uncommitted, committed, preset.tail_s)
    except Exception as exc:  # noqa: BLE001 - one system failing must not lose the others
        out.error = f"{type(exc).__name__}: {exc}"
        log(f"{system.name}: failed: {out.error}")
    finally:
        out.ended_ms = time.time_ns() // 1_000_000
        resources.stop()
        out.resources = resources.samples
        if flink_sampler is not None:
            out.flink = flink_sampler.stop()
        try:
            system.stop()
        finally:
            out.uncommitted = uncommitted.stop()
            out.committed = committed.stop()
    log(f"{system.name}: stopped: {len(out.uncommitted.receipts)} decisions read uncommitted, "
        f"{len(out.committed.receipts)} committed")
    return out


def _alive(system: SystemUnderTest) -> bool:
    system.check_alive()
    return False


def _warm_up(system: SystemUnderTest, pacer: Pacer, uncommitted: Observer, preset: Preset,
             out: SystemRun, log: Log) -> None:
    """A trickle of input until decisions flow and the start-up backlog is worked off,
    then ``settle_s`` at the fixed rate. A trickle, because a system whose capacity is
    close to the fixed rate would take minutes to work off a start-up backlog built at
    that rate. Raises when the system never starts deciding."""
    trickle = min(preset.fixed_rate, WARMUP_RATE)

    def ready(phase: PhaseSent, elapsed: float) -> bool:
        system.check_alive()
        return uncommitted.count > 0 and pacer.valid_sent - uncommitted.count <= trickle

    out.warmup = pacer.run("warmup", trickle, preset.warmup_max_s, ready)
    if not ready(out.warmup, 0):
        raise TimeoutError(f"{system.name} decided {uncommitted.count} of {pacer.valid_sent} "
                           f"events within {preset.warmup_max_s:.0f} s of warm-up")
    log(f"{system.name}: deciding after {out.warmup.duration_s:.0f} s of warm-up")
    pacer.run("settle", preset.fixed_rate, preset.settle_s, lambda p, e: _alive(system))


def _wait_committed(uncommitted: Observer, committed: Observer, tail_s: float) -> None:
    target = uncommitted.count
    deadline = time.monotonic() + tail_s
    while committed.count < target and time.monotonic() < deadline:
        time.sleep(0.2)
