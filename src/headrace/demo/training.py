"""The demo's model training: the first fraud model, the retrain after the drift, and the
validation gate between them.

Both releases use one recipe (gradient-boosted trees, a threshold at the best F1 on
validation rows kept in the release config), so what changes from release 1 to release 2
is the data only: the generated history for the first, the labelled transactions that
arrived after the drift for the second. Training runs on one thread: on a shared machine
with two cores OpenMP's default (a thread per core, spinning) made one fit take ten
seconds instead of half of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from headrace.demo.data import (
    FEATURES_YAML,
    MERCHANTS,
    SCHEMA_YAML,
    Transactions,
    generate,
    training_matrix,
)

if TYPE_CHECKING:
    from headrace.registry import Release
    from headrace.registry.store import Registry

__all__ = [
    "GateResult",
    "Trained",
    "best_f1_threshold",
    "holdout_metrics",
    "register_trained",
    "retrain",
    "train_first",
    "validation_gate",
]


@dataclass(frozen=True)
class Trained:
    """A trained model's release inputs and how it did on rows it was not fitted on.

    Attributes
    ----------
    directory
        Where the release inputs are (model.pkl, schema, features, config, metrics, data).
    auc
        AUC on the test rows (the last 20%).
    threshold
        The fraud threshold on P(fraud): the best F1 on the validation rows.
    validation
        Precision, recall, F1 at the threshold, and recall at 0.5, on the validation rows.
    rows
        Rows it was fitted on.
    fraud_rate
        The share of frauds in all its rows (fit, validation and test).
    """

    directory: Path
    auc: float
    threshold: float
    validation: dict[str, float]
    rows: int
    fraud_rate: float = 0.0


def best_f1_threshold(y: Any, scores: Any) -> tuple[float, dict[str, float]]:
    """The threshold on P(fraud) with the best F1 on a validation set, and its precision,
    recall and F1 there (and at 0.5, which a rare positive class seldom reaches: ~2% fraud
    gives a recall near 0 there)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    p, r = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * p * r / (p + r))
    best = int(np.argmax(f1))
    at_half = scores >= 0.5
    hits = float(np.sum(at_half & (y == 1)))
    return float(thresholds[best]), {
        "precision": float(p[best]),
        "recall": float(r[best]),
        "f1": float(f1[best]),
        "recall_at_0.5": hits / max(float(np.sum(y == 1)), 1.0),
    }


def _fit_and_write(data: Transactions, out: Path, *, note: str) -> Trained:
    """Fit on the first 60% of `data`, choose the threshold on the next 20% (best F1),
    measure AUC on the last 20%; write the release inputs to `out`."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    rows = len(data)
    x = training_matrix(data)
    y = data.is_fraud.astype(int)
    fit, cut = int(rows * 0.6), int(rows * 0.8)
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=0)
    with threadpool_limits(limits=1):
        model.fit(x[:fit], y[:fit])
        threshold, validation = best_f1_threshold(y[fit:cut], model.predict_proba(x[fit:cut])[:, 1])
        auc = float(roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1]))
    threshold = round(threshold, 6)  # as the config file holds it
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.pkl")
    (out / "schema.yaml").write_text(SCHEMA_YAML)
    (out / "features.yaml").write_text(FEATURES_YAML)
    (out / "config.yaml").write_text(
        f"# {note}\n# best F1 on the validation rows: precision {validation['precision']:.3f}, "
        f"recall {validation['recall']:.3f}\nthreshold: {threshold}\nlabels: [legit, fraud]\n"
    )
    metrics = {"auc": auc, "fraud_rate": float(y.mean()), "threshold": threshold}
    metrics.update({f"validation_{k}": v for k, v in validation.items()})
    (out / "metrics.json").write_text(orjson.dumps(metrics).decode())
    _write_parquet(data, out / "train.parquet")
    return Trained(
        directory=out,
        auc=auc,
        threshold=threshold,
        validation=validation,
        rows=fit,
        fraud_rate=float(y.mean()),
    )


def _write_parquet(data: Transactions, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "amount": data.amount,
            "hour": data.hour,
            "merchant": pa.array([MERCHANTS[i] for i in data.merchant]),
            "distance_km": data.distance_km,
            "card_present": data.card_present,
            "tx_last_24h": data.tx_last_24h,
            # every schema field is a column of the training data (registration checks it)
            "user_id": pa.array([f"user-{int(u):05d}" for u in data.user]),
            "is_fraud": data.is_fraud,
        }
    )
    pq.write_table(table, path)


def train_first(home: Path, *, rows: int, seed: int) -> Trained:
    """Release 1: `rows` generated transactions of the usual mix, inputs under
    ``home/release-1``."""
    return _fit_and_write(
        generate(rows, seed=seed), home / "release-1", note="release 1: the generated history"
    )


def _rows(data: Transactions, keep: Any) -> Transactions:
    return Transactions(
        **{name: getattr(data, name)[keep] for name in Transactions.__dataclass_fields__}
    )


def retrain(home: Path, stream: Transactions, *, rows: Any) -> tuple[Trained, Transactions]:
    """Release 2: the same recipe on the labelled stream rows `rows` (an index: the events
    after the drift whose labels came back); inputs under ``home/release-2``.

    Returns the trained release inputs and the holdout (the last 20% of `rows`, the most
    recent ones, which the fit never saw) for the validation gate.
    """
    data = _rows(stream, rows)
    trained = _fit_and_write(
        data,
        home / "release-2",
        note=f"release 2: retrained on {len(data):,} labelled transactions after the drift",
    )
    return trained, _rows(data, slice(int(len(data) * 0.8), len(data)))


def _columns(data: Transactions) -> dict[str, Any]:
    """Transactions as the inference core's columns (one array per schema field)."""
    return {
        "amount": data.amount,
        "hour": data.hour.astype(np.int64),
        "merchant": np.array([MERCHANTS[i] for i in data.merchant], dtype=object),
        "distance_km": data.distance_km,
        "card_present": data.card_present.astype(bool),
        "tx_last_24h": data.tx_last_24h.astype(np.int64),
    }


@dataclass(frozen=True)
class GateResult:
    """Challenger against champion on the same recent holdout, each at its own threshold.

    Attributes
    ----------
    champion, challenger
        Release refs.
    metrics
        Per ref: ``auc``, ``precision``, ``recall``, ``f1`` and ``flagged`` on the holdout.
    rows, frauds
        The holdout's size and its true frauds.
    passed
        The challenger's F1 (each release at its own threshold) and AUC are both at least
        the champion's: a better balance of missed and false frauds where it operates,
        and a ranking at least as good at every threshold. Recall alone is reported, not
        gated: each release trades it against precision by its own threshold.
    """

    champion: str
    challenger: str
    metrics: dict[str, dict[str, float]]
    rows: int
    frauds: int
    passed: bool

    def reason(self) -> str:
        """One line: both releases' numbers and the gate's rule."""
        a, b = self.metrics[self.champion], self.metrics[self.challenger]
        verdict = "passed" if self.passed else "failed"
        return (
            f"{verdict}: on the {self.rows:,} most recent labelled transactions "
            f"({self.frauds} frauds) {self.challenger} against {self.champion}: F1 "
            f"{b['f1']:.3f} vs {a['f1']:.3f}, recall {b['recall']:.3f} vs {a['recall']:.3f} "
            f"(precision {b['precision']:.3f} vs {a['precision']:.3f}, AUC {b['auc']:.3f} vs "
            f"{a['auc']:.3f}); the rule: F1 and AUC not worse than the champion's"
        )


def holdout_metrics(y: Any, scores: Any, predicted_fraud: Any) -> dict[str, float]:
    """AUC of `scores`, and precision, recall, F1 of `predicted_fraud`, against `y`."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    flagged = np.asarray(predicted_fraud, dtype=bool)
    tp = float(np.sum(flagged & y))
    fp, fn = float(np.sum(flagged & ~y)), float(np.sum(~flagged & y))
    both = bool(y.any()) and not bool(y.all())
    return {
        "auc": float(roc_auc_score(y, scores)) if both else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "flagged": float(np.sum(flagged)),
    }


def validation_gate(
    registry: Registry, *, champion: str, challenger: str, holdout: Transactions
) -> GateResult:
    """Score `holdout` with both registered releases through the inference core (each
    with its own config: threshold and labels) and compare them.

    Raises
    ------
    ValueError
        A release rejected a holdout row (the holdout is clean: that would be a bug).
    """
    from headrace.inference.loading import load_release

    metrics: dict[str, dict[str, float]] = {}
    for ref in (champion, challenger):
        service = load_release(registry, ref, warmup_rows=0).service
        result = service.infer(_columns(holdout), n_rows=len(holdout))
        if result.rejections or result.scores is None:
            raise ValueError(
                f"{ref} rejected {len(result.rejections)} of {len(holdout)} holdout rows "
                "(or gave no scores): the gate needs a score for every row"
            )
        metrics[ref] = holdout_metrics(
            holdout.is_fraud, result.scores, np.asarray(result.predictions) == "fraud"
        )
    a, b = metrics[champion], metrics[challenger]
    return GateResult(
        champion=champion,
        challenger=challenger,
        metrics=metrics,
        rows=len(holdout),
        frauds=int(np.sum(holdout.is_fraud)),
        passed=b["f1"] >= a["f1"] and b["auc"] >= a["auc"],
    )


def register_trained(
    registry: Registry,
    trained: Trained,
    *,
    alias: str | None,
    reason: str,
    parent: str | None = None,
) -> Release:
    """Register `trained` as the next release of ``fraud``, as `headrace register` does:
    the model's own signature decides the columns (the contract check), and the release
    is recorded as verified (a rollout refuses an unverified candidate); `parent` is its
    lineage (the release it retrains)."""
    import tempfile

    from headrace.inference.contract import check_draft
    from headrace.release.bundle import build_draft

    model_dir = trained.directory
    with tempfile.TemporaryDirectory(prefix="headrace-draft-") as scratch:
        draft = build_draft(
            model_dir / "model.pkl",
            name="fraud",
            flavor="sklearn",
            workdir=Path(scratch),
            schema_path=model_dir / "schema.yaml",
            features_path=model_dir / "features.yaml",
            data_path=model_dir / "train.parquet",
            metrics_path=model_dir / "metrics.json",
            config_path=model_dir / "config.yaml",
        )
        draft, _ = check_draft(draft)
        return registry.register(
            draft, alias=alias, parent=parent, reason=reason, verification="passed"
        )
