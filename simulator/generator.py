"""The transaction stream: pure and deterministic for (settings), no I/O.

A simulated clock ticks 1/rate s per transaction-topic record. Each tick yields one
record for the `transactions` topic: a normal purchase, the next due event of a fraud
episode, or a malformed payload. Labels (ground truth) are queued per valid event and
yielded once the clock reaches their `labeled_at`, so the output is one stream in
simulated-time order that a producer can write out as it comes.

Fraud arrives in episodes scheduled ahead on the clock:
card testing (many tiny ecom purchases on one card across merchants within a minute),
geo jump (a card used at home, then minutes later in another region),
exposure spike (one customer's several cards, large amounts within minutes to an hour),
high amount (one large purchase).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from simulator.malformed import make_malformed
from simulator.population import CATEGORIES, COUNTRIES, Population, card_id, customer_id

TXN = "txn"
MALFORMED = "malformed"
LABEL = "label"

NORMAL = "normal"
CARD_TESTING = "card_testing"
GEO_JUMP = "geo_jump"
EXPOSURE_SPIKE = "exposure_spike"
HIGH_AMOUNT = "high_amount"
FRAUD_PATTERNS: tuple[str, ...] = (CARD_TESTING, GEO_JUMP, EXPOSURE_SPIKE, HIGH_AMOUNT)

# The nominal clock rate when producing as fast as possible: event times then describe
# a believable 1,000 events/s however fast the machine writes them.
SIM_RATE = 1_000.0
MAX_AMOUNT = 1_000_000.0
PRIMARY_CARD_SHARE = 0.7

# pattern, share of fraud events, mean fraud events per episode (to turn the fraud
# share into a per-tick episode start probability).
_FRAUD_MIX: tuple[tuple[str, float, float], ...] = (
    (CARD_TESTING, 0.40, 14.0),
    (GEO_JUMP, 0.20, 2.0),
    (EXPOSURE_SPIKE, 0.25, 5.5),
    (HIGH_AMOUNT, 0.15, 1.0),
)


class SimRecord(NamedTuple):
    """One record to write. Ground truth rides alongside; `value` holds contract fields only."""

    kind: str  # TXN, MALFORMED or LABEL
    key: bytes | None
    value: bytes
    event_id: str | None  # TXN and LABEL
    is_fraud: bool
    pattern: str | None  # TXN: NORMAL or a fraud pattern
    reason: str | None  # MALFORMED: the validator's reason code
    event_time_ms: int | None  # TXN: the event time as epoch ms; LABEL: labeled_at
    clock_ms: int  # the simulated clock when the record was emitted


@dataclass(frozen=True, kw_only=True, slots=True)
class GeneratorSettings:
    start_time_ms: int
    seed: int = 42
    rate: float = SIM_RATE  # simulated records per second on the transactions topic
    malformed_share: float = 0.01
    out_of_order_share: float = 0.05
    late_share: float = 0.005
    label_delay_ms: int = 30_000
    string_time_share: float = 0.05  # event_time as an RFC 3339 string instead of int ms
    fraud_share: float = 0.01
    # Below the job's default 5 s watermark delay: out of order, but not late.
    out_of_order_max_ms: int = 4_000
    # Beyond watermark delay + the default 60 s allowed lateness: decided as late.
    late_min_ms: int = 120_000
    late_max_ms: int = 600_000
    cross_border_share: float = 0.02  # normal purchases at a merchant abroad
    n_customers: int = 200_000
    n_merchants: int = 5_000

    def __post_init__(self) -> None:
        shares = ("malformed", "out_of_order", "late", "string_time", "fraud", "cross_border")
        for name in shares:
            value = getattr(self, f"{name}_share")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}_share must be within [0, 1], got {value}")
        checks = (
            (
                self.out_of_order_share + self.late_share <= 1.0,
                "out_of_order_share + late_share <= 1",
            ),
            (self.rate > 0 and math.isfinite(self.rate), f"rate > 0, got {self.rate}"),
            (self.start_time_ms >= 0, f"start_time_ms >= 0, got {self.start_time_ms}"),
            (self.label_delay_ms >= 0, f"label_delay_ms >= 0, got {self.label_delay_ms}"),
            (self.out_of_order_max_ms >= 1, "out_of_order_max_ms >= 1"),
            (1 <= self.late_min_ms <= self.late_max_ms, "1 <= late_min_ms <= late_max_ms"),
        )
        for ok, rule in checks:
            if not ok:
                raise ValueError(f"generator settings need {rule}")


def format_rfc3339(epoch_ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds, e.g. 2023-11-14T22:13:20.123Z."""
    secs, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}Z"


def run_tag(seed: int, start_time_ms: int) -> str:
    """Prefix of this run's event ids: two runs with the same seed but another start
    (the default start is the wall clock) must not reuse ids, or their decisions clash."""
    return hashlib.blake2b(f"{seed}:{start_time_ms}".encode(), digest_size=4).hexdigest()


@lru_cache(maxsize=4)
def _population(seed: int, n_customers: int, n_merchants: int) -> Population:
    return Population(seed, n_customers=n_customers, n_merchants=n_merchants)


_encode = json.JSONEncoder(separators=(",", ":")).encode
# Per category, flattened for the hot path: mcc, log median, sigma, pos cut, ecom cut
# (rounded so that 0.92 + 0.08 is exactly 1 and a grocery never turns into an ATM).
_CATS = tuple(
    (c.mcc, math.log(c.median_amount), c.sigma, c.pos, round(c.pos + c.ecom, 9)) for c in CATEGORIES
)
_CODES = tuple(c.code for c in COUNTRIES)
_CURRENCIES = tuple(c.currency for c in COUNTRIES)


class TransactionGenerator:
    """Deterministic record stream for a settings object; not thread-safe."""

    def __init__(self, settings: GeneratorSettings, population: Population | None = None) -> None:
        s = settings
        self.settings = s
        self.population = population or _population(s.seed, s.n_customers, s.n_merchants)
        self._rng = random.Random(s.seed)
        self._tag = run_tag(s.seed, s.start_time_ms)
        self._ms_per_tick = 1000.0 / s.rate
        self._seq = 0
        self._clock = s.start_time_ms
        # Heaps: labels by labeled_at, fraud episode events by due time; the counter
        # breaks ties so entries never compare beyond it.
        self._labels: list[tuple[int, int, str, bool]] = []
        self._scheduled: list[tuple[int, int, tuple[Any, ...]]] = []
        self._scheduled_n = 0
        self._late_cut = s.late_share
        self._disorder_cut = s.late_share + s.out_of_order_share
        probs = [s.fraud_share * share / mean for _, share, mean in _FRAUD_MIX]
        self._episode_prob = sum(probs)
        self._episode_cum = [sum(probs[: i + 1]) for i in range(len(probs))]
        pop = self.population
        self._testing_pool = [
            pop.merchants_in(c, "digital_goods", "misc_retail", "electronics", "clothing")
            for c in range(len(COUNTRIES))
        ]
        self._big_ticket_pool = [
            pop.merchants_in(c, "electronics", "jewelry", "airlines", "hotels", "department_store")
            for c in range(len(COUNTRIES))
        ]
        self._jump_pool = [
            pop.merchants_in(c, "electronics", "jewelry", "atm") for c in range(len(COUNTRIES))
        ]

    @property
    def clock_ms(self) -> int:
        return self._clock

    @property
    def pending_labels(self) -> int:
        return len(self._labels)

    def stream(self, count: int | None = None) -> Iterator[SimRecord]:
        """`count` transaction-topic records (None: without end) with labels interleaved.

        After the last transaction the labels still pending follow. A caller that stops
        early takes those with `drain_labels()`."""
        produced = 0
        labels = self._labels
        start, per_tick = self.settings.start_time_ms, self._ms_per_tick
        while count is None or produced < count:
            clock = self._clock = start + int(self._seq * per_tick)
            while labels and labels[0][0] <= clock:
                yield self._label(heapq.heappop(labels), clock)
            yield self._tick(clock)
            produced += 1
        yield from self.drain_labels()

    def drain_labels(self) -> list[SimRecord]:
        """Every pending label, in labeled_at order, as if the clock ran on to the last."""
        out = []
        while self._labels:
            entry = heapq.heappop(self._labels)
            self._clock = max(self._clock, entry[0])
            out.append(self._label(entry, self._clock))
        return out

    # -- one tick -------------------------------------------------------------------

    def _tick(self, clock: int) -> SimRecord:
        rng = self._rng
        seq = self._seq
        self._seq = seq + 1
        event_id = f"{self._tag}-{seq:09d}"
        if rng.random() < self._episode_prob:
            self._start_episode(clock)
        if rng.random() < self.settings.malformed_share:
            fields = self._normal_fields()
            event, _ = self._event(event_id, clock, fields)
            bad = make_malformed(rng, event)
            return SimRecord(
                MALFORMED, bad.key, bad.value, None, False, None, bad.reason, None, clock
            )
        scheduled = self._scheduled
        if scheduled and scheduled[0][0] <= clock:
            fields = heapq.heappop(scheduled)[2]
        else:
            fields = self._normal_fields()
        event, event_time = self._event(event_id, clock, fields)
        is_fraud = fields[6]
        heapq.heappush(
            self._labels, (event_time + self.settings.label_delay_ms, seq, event_id, is_fraud)
        )
        return SimRecord(
            TXN, fields[0].encode(), _encode(event).encode(), event_id,
            is_fraud, fields[5], None, event_time, clock,
        )  # fmt: skip

    def _event(
        self, event_id: str, clock: int, fields: tuple[Any, ...]
    ) -> tuple[dict[str, Any], int]:
        """The contract event for `fields` at `clock`, with its timing disorder applied."""
        rng = self._rng
        s = self.settings
        card, customer, merchant, amount, channel = fields[:5]
        u = rng.random()
        if u < self._late_cut:
            event_time = clock - rng.randint(s.late_min_ms, s.late_max_ms)
        elif u < self._disorder_cut:
            event_time = clock - 1 - int(rng.random() * s.out_of_order_max_ms)
        else:
            event_time = clock
        event_time = max(event_time, 0)  # a start near the epoch must not go negative
        shown: int | str = event_time
        if rng.random() < s.string_time_share:
            shown = format_rfc3339(event_time)
        pop = self.population
        country = pop.merchants[merchant].country
        event = {
            "event_id": event_id,
            "card_id": card,
            "customer_id": customer,
            "merchant_id": pop.merchants[merchant].merchant_id,
            "merchant_category": _CATS[pop.merchant_category[merchant]][0],
            "amount": amount,
            "currency": _CURRENCIES[country],
            "country": _CODES[country],
            "channel": channel,
            "event_time": shown,
        }
        return event, event_time

    def _label(self, entry: tuple[int, int, str, bool], clock: int) -> SimRecord:
        labeled_at, _, event_id, is_fraud = entry
        # Formatted by hand (ids are ours, plain ASCII): a label per event is on the hot path.
        truth = "true" if is_fraud else "false"
        value = f'{{"event_id":"{event_id}","is_fraud":{truth},"labeled_at":{labeled_at}}}'
        return SimRecord(
            LABEL,
            event_id.encode(),
            value.encode(),
            event_id,
            is_fraud,
            None,
            None,
            labeled_at,
            clock,
        )

    # -- normal traffic -------------------------------------------------------------
    # Fields tuples: (card_id, customer_id, merchant index, amount, channel, pattern, is_fraud)

    def _normal_fields(self) -> tuple[Any, ...]:
        rng = self._rng
        pop = self.population
        index = int(rng.random() * pop.n_customers)
        cards = pop.card_count[index]
        # A primary card takes most of a customer's spend; the others share the rest.
        card = (
            1
            if cards == 1 or rng.random() < PRIMARY_CARD_SHARE
            else 2 + int(rng.random() * (cards - 1))
        )
        country = pop.home_country[index]
        if rng.random() < self.settings.cross_border_share:
            country = (country + 1 + int(rng.random() * (len(COUNTRIES) - 1))) % len(COUNTRIES)
        local = pop.merchants_by_country[country]
        merchant = local[int(rng.random() * len(local))]
        amount, channel = self._purchase(merchant, pop.spend_scale[index])
        return (card_id(index, card), customer_id(index), merchant, amount, channel, NORMAL, False)

    def _purchase(self, merchant: int, scale: float) -> tuple[float, str]:
        rng = self._rng
        _, log_median, sigma, pos_cut, ecom_cut = _CATS[self.population.merchant_category[merchant]]
        u = rng.random()
        channel = "pos" if u < pos_cut else "ecom" if u < ecom_cut else "atm"
        if channel == "atm":
            # Cash comes in notes: multiples of 20.
            amount = 20.0 * max(1, round(math.exp(log_median + sigma * rng.gauss()) * scale / 20.0))
        else:
            amount = math.exp(log_median + sigma * rng.gauss()) * scale
        return _clamp(amount), channel

    # -- fraud episodes -------------------------------------------------------------

    def _start_episode(self, clock: int) -> None:
        u = self._rng.random() * self._episode_prob
        if u < self._episode_cum[0]:
            self._card_testing(clock)
        elif u < self._episode_cum[1]:
            self._geo_jump(clock)
        elif u < self._episode_cum[2]:
            self._exposure_spike(clock)
        else:
            self._high_amount(clock)

    def _schedule(self, due_ms: int, fields: tuple[Any, ...]) -> None:
        self._scheduled_n += 1
        heapq.heappush(self._scheduled, (due_ms, self._scheduled_n, fields))

    def _victim(self, min_cards: int = 1) -> tuple[int, int]:
        """A customer with at least `min_cards` cards and the card attacked."""
        rng = self._rng
        pop = self.population
        while True:
            index = int(rng.random() * pop.n_customers)
            if pop.card_count[index] >= min_cards:
                return index, 1 + int(rng.random() * pop.card_count[index])

    def _card_testing(self, clock: int) -> None:
        rng = self._rng
        index, card = self._victim()
        pool = self._testing_pool[self.population.home_country[index]]
        n = rng.randint(8, 20)
        merchants = rng.sample(pool, n) if len(pool) >= n else [rng.choice(pool) for _ in range(n)]
        # Within 45 s so that the burst fits the 1-minute velocity window.
        offsets = sorted(rng.randint(0, 45_000) for _ in range(n - 1))
        cid, cust = card_id(index, card), customer_id(index)
        for offset, merchant in zip([0, *offsets], merchants, strict=True):
            amount = round(rng.uniform(0.5, 4.99), 2)
            self._schedule(
                clock + offset, (cid, cust, merchant, amount, "ecom", CARD_TESTING, True)
            )

    def _geo_jump(self, clock: int) -> None:
        rng = self._rng
        pop = self.population
        index, card = self._victim()
        cid, cust = card_id(index, card), customer_id(index)
        home = pop.home_country[index]
        # The cardholder's own purchase at home: genuine, and the anchor of the jump.
        local = pop.merchants_by_country[home]
        merchant = local[int(rng.random() * len(local))]
        amount, channel = self._purchase(merchant, pop.spend_scale[index])
        self._schedule(clock, (cid, cust, merchant, amount, channel, GEO_JUMP, False))
        far = [c for c in range(len(COUNTRIES)) if COUNTRIES[c].region != COUNTRIES[home].region]
        abroad = far[int(rng.random() * len(far))]
        due = clock + rng.randint(60_000, 480_000)
        for _ in range(rng.randint(1, 3)):
            merchant = rng.choice(self._jump_pool[abroad])
            if CATEGORIES[pop.merchant_category[merchant]].name == "atm":
                amount, channel = 20.0 * rng.randint(10, 25), "atm"
            else:
                amount, channel = _clamp(rng.lognormvariate(math.log(600.0), 0.6)), "pos"
            self._schedule(due, (cid, cust, merchant, amount, channel, GEO_JUMP, True))
            due += rng.randint(30_000, 120_000)

    def _exposure_spike(self, clock: int) -> None:
        rng = self._rng
        index, _ = self._victim(min_cards=2)
        cards = list(range(1, self.population.card_count[index] + 1))
        rng.shuffle(cards)
        pool = self._big_ticket_pool[self.population.home_country[index]]
        n = rng.randint(3, 8)
        window = rng.randint(120_000, 1_800_000)
        offsets = [0, *sorted(rng.randint(0, window) for _ in range(n - 1))]
        cust = customer_id(index)
        for i, offset in enumerate(offsets):
            amount = _clamp(max(300.0, rng.lognormvariate(math.log(1_300.0), 0.45)))
            channel = "ecom" if rng.random() < 0.6 else "pos"
            fields = (
                card_id(index, cards[i % len(cards)]),
                cust,
                rng.choice(pool),
                amount,
                channel,
            )
            self._schedule(clock + offset, (*fields, EXPOSURE_SPIKE, True))

    def _high_amount(self, clock: int) -> None:
        rng = self._rng
        index, card = self._victim()
        pool = self._big_ticket_pool[self.population.home_country[index]]
        amount = _clamp(rng.lognormvariate(math.log(3_500.0), 0.5))
        channel = "ecom" if rng.random() < 0.5 else "pos"
        fields = (card_id(index, card), customer_id(index), rng.choice(pool), amount, channel)
        self._schedule(clock, (*fields, HIGH_AMOUNT, True))


def _clamp(amount: float) -> float:
    """Two decimals within the contract's (0, 1,000,000]."""
    return min(max(round(amount, 2), 0.01), MAX_AMOUNT)


def generate(settings: GeneratorSettings, count: int) -> list[SimRecord]:
    """All records of a finite run: `count` transaction-topic records plus every label."""
    return list(TransactionGenerator(settings).stream(count))
