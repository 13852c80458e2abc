"""The contract's features (docs/contract.md, "Features"), declared once.

Adding a feature is adding a ``Feature`` line to a view; the operators, the replay
and the training set pick it up from here. Bump the view's ``version`` when the
meaning of an existing feature changes.
"""

from __future__ import annotations

from feature_views.model import DAY_MS, HOUR_MS, MINUTE_MS, Aggregation, Feature, FeatureView

CARD_FEATURES = FeatureView(
    name="card_features",
    entity_key="card_id",
    # v2: scoped to the customer (a card seen under a second customer has a separate
    # history there: docs/contract.md, "Features"); v1 counted a card across customers.
    version=2,
    scope="customer_id",
    description="Velocity and behaviour per card (of its customer)",
    features=(
        Feature("card_txn_count_1m", Aggregation.COUNT, MINUTE_MS),
        Feature("card_txn_count_1h", Aggregation.COUNT, HOUR_MS),
        Feature("card_amount_sum_1h", Aggregation.SUM, HOUR_MS, field="amount"),
        Feature(
            "card_distinct_merchants_5m", Aggregation.DISTINCT_COUNT, 5 * MINUTE_MS,
            field="merchant_id",
        ),
        # The look-back of the last-seen delta: older history reads as "first" (-1).
        Feature("card_seconds_since_last_txn", Aggregation.SECONDS_SINCE_LAST, 30 * DAY_MS),
        Feature(
            "card_country_changed_10m", Aggregation.CHANGED_WITHIN, 10 * MINUTE_MS,
            field="country",
        ),
    ),
)

CUSTOMER_FEATURES = FeatureView(
    name="customer_features",
    entity_key="customer_id",
    version=1,
    description="Exposure per customer across all their cards",
    features=(
        Feature("customer_amount_sum_24h", Aggregation.SUM, DAY_MS, field="amount"),
        Feature("customer_distinct_cards_1h", Aggregation.DISTINCT_COUNT, HOUR_MS, field="card_id"),
        Feature("customer_txn_count_24h", Aggregation.COUNT, DAY_MS),
    ),
)

ALL_VIEWS: tuple[FeatureView, ...] = (CARD_FEATURES, CUSTOMER_FEATURES)
FEATURE_NAMES: tuple[str, ...] = tuple(n for v in ALL_VIEWS for n in v.feature_names)
