"""Feature views as data: the one definition the live job, the replay and training share."""

from feature_views.definitions import (
    ALL_VIEWS,
    CARD_FEATURES,
    CUSTOMER_FEATURES,
    FEATURE_NAMES,
)
from feature_views.model import Aggregation, Feature, FeatureView

__all__ = [
    "ALL_VIEWS",
    "CARD_FEATURES",
    "CUSTOMER_FEATURES",
    "FEATURE_NAMES",
    "Aggregation",
    "Feature",
    "FeatureView",
]
