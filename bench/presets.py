"""Benchmark presets: how long each phase runs and how the rate steps up.

Per system, in order: warm-up at the fixed rate until decisions flow (not measured),
the fixed-rate phase (latencies at a rate every system sustains), then rate steps,
each ``step_factor`` times the last, until a step's lag grows (the highest sustainable
rate is the last step that kept up; the decisions/s of the first one that did not is
the saturated throughput).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    fixed_rate: float  # events/s of the fixed-rate phase
    warmup_max_s: float  # give up when a system has not started deciding by then
    settle_s: float  # more warm-up once decisions flow (JIT, caches, first checkpoints)
    fixed_s: float
    step_start_rate: float
    step_factor: float
    step_s: float
    max_steps: int
    tail_s: float  # longest wait for the read_committed observer to catch up at the end
    # A step keeps up when its backlog is not growing and, at its end, holds fewer than
    # this many seconds of input (a backlog is also latency: ours queues inside the job).
    lag_tolerance_s: float = 5.0
    seed: int = 7
    malformed_share: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    # Three systems in under five minutes on the 2-core machine (our job's start is ~40 s).
    # The fixed rate is one every system here sustains (the Quix peer tops out near 250/s).
    "short": Preset(name="short", fixed_rate=100, warmup_max_s=90, settle_s=4, fixed_s=20,
                    step_start_rate=150, step_factor=1.5, step_s=8, max_steps=10, tail_s=8),
    "full": Preset(name="full", fixed_rate=100, warmup_max_s=120, settle_s=15, fixed_s=120,
                   step_start_rate=150, step_factor=1.3, step_s=30, max_steps=20, tail_s=15),
}


def step_rates(preset: Preset) -> list[float]:
    return [round(preset.step_start_rate * preset.step_factor ** i)
            for i in range(preset.max_steps)]


def keeps_up(lag_samples: list[tuple[float, int]], rate: float, tolerance_s: float) -> bool:
    """Whether a step kept up: no clear growth of the backlog over the step's second half
    (slope under 10% of the input rate), and a final backlog under ``tolerance_s`` seconds
    of input."""
    from bench.stats import linear_slope

    if not lag_samples:
        return False
    final_lag = lag_samples[-1][1]
    if final_lag > max(rate * tolerance_s, 50):
        return False
    half = lag_samples[-1][0] / 2
    second_half = [(t, float(lag)) for t, lag in lag_samples if t >= half]
    return linear_slope(second_half) <= 0.1 * rate
