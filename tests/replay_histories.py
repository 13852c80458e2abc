"""Replay histories for the local engine's tests and the engines' agreement test: several
partitions, out-of-order, near-late, late and malformed records, and the orders one
Kafka consumer could deliver them in."""

from __future__ import annotations

import random
import zlib

from replay.local_engine import SourceRecord
from tests.builders import HOUR, MIN, SEC, T0, encode, txn

PARTITIONS = 4


def partition_of(card: str) -> int:
    return zlib.crc32(card.encode()) % PARTITIONS


def history(seed: int, n: int = 800, ahead_ms: int = 2 * HOUR
            ) -> dict[int, list[tuple[bytes | None, bytes, int]]]:
    """Per partition, payloads in offset order over about three hours (longer than the
    card windows, so pruning matters): cards of shared customers, ~10% a few seconds out
    of order, ~6% 10-75 s behind (either side of the lateness bound), ~3% minutes
    behind, malformed records, and a partition that runs ``ahead_ms`` ahead of the others.
    Each item: (key, value, its place in the order the records were made)."""
    rng = random.Random(seed)
    out: dict[int, list[tuple[bytes | None, bytes, int]]] = {p: [] for p in range(PARTITIONS)}
    clock = T0
    for i in range(n):
        clock += rng.randrange(200, 25 * SEC)
        card = f"card-{rng.randrange(40)}"
        customer = f"cust-{int(card.split('-')[1]) % 15}"
        at = clock
        roll = rng.random()
        if roll < 0.10:
            at -= rng.randrange(1, 4) * SEC  # out of order, within the watermark delay
        elif roll < 0.16:
            at -= rng.randrange(10, 75) * SEC  # near the lateness bound
        elif roll < 0.19:
            at -= rng.randrange(3, 20) * MIN  # far behind
        p = partition_of(card)
        if p == 3:
            at += ahead_ms  # a partition ahead in event time
        event = txn(card, round(rng.uniform(1, 900), 2), at=at, customer=customer,
                    merchant=f"m{rng.randrange(30)}", country=rng.choice(["DE", "DE", "FR"]))
        out[p].append((card.encode(), encode(event), 2 * i))
        if rng.random() < 0.02:
            out[p].append((b"bad", b"{not json" if rng.random() < 0.5 else
                           encode({**event, "amount": -1, "event_id": f"bad-{i}"}), 2 * i + 1))
    return out


def delivery(per_partition: dict[int, list[tuple[bytes | None, bytes, int]]], seed: int,
             fetch: int) -> list[SourceRecord]:
    """One consumer's order: runs of up to ``fetch`` records of one partition at a time,
    partitions picked at random (seed 0: each partition's whole backlog in turn; seed
    -1: the order the records were made in, as a live consumer keeping up reads them)."""
    if seed < 0:
        made = sorted((seq, p, o, key, value) for p, items in per_partition.items()
                      for o, (key, value, seq) in enumerate(items))
        return [SourceRecord(key, value, p, o, T0 + 10 * HOUR) for _, p, o, key, value in made]
    rng = random.Random(seed)
    cursor = dict.fromkeys(per_partition, 0)
    out = []
    while any(cursor[p] < len(per_partition[p]) for p in per_partition):
        open_ = [p for p in per_partition if cursor[p] < len(per_partition[p])]
        p = open_[0] if seed == 0 else rng.choice(open_)
        for _ in range(fetch if seed else len(per_partition[p])):
            if cursor[p] >= len(per_partition[p]):
                break
            key, value, _ = per_partition[p][cursor[p]]
            out.append(SourceRecord(key, value, p, cursor[p], T0 + 10 * HOUR))
            cursor[p] += 1
    return out


