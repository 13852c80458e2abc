"""The simulated training rows and the bootstrap's "only when missing" rule (no TF needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_training.bootstrap import ensure_bootstrap_model, simulate_feature_rows, write_version
from serving.model_signature import MODEL_INPUT_NAMES

pytestmark = pytest.mark.unit


def column(matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, MODEL_INPUT_NAMES.index(name)]


def test_rows_respect_feature_semantics() -> None:
    x, y = simulate_feature_rows(20_000, seed=3)
    assert x.shape == (20_000, len(MODEL_INPUT_NAMES)) and x.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0}
    assert 0.1 < y.mean() < 0.2
    count_1m, count_1h = column(x, "card_txn_count_1m"), column(x, "card_txn_count_1h")
    assert (count_1m >= 1).all() and (count_1m <= count_1h).all()
    assert (column(x, "card_amount_sum_1h") >= column(x, "amount") * 0.999).all()
    assert (column(x, "customer_amount_sum_24h") >= column(x, "card_amount_sum_1h") * 0.999).all()
    assert (column(x, "customer_txn_count_24h") >= count_1h).all()
    assert (column(x, "card_distinct_merchants_5m") >= 1).all()
    seconds = column(x, "card_seconds_since_last_txn")
    assert ((seconds == -1) | (seconds > 0)).all()
    assert set(np.unique(column(x, "card_country_changed_10m"))) <= {0.0, 1.0}
    amount = column(x, "amount")
    assert (amount > 0).all() and (amount <= 1_000_000).all()
    channels = x[:, [MODEL_INPUT_NAMES.index(f"channel_{c}") for c in ("pos", "ecom", "atm")]]
    assert (channels.sum(axis=1) == 1).all()


def test_fraud_rows_carry_the_risk_patterns() -> None:
    x, y = simulate_feature_rows(20_000, seed=3)
    fraud, legit = x[y == 1], x[y == 0]
    assert column(fraud, "card_txn_count_1m").mean() > 2 * column(legit, "card_txn_count_1m").mean()
    assert np.median(column(fraud, "amount")) > 2 * np.median(column(legit, "amount"))
    assert column(fraud, "card_country_changed_10m").mean() > 0.1
    assert column(legit, "card_country_changed_10m").mean() < 0.05


def test_generator_is_deterministic() -> None:
    a, ya = simulate_feature_rows(500, seed=11)
    b, yb = simulate_feature_rows(500, seed=11)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, simulate_feature_rows(500, seed=12)[0])


def test_existing_version_is_kept(tmp_path: Path) -> None:
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "saved_model.pb").write_bytes(b"")
    (tmp_path / ".bootstrap-1-1").mkdir()  # a crashed staging dir is not a version
    assert ensure_bootstrap_model(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bootstrap-1-1", "4"]


def test_an_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(FileExistsError):
        write_version(tmp_path, 1)
