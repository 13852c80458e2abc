from __future__ import annotations

import pytest

from feature_views.definitions import FEATURE_NAMES
from serving.model_signature import MODEL_INPUT_NAMES, model_inputs

pytestmark = pytest.mark.unit

EVENT = {"event_id": "e1", "card_id": "c1", "amount": 125.5, "channel": "ecom"}


def features(value: float = 1.0) -> dict[str, float]:
    return {name: value for name in FEATURE_NAMES}


def test_input_names_are_the_features_then_amount_and_channel() -> None:
    assert MODEL_INPUT_NAMES == FEATURE_NAMES + (
        "amount",
        "channel_pos",
        "channel_ecom",
        "channel_atm",
    )
    assert len(set(MODEL_INPUT_NAMES)) == len(MODEL_INPUT_NAMES)


def test_row_has_every_input_as_float() -> None:
    row = model_inputs(EVENT, {**features(), "card_txn_count_1m": 3})
    assert set(row) == set(MODEL_INPUT_NAMES)
    assert all(isinstance(v, float) for v in row.values())
    assert row["card_txn_count_1m"] == 3.0
    assert row["amount"] == 125.5


@pytest.mark.parametrize("channel", ["pos", "ecom", "atm"])
def test_channel_is_one_hot(channel: str) -> None:
    row = model_inputs({**EVENT, "channel": channel}, features())
    assert [row[f"channel_{c}"] for c in ("pos", "ecom", "atm")] == [
        1.0 if c == channel else 0.0 for c in ("pos", "ecom", "atm")
    ]


def test_missing_feature_is_an_error_not_a_zero() -> None:
    partial = features()
    del partial["customer_txn_count_24h"]
    with pytest.raises(KeyError, match="customer_txn_count_24h"):
        model_inputs(EVENT, partial)


def test_unknown_channel_is_an_error() -> None:
    with pytest.raises(ValueError, match="channel"):
        model_inputs({**EVENT, "channel": "phone"}, features())
