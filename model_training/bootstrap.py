"""The bootstrap model: version 1 for a fresh stack, trained on simulated feature vectors.

A new stack has no labelled history yet, so the first model learns from a small
parametric generator of plausible legitimate and fraudulent feature vectors (velocity
bursts, high amounts, geo jumps, customer exposure). It is a placeholder that scores
in the right direction until the replay/training pipeline produces a real version.

Versions are written atomically: training writes into ``<base>/.bootstrap-<pid>``
(ignored by the server, which skips dot-names) and the finished SavedModel is renamed
into ``<base>/<version>``, so the polling server never sees a half-written version.

    python -m model_training.bootstrap --base-path models/fraud
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from model_training.score_distribution import record_training_scores
from serving.model_signature import CHANNELS, MODEL_INPUT_NAMES
from serving.model_store import list_versions

log = logging.getLogger(__name__)

DEFAULT_ROWS = 40_000
DEFAULT_EPOCHS = 4
DEFAULT_SEED = 7
FRAUD_RATE = 0.15
_LEGIT_CHANNEL_P = (0.60, 0.35, 0.05)
_FRAUD_CHANNEL_P = (0.25, 0.60, 0.15)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return rng.lognormal(np.log(median), sigma, n)


def simulate_feature_rows(
    rows: int, *, fraud_rate: float = FRAUD_RATE, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` raw input vectors (columns in MODEL_INPUT_NAMES order) and 0/1 labels.

    Values respect the feature semantics: counts include the event itself, sums include
    its amount, the 1-minute count never exceeds the 1-hour one, -1 marks a first event.
    """
    rng = np.random.default_rng(seed)
    fraud = rng.random(rows) < fraud_rate
    n = rows
    # Legitimate baseline for every row; fraud rows then get one dominant pattern.
    amount = _lognormal(rng, 40.0, 1.0, n)
    amount = np.where(rng.random(n) < 0.02, _lognormal(rng, 1500.0, 0.5, n), amount)
    count_1h = 1 + rng.poisson(0.5, n)
    count_1m = 1 + rng.binomial(count_1h - 1, 0.05)
    secs_since_last = np.where(
        count_1m > 1,
        rng.uniform(1, 60, n),
        np.where(count_1h > 1, rng.uniform(60, 3600, n), rng.exponential(8 * 3600, n) + 3600),
    )
    secs_since_last = np.where(rng.random(n) < 0.05, -1.0, secs_since_last)
    country_changed = (rng.random(n) < 0.01).astype(float)
    customer_cards_1h = 1 + (rng.random(n) < 0.05)
    extra_24h = rng.poisson(3, n)
    exposure_median = np.full(n, 40.0)

    pattern = rng.choice(4, size=n, p=(0.35, 0.25, 0.2, 0.2))
    velocity = fraud & (pattern == 0)
    count_1m = np.where(velocity, rng.integers(3, 13, n), count_1m)
    count_1h = np.where(velocity, count_1m + rng.poisson(2, n), count_1h)
    secs_since_last = np.where(velocity, rng.uniform(1, 20, n), secs_since_last)
    amount = np.where(velocity, _lognormal(rng, 80.0, 0.8, n), amount)

    high_amount = fraud & (pattern == 1)
    amount = np.where(high_amount, _lognormal(rng, 1800.0, 0.6, n), amount)
    secs_since_last = np.where(high_amount & (rng.random(n) < 0.3), -1.0, secs_since_last)

    geo_jump = fraud & (pattern == 2)
    country_changed = np.where(geo_jump, 1.0, country_changed)
    secs_since_last = np.where(geo_jump, rng.uniform(60, 600, n), secs_since_last)
    count_1h = np.where(geo_jump, np.maximum(count_1h, 2), count_1h)
    amount = np.where(geo_jump, _lognormal(rng, 200.0, 0.8, n), amount)

    exposure = fraud & (pattern == 3)
    extra_24h = np.where(exposure, rng.integers(10, 40, n), extra_24h)
    exposure_median = np.where(exposure, 400.0, exposure_median)
    customer_cards_1h = np.where(exposure, rng.integers(2, 6, n), customer_cards_1h)

    amount = np.clip(amount, 1.0, 1_000_000.0)
    earlier_1h = count_1h - 1
    amount_sum_1h = amount + earlier_1h * _lognormal(rng, 40.0, 0.8, n)
    in_5m = count_1m + rng.binomial(count_1h - count_1m, 0.1)
    distinct_merchants_5m = 1 + rng.binomial(in_5m - 1, np.where(fraud, 0.9, 0.5))
    customer_txn_24h = count_1h + extra_24h
    customer_sum_24h = amount_sum_1h + extra_24h * _lognormal(rng, 1.0, 0.8, n) * exposure_median

    channel = np.where(
        fraud,
        rng.choice(len(CHANNELS), size=n, p=_FRAUD_CHANNEL_P),
        rng.choice(len(CHANNELS), size=n, p=_LEGIT_CHANNEL_P),
    )
    columns = {
        "card_txn_count_1m": count_1m,
        "card_txn_count_1h": count_1h,
        "card_amount_sum_1h": amount_sum_1h,
        "card_distinct_merchants_5m": distinct_merchants_5m,
        "card_seconds_since_last_txn": secs_since_last,
        "card_country_changed_10m": country_changed,
        "customer_amount_sum_24h": customer_sum_24h,
        "customer_distinct_cards_1h": customer_cards_1h,
        "customer_txn_count_24h": customer_txn_24h,
        "amount": amount,
    }
    for i, name in enumerate(CHANNELS):
        columns[f"channel_{name}"] = (channel == i).astype(float)
    missing = set(MODEL_INPUT_NAMES) - set(columns)
    if missing:
        # A new feature in feature_views needs a line here, or the model would be
        # trained on a column the job fills with something else.
        raise RuntimeError(f"the bootstrap generator does not simulate {sorted(missing)}")
    matrix = np.stack([np.asarray(columns[c], dtype=np.float64) for c in MODEL_INPUT_NAMES], 1)
    return matrix.astype(np.float32), fraud.astype(np.float32)


def train_and_export(
    export_dir: Path,
    *,
    rows: int = DEFAULT_ROWS,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
) -> None:
    """Train the MLP on simulated rows and write a SavedModel to ``export_dir``."""
    # Imported here: TensorFlow costs seconds to import and only training needs it.
    from model_training.keras_model import export_saved_model, train_model

    inputs, labels = simulate_feature_rows(rows, seed=seed)
    model = train_model(inputs, labels, epochs=epochs, seed=seed)
    export_saved_model(model, export_dir)
    # The score drift of this version is measured against its training scores.
    record_training_scores(export_dir, inputs, f"bootstrap: {rows:,} simulated rows")


def write_version(
    base_path: Path,
    version: int,
    *,
    rows: int = DEFAULT_ROWS,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Train and atomically publish ``<base_path>/<version>``; refuses to overwrite."""
    base_path.mkdir(parents=True, exist_ok=True)
    target = base_path / str(version)
    if target.exists():
        raise FileExistsError(f"model version {target} already exists; pick a new version number")
    staging = base_path / f".bootstrap-{os.getpid()}-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        train_and_export(staging, rows=rows, epochs=epochs, seed=seed)
        # rename(2) within one file system is atomic: the server sees all or nothing.
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_bootstrap_model(base_path: Path) -> int:
    """Make sure a model version exists under ``base_path``; return the latest version.

    Trains and writes version 1 only when no numbered version directory exists.
    """
    existing = list_versions(base_path)
    if existing:
        log.info("model versions %s already present under %s", existing, base_path)
        return existing[-1]
    started = time.monotonic()
    write_version(base_path, 1)
    log.info(
        "bootstrap model version 1 written to %s in %.1f s", base_path, time.monotonic() - started
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-path", type=Path, default=Path("models/fraud"))
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="write this new version number instead of bootstrapping version 1 if absent",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.version is None:
        version = ensure_bootstrap_model(args.base_path)
    else:
        write_version(args.base_path, args.version, seed=args.seed)
        version = args.version
    print(args.base_path / str(version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
