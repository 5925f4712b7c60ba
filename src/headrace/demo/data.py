"""A realistic card-transaction stream with a fraud pattern, for the demo and examples.

Users have a home distance profile and a spending level; merchants have categories with
their own amounts; fraud is more likely for large, far, card-absent, night-time
purchases at risky merchants by users with a burst of recent transactions. A sprinkle
of malformed events covers every kind of bad input a pipeline must dead-letter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

__all__ = [
    "FEATURES",
    "MALFORMED_KINDS",
    "DRIFTED_MIX",
    "MERCHANTS",
    "SCHEMA_YAML",
    "Transactions",
    "event_stream",
    "generate",
    "generate_drifting",
    "training_matrix",
]

MERCHANTS = ["grocery", "fuel", "restaurant", "travel", "electronics", "gaming", "jewelry"]
NORMAL_MIX = [0.3, 0.18, 0.2, 0.08, 0.12, 0.08, 0.04]
DRIFTED_MIX = [0.12, 0.08, 0.1, 0.25, 0.2, 0.1, 0.15]
"""The merchant mix after the demo's drift point: travel, electronics and jewelry grow."""
DRIFTED_AMOUNT_SCALE = 1.5
FEATURES = ["amount", "hour", "merchant", "distance_km", "card_present", "tx_last_24h"]
"""The model's inputs, in order (the schema also carries ids and times it does not see)."""

SCHEMA_YAML = f"""\
fields:
  - {{name: amount, type: float, min: 0, max: 50000, description: amount in EUR}}
  - {{name: hour, type: int, min: 0, max: 23}}
  - {{name: merchant, type: category, values: [{", ".join(MERCHANTS)}]}}
  - {{name: distance_km, type: float, min: 0, nullable: true}}
  - {{name: card_present, type: bool}}
  - {{name: tx_last_24h, type: int, min: 0, max: 1000}}
  - {{name: user_id, type: string, required: false, nullable: true, pii: true}}
"""
FEATURES_YAML = "inputs: [" + ", ".join(FEATURES) + "]\n"

MALFORMED_KINDS = (
    "undecodable",
    "wrong_type",
    "missing_field",
    "out_of_range",
    "unknown_category",
    "nan",
    "null",
    "missing_id",
    "oversized",
)


@dataclass(frozen=True)
class Transactions:
    """Columns of generated transactions (model inputs plus ids, users, times, labels)."""

    amount: np.ndarray
    hour: np.ndarray
    merchant: np.ndarray  # index into MERCHANTS
    distance_km: np.ndarray
    card_present: np.ndarray
    tx_last_24h: np.ndarray
    user: np.ndarray
    ts: np.ndarray
    is_fraud: np.ndarray

    def __len__(self) -> int:
        return len(self.amount)


def generate(
    rows: int,
    *,
    seed: int = 42,
    start_ts: float = 1_790_000_000.0,
    users: int = 5_000,
    merchant_mix: list[float] | None = None,
    amount_scale: float = 1.0,
    population_seed: int | None = None,
) -> Transactions:
    """Generate `rows` transactions (`merchant_mix` and `amount_scale` shift them: drift).

    `population_seed` draws the users' spending levels (default ``seed + 1``): give the
    training data's to stream from the same customers it was trained on.
    """
    rng = np.random.default_rng(seed)
    mix = np.asarray(merchant_mix or NORMAL_MIX)
    user = rng.integers(0, users, rows)
    levels_seed = seed + 1 if population_seed is None else population_seed
    user_level = np.random.default_rng(levels_seed).lognormal(0.0, 0.5, users)[user]
    merchant = rng.choice(len(MERCHANTS), rows, p=mix / mix.sum())
    base = np.array([35.0, 55.0, 40.0, 400.0, 250.0, 30.0, 600.0])[merchant]
    amount = np.round(base * user_level * rng.lognormal(0.0, 0.6, rows) * amount_scale, 2)
    amount = np.minimum(amount, 49_000.0)
    ts = start_ts + np.sort(rng.uniform(0, 7 * 24 * 3600, rows))
    hour = ((ts // 3600) % 24).astype(np.int64)
    distance = np.round(rng.exponential(6.0, rows) * (1 + 4 * (rng.random(rows) < 0.05)), 1)
    card_present = rng.random(rows) < 0.72
    tx_24h = rng.poisson(2.5, rows) + (rng.random(rows) < 0.03) * rng.integers(5, 20, rows)
    risky = np.isin(merchant, [4, 5, 6])
    risk = (
        0.9 * np.log1p(amount / 100.0)
        + 0.035 * np.minimum(distance, 120)
        + 1.4 * ~card_present
        + 1.1 * ((hour < 5) | (hour >= 23))
        + 0.9 * risky
        + 0.18 * np.minimum(tx_24h, 20)
        - 7.2
    )
    is_fraud = rng.random(rows) < 1.0 / (1.0 + np.exp(-risk))
    return Transactions(
        amount=amount,
        hour=hour,
        merchant=merchant,
        distance_km=distance,
        card_present=card_present,
        tx_last_24h=tx_24h,
        user=user,
        ts=ts,
        is_fraud=is_fraud,
    )


def generate_drifting(
    rows: int,
    *,
    drift_at: int,
    seed: int = 42,
    start_ts: float = 1_790_000_000.0,
    population_seed: int | None = None,
) -> Transactions:
    """`rows` transactions whose first `drift_at` are like the training data and the rest
    drifted: a new merchant mix (`DRIFTED_MIX`) and amounts scaled by 1.5."""
    if not 0 <= drift_at <= rows:
        raise ValueError(f"drift_at must be within 0..{rows}, got {drift_at}")
    before = generate(drift_at, seed=seed, start_ts=start_ts, population_seed=population_seed)
    after = generate(
        rows - drift_at,
        seed=seed + 1000,
        start_ts=float(before.ts[-1]) if drift_at else start_ts,
        merchant_mix=DRIFTED_MIX,
        amount_scale=DRIFTED_AMOUNT_SCALE,
        population_seed=seed + 1 if population_seed is None else population_seed,
    )
    return Transactions(
        **{
            name: np.concatenate([getattr(before, name), getattr(after, name)])
            for name in Transactions.__dataclass_fields__
        }
    )


def training_matrix(data: Transactions) -> np.ndarray:
    """The model input matrix, encoded as headrace encodes it (category -> index)."""
    return np.column_stack(
        [
            data.amount,
            data.hour.astype(float),
            data.merchant.astype(float),
            data.distance_km,
            data.card_present.astype(float),
            data.tx_last_24h.astype(float),
        ]
    )


def _event(data: Transactions, i: int, *, prefix: str) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}{i:08d}",
        "user_id": f"user-{int(data.user[i]):05d}",
        "ts": float(data.ts[i]),
        "amount": float(data.amount[i]),
        "hour": int(data.hour[i]),
        "merchant": MERCHANTS[int(data.merchant[i])],
        "distance_km": float(data.distance_km[i]),
        "card_present": bool(data.card_present[i]),
        "tx_last_24h": int(data.tx_last_24h[i]),
    }


def _malform(event: dict[str, Any], kind: str) -> bytes:
    if kind == "undecodable":
        return orjson.dumps(event)[:-7] + b"\xff\xfe"
    if kind == "wrong_type":
        event["amount"] = f"{event['amount']:.2f}".replace(".", ",")
    elif kind == "missing_field":
        del event["card_present"]
    elif kind == "out_of_range":
        event["hour"] = 27
    elif kind == "unknown_category":
        event["merchant"] = "casino"
    elif kind == "nan":
        return orjson.dumps(event).replace(
            f'"amount":{orjson.dumps(event["amount"]).decode()}'.encode(), b'"amount":NaN'
        )
    elif kind == "null":
        event["hour"] = None
    elif kind == "missing_id":
        del event["event_id"]
    elif kind == "oversized":
        event["note"] = "x" * 70_000
    return orjson.dumps(event)


def event_stream(
    data: Transactions,
    *,
    malformed_rate: float = 0.01,
    seed: int = 7,
    prefix: str = "tx-",
) -> Iterator[tuple[bytes, bytes, str | None]]:
    """``(key, value, malformed kind or None)`` per transaction, keyed by user.

    About `malformed_rate` of the events are broken, cycling through every kind.
    """
    rng = np.random.default_rng(seed)
    broken = rng.random(len(data)) < malformed_rate
    kinds = 0
    for i in range(len(data)):
        event = _event(data, i, prefix=prefix)
        key = event["user_id"].encode()
        if broken[i]:
            kind = MALFORMED_KINDS[kinds % len(MALFORMED_KINDS)]
            kinds += 1
            yield key, _malform(event, kind), kind
        else:
            yield key, orjson.dumps(event), None
