"""Train a small card-fraud model and write everything `headrace register` takes.

Usage: python examples/train_fraud.py OUT_DIR [--rows N]

Writes OUT_DIR/model.pkl (scikit-learn), schema.yaml, config.yaml, metrics.json,
train.parquet (the training data: fingerprinted and profiled at registration) and
score.csv (fresh transactions to batch-score, a few of them malformed on purpose).
The model sees columns in schema order; a `category` column reaches it as the index of
its value in the schema's `values`, so training encodes it the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

MERCHANTS = ["grocery", "fuel", "travel", "electronics", "gaming", "jewelry"]
SCHEMA = """\
fields:
  - {{name: amount, type: float, min: 0, max: 50000, description: transaction amount in EUR}}
  - {{name: hour, type: int, min: 0, max: 23}}
  - {{name: merchant, type: category, values: [{}]}}
  - {{name: distance_km, type: float, min: 0, nullable: true}}
  - {{name: card_present, type: bool}}
  - {{name: tx_last_24h, type: int, min: 0}}
""".format(", ".join(MERCHANTS))


def transactions(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Users' card transactions with a fraud pattern: big, far, card-absent, at night."""
    merchant = rng.choice(len(MERCHANTS), rows, p=[0.35, 0.2, 0.1, 0.15, 0.12, 0.08])
    amount = np.round(rng.lognormal(3.5, 1.0, rows) * (1 + (merchant >= 3)), 2)
    hour = rng.integers(0, 24, rows)
    distance = np.round(rng.exponential(8.0, rows), 1)
    card_present = rng.random(rows) < 0.7
    tx_24h = rng.poisson(3, rows)
    risk = (
        0.004 * np.minimum(amount, 2000)
        + 0.03 * np.minimum(distance, 100)
        + 1.5 * (~card_present)
        + 1.0 * ((hour < 5) | (hour > 22))
        + 0.8 * (merchant >= 3)
        + 0.2 * tx_24h
        - 6.5
    )
    fraud = rng.random(rows) < 1 / (1 + np.exp(-risk))
    return {
        "amount": amount,
        "hour": hour,
        "merchant": merchant,
        "distance_km": distance,
        "card_present": card_present,
        "tx_last_24h": tx_24h,
        "is_fraud": fraud,
    }


def main() -> None:
    """Train, evaluate and write the release inputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    data = transactions(args.rows, rng)
    names = ["amount", "hour", "merchant", "distance_km", "card_present", "tx_last_24h"]
    x = np.column_stack([data[n].astype(float) for n in names])
    y = data["is_fraud"].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))

    joblib.dump(model, out / "model.pkl")
    (out / "schema.yaml").write_text(SCHEMA)
    (out / "config.yaml").write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    (out / "metrics.json").write_text(json.dumps({"auc": auc, "fraud_rate": float(y.mean())}))
    table = pa.table(
        {
            **{n: data[n] for n in names if n != "merchant"},
            "merchant": pa.array([MERCHANTS[i] for i in data["merchant"]]),
            "is_fraud": data["is_fraud"],
        }
    ).select([*names, "is_fraud"])
    pq.write_table(table, out / "train.parquet")

    fresh = transactions(1000, np.random.default_rng(7))
    lines = [",".join(names)]
    for i in range(1000):
        lines.append(
            ",".join(
                [
                    f"{fresh['amount'][i]}",
                    f"{fresh['hour'][i]}",
                    MERCHANTS[fresh["merchant"][i]],
                    f"{fresh['distance_km'][i]}",
                    str(bool(fresh["card_present"][i])).lower(),
                    f"{fresh['tx_last_24h'][i]}",
                ]
            )
        )
    lines += [
        "twelve,3,grocery,1.0,true,2",  # amount is not a number
        "45.0,31,grocery,1.0,true,2",  # hour out of range
        "45.0,3,casino,1.0,true,2",  # unknown merchant
        "45.0,3,grocery,1.0,,2",  # card_present missing
    ]
    (out / "score.csv").write_text("\n".join(lines) + "\n")
    print(f"trained on {len(y_train)} rows, test AUC {auc:.3f}; files in {out}")


if __name__ == "__main__":
    main()
