"""What a soak's latency moved with: per-minute series of everything the drill sampled,
and each one's rank correlation with the minute's p99.

A soak that misses its p99 check must say why. Its samplers already watch the job's
operators (busy and back-pressured time), its checkpoints, the working sets' misses
and the CPU of every process on the machine (the stack's, the drill's own and whatever
else ran: the machine is shared). Lining those up minute by minute, and ranking them by
how closely they follow p99, points at the cause, or says the job was starved by
something outside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

MINUTE_MS = 60_000
# Fewer minutes than this, or a series that never changes, has no correlation to speak of.
MIN_MINUTES = 5


def bucket(points: Iterable[tuple[int, float]], start_ms: int,
           how: str = "mean") -> dict[int, float]:
    """Per minute since ``start_ms``: the mean, max, sum or count of the points in it
    (epoch ms, value). Points before the start are left out."""
    per: dict[int, list[float]] = {}
    for at, value in points:
        if at >= start_ms:
            per.setdefault((at - start_ms) // MINUTE_MS, []).append(value)
    reduce = {"mean": statistics.fmean, "max": max, "sum": math.fsum, "count": len}[how]
    return {m: float(reduce(v)) for m, v in per.items()}


def counter_rate(points: Iterable[tuple[int, float]], start_ms: int) -> dict[int, float]:
    """Per minute from the second: how much a cumulative counter rose since the minute
    before (its last sample in each). A restarted job's counter going back to zero
    reads as zero, not as a negative rise."""
    ends: dict[int, float] = {}
    for at, value in sorted(points):
        if at >= start_ms:
            ends[(at - start_ms) // MINUTE_MS] = value
    out, previous = {}, None
    for minute in sorted(ends):
        if previous is not None:  # the first minute's rise is unknown
            out[minute] = max(ends[minute] - previous, 0.0)
        previous = ends[minute]
    return out


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation, None when either side is constant or too short."""
    if len(xs) != len(ys) or len(xs) < MIN_MINUTES or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return statistics.correlation(_ranks(xs), _ranks(ys))


def moves_with(series: dict[str, dict[int, float]], target: str,
               leave_out: tuple[str, ...] = ()) -> list[tuple[str, float, int]]:
    """Every other series' rank correlation with ``target`` over the minutes both have,
    strongest (by magnitude) first: (name, rho, minutes). Nothing when ``target`` has no
    series: a soak whose traces carried no latency has nothing to correlate with."""
    goal = series.get(target)
    if not goal:
        return []
    found = []
    for name, values in series.items():
        if name == target or name in leave_out:
            continue
        minutes = sorted(goal.keys() & values.keys())
        rho = spearman([goal[m] for m in minutes], [values[m] for m in minutes])
        if rho is not None:
            found.append((name, round(rho, 2), len(minutes)))
    return sorted(found, key=lambda x: -abs(x[1]))
