"""Who transacts where: countries, merchant categories, merchants and customers.

Customers are many (hundreds of thousands, so a card sees a few events an hour at the
nominal rate, as real cards do) and are therefore stored as three compact arrays, not
as objects; `Population.customer(i)` materialises one for inspection and tests.
Merchants are few and kept as small frozen records.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True, slots=True)
class Country:
    code: str  # ISO 3166 alpha-2
    currency: str  # ISO 4217, the currency transactions in that country are made in
    region: str  # a geo jump goes to another region, far enough to be impossible travel
    weight: float  # share of customers and merchants


@dataclass(frozen=True, slots=True)
class Category:
    mcc: str
    name: str
    merchant_weight: float  # share of merchants, hence of normal traffic
    median_amount: float
    sigma: float  # log-normal spread of amounts
    pos: float  # channel mix; the remainder after pos and ecom is atm
    ecom: float


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    category: int  # index into CATEGORIES
    country: int  # index into COUNTRIES


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    home_country: str
    card_ids: tuple[str, ...]
    spend_scale: float


# Only currencies near parity with the US dollar: the contract's amount thresholds
# (HIGH_AMOUNT >= 2,000, exposure > 5,000) are currency-agnostic, so a yen or rupee
# amount would look like fraud by face value alone.
COUNTRIES: tuple[Country, ...] = (
    Country("US", "USD", "NA", 40),
    Country("CA", "CAD", "NA", 6),
    Country("GB", "GBP", "EU", 10),
    Country("IE", "EUR", "EU", 2),
    Country("DE", "EUR", "EU", 8),
    Country("FR", "EUR", "EU", 7),
    Country("ES", "EUR", "EU", 5),
    Country("IT", "EUR", "EU", 5),
    Country("NL", "EUR", "EU", 3),
    Country("BE", "EUR", "EU", 2),
    Country("PT", "EUR", "EU", 2),
    Country("CH", "CHF", "EU", 2),
    Country("AU", "AUD", "APAC", 5),
    Country("NZ", "NZD", "APAC", 1),
    Country("SG", "SGD", "APAC", 2),
)

CATEGORIES: tuple[Category, ...] = (
    Category("5411", "grocery", 18, 45.0, 0.7, 0.92, 0.08),
    Category("5812", "restaurants", 16, 32.0, 0.6, 0.95, 0.05),
    Category("5541", "fuel", 8, 55.0, 0.4, 1.0, 0.0),
    Category("5311", "department_store", 6, 80.0, 0.8, 0.7, 0.3),
    Category("5691", "clothing", 6, 70.0, 0.7, 0.6, 0.4),
    Category("5999", "misc_retail", 10, 40.0, 0.9, 0.5, 0.5),
    Category("5732", "electronics", 5, 220.0, 0.9, 0.5, 0.5),
    Category("5944", "jewelry", 2, 350.0, 1.0, 0.85, 0.15),
    Category("5912", "pharmacy", 6, 25.0, 0.6, 0.9, 0.1),
    Category("4111", "transit", 6, 8.0, 0.5, 0.7, 0.3),
    Category("4511", "airlines", 2, 420.0, 0.7, 0.15, 0.85),
    Category("7011", "hotels", 3, 260.0, 0.7, 0.6, 0.4),
    Category("5815", "digital_goods", 7, 12.0, 0.8, 0.0, 1.0),
    Category("6011", "atm", 5, 120.0, 0.6, 0.0, 0.0),
)

CATEGORY_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CATEGORIES)}
CHANNELS: tuple[str, ...] = ("pos", "ecom", "atm")
MAX_CARDS = 3


def customer_id(index: int) -> str:
    return f"cust-{index:07d}"


def card_id(index: int, card: int) -> str:
    """Card `card` (1-based) of customer `index`; the customer is readable from the id."""
    return f"card-{index:07d}-{card}"


def merchant_id(index: int) -> str:
    return f"merch-{index:05d}"


class Population:
    """A deterministic population for a seed. Read-only after construction.

    The public arrays are the hot path of the generator: `home_country[i]` (index into
    COUNTRIES), `card_count[i]` (1..3) and `spend_scale[i]` (multiplies amounts).
    """

    __slots__ = (
        "card_count",
        "home_country",
        "merchant_category",
        "merchants",
        "merchants_by_country",
        "merchants_by_country_category",
        "n_customers",
        "spend_scale",
    )

    def __init__(self, seed: int, n_customers: int = 200_000, n_merchants: int = 5_000) -> None:
        minimum = len(COUNTRIES) * len(CATEGORIES)
        if n_customers < 1:
            raise ValueError(f"n_customers must be >= 1, got {n_customers}")
        if n_merchants < minimum:
            # Every (country, category) needs a merchant so that every pattern can run
            # anywhere; fewer merchants cannot satisfy that.
            raise ValueError(f"n_merchants must be >= {minimum}, got {n_merchants}")
        # A stream of its own, so the population does not shift when event generation
        # changes how many random numbers it draws.
        rng = random.Random(seed * 7_919 + 104_729)
        self.n_customers = n_customers
        country_cum = list(accumulate(c.weight for c in COUNTRIES))
        self.home_country = bytearray(
            rng.choices(range(len(COUNTRIES)), cum_weights=country_cum, k=n_customers)
        )
        # 1 card: 45 %, 2 cards: 35 %, 3 cards: 20 %; most people hold more than one.
        self.card_count = bytearray(
            rng.choices((1, 2, 3), cum_weights=(45, 80, 100), k=n_customers)
        )
        self.spend_scale = array("d", (rng.lognormvariate(0.0, 0.45) for _ in range(n_customers)))

        merchant_cells: list[tuple[int, int]] = [
            (ci, ki) for ci in range(len(COUNTRIES)) for ki in range(len(CATEGORIES))
        ]
        category_cum = list(accumulate(k.merchant_weight for k in CATEGORIES))
        extra = n_merchants - len(merchant_cells)
        merchant_cells += zip(
            rng.choices(range(len(COUNTRIES)), cum_weights=country_cum, k=extra),
            rng.choices(range(len(CATEGORIES)), cum_weights=category_cum, k=extra),
            strict=True,
        )
        self.merchants = tuple(
            Merchant(merchant_id(j), category=ki, country=ci)
            for j, (ci, ki) in enumerate(merchant_cells)
        )
        self.merchant_category = bytes(m.category for m in self.merchants)
        by_country: list[list[int]] = [[] for _ in COUNTRIES]
        by_cell: dict[tuple[int, int], list[int]] = {}
        for j, m in enumerate(self.merchants):
            by_country[m.country].append(j)
            by_cell.setdefault((m.country, m.category), []).append(j)
        self.merchants_by_country = tuple(tuple(js) for js in by_country)
        self.merchants_by_country_category = {cell: tuple(js) for cell, js in by_cell.items()}

    def customer(self, index: int) -> Customer:
        n = self.card_count[index]
        return Customer(
            customer_id=customer_id(index),
            home_country=COUNTRIES[self.home_country[index]].code,
            card_ids=tuple(card_id(index, k) for k in range(1, n + 1)),
            spend_scale=self.spend_scale[index],
        )

    def merchants_in(self, country: int, *category_names: str) -> tuple[int, ...]:
        """Merchant indices in a country within the named categories (never empty)."""
        out: list[int] = []
        for name in category_names:
            out.extend(self.merchants_by_country_category[(country, CATEGORY_INDEX[name])])
        return tuple(out)
