"""The Python API: register a live model object, load a release as a predictor.

``headrace.register(model, name=..., data=df)`` does what ``headrace register`` does, from
a notebook: the model is saved in its flavor's own format (joblib for scikit-learn and any
object with ``predict``, the native files for LightGBM and XGBoost boosters, ONNX,
TorchScript and ``torch.export`` programs), the training data becomes the fingerprint, the
reference profile and (unless a schema is given) the schema, and the model's own signature
decides the column order, exactly as on the command line. ``headrace.load("fraud@champion")``
gives a `Predictor` that scores a DataFrame, a dict of columns or a list of records through
the same inference core as every transport.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from headrace.errors import ConfigError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.service import InferenceResult, InferenceService
from headrace.registry.store import Registry, Release
from headrace.release.config import ReleaseConfig
from headrace.release.features import FeatureSpec
from headrace.release.schema import Schema, schema_to_builtins
from headrace.settings import Settings

__all__ = ["Predictor", "load", "register"]


def _open_registry(registry: str | None, artifacts: str | None) -> Registry:
    overrides: dict[str, Any] = {}
    if registry:
        overrides["registry"] = registry
    if artifacts:
        overrides["artifacts"] = artifacts
    settings = Settings(**overrides)
    return Registry(
        settings.registry_url(),
        artifacts=settings.artifacts_url(),
        actor=settings.actor,
        cache_dir=settings.release_cache(),
    )


def _module_of(model: Any) -> str:
    return type(model).__module__.split(".")[0]


def _save_model(model: Any, directory: Path, flavor: str | None) -> tuple[Path, str]:
    """Write `model` in its flavor's format; return the file and the flavor."""
    top = _module_of(model)
    kind = type(model).__name__
    if flavor in (None, "lightgbm") and top == "lightgbm" and kind == "Booster":
        path = directory / "model.txt"
        model.save_model(str(path))
        return path, "lightgbm"
    if flavor in (None, "xgboost") and top == "xgboost" and kind == "Booster":
        path = directory / "model.json"
        model.save_model(str(path))
        return path, "xgboost"
    if flavor in (None, "onnx") and top == "onnx" and hasattr(model, "SerializeToString"):
        path = directory / "model.onnx"
        path.write_bytes(model.SerializeToString())
        return path, "onnx"
    if flavor in (None, "torch") and top == "torch":
        import torch

        if isinstance(model, torch.export.ExportedProgram):
            path = directory / "model.pt2"
            torch.export.save(model, str(path))
            return path, "torch"
        if isinstance(model, torch.jit.ScriptModule):
            path = directory / "model.pt"
            model.save(str(path))
            return path, "torch"
        raise ConfigError(
            f"Cannot register a live {kind}: torch models go in as TorchScript or a "
            "torch.export program. Pass torch.jit.script(model) or torch.export.export(model, "
            "(example,))."
        )
    if flavor in (None, "sklearn") and callable(getattr(model, "predict", None)):
        import joblib

        path = directory / "model.joblib"
        joblib.dump(model, path)
        return path, "sklearn"
    raise ConfigError(
        f"Cannot register a live {top}.{kind} (flavor {flavor or 'auto'}): pass a fitted "
        "estimator with predict(), a LightGBM or XGBoost Booster, an ONNX ModelProto, or a "
        "TorchScript module / torch.export program; or save it and use headrace register."
    )


def _write_table(data: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "to_parquet"):
        data.to_parquet(path, index=False)
        return
    elif isinstance(data, Mapping):
        table = pa.table(dict(data))
    else:
        raise ConfigError(
            f"data must be a pandas DataFrame, a pyarrow Table or a dict of columns, "
            f"not {type(data).__name__}: pass the training data the model was fitted on."
        )
    pq.write_table(table, path)


def _write_document(value: Any, path: Path) -> Path:
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    path.write_text(yaml.safe_dump(value, sort_keys=False), encoding="utf-8")
    return path


def register(
    model: Any,
    *,
    name: str,
    data: Any = None,
    schema: Schema | Mapping[str, Any] | None = None,
    features: FeatureSpec | Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    config: ReleaseConfig | Mapping[str, Any] | None = None,
    alias: str | None = None,
    flavor: str | None = None,
    registry: str | None = None,
    artifacts: str | None = None,
    allow_duplicate: bool = False,
) -> Release:
    """Register a live model object as a release, as ``headrace register`` does for files.

    Parameters
    ----------
    model
        A fitted estimator (scikit-learn, or anything with ``predict``), a LightGBM or
        XGBoost ``Booster``, an ONNX ``ModelProto``, a TorchScript module or a
        ``torch.export`` program.
    name
        The release name, e.g. ``fraud``.
    data
        The training data (pandas DataFrame, pyarrow Table or dict of columns): its
        fingerprint, reference profile and sample, and the schema unless one is given.
    schema, features, config
        A `Schema`, `FeatureSpec`, `ReleaseConfig` or the equivalent mappings.
    metrics
        Evaluation metrics, name to number.
    alias
        Point this alias (e.g. ``champion``) at the new release.
    flavor
        Force a flavor; by default it follows the object's type.
    registry, artifacts
        Registry and artifact store URLs; by default ``HEADRACE_REGISTRY`` /
        ``HEADRACE_ARTIFACTS`` or the local store under ``HEADRACE_HOME``.
    allow_duplicate
        Make a new version even when a release with identical content exists; by default
        that release is returned instead (its ``duplicate_of`` names it).

    Returns
    -------
    Release
        The registered release (``release.ref`` is ``name:version``).

    Raises
    ------
    ReleaseError
        The model's signature and the data or schema disagree, or the model answers
        differently through headrace than called directly on its reference sample; nothing
        is registered then.
    """
    from headrace.inference.contract import check_draft
    from headrace.release.bundle import build_draft

    with tempfile.TemporaryDirectory(prefix="headrace-api-") as scratch:
        root = Path(scratch)
        (root / "model").mkdir()
        model_path, model_flavor = _save_model(model, root / "model", flavor)
        data_path = None
        if data is not None:
            data_path = root / "train.parquet"
            _write_table(data, data_path)
        schema_path = None
        if schema is not None:
            built = schema_to_builtins(schema) if isinstance(schema, Schema) else schema
            schema_path = _write_document(built, root / "schema.yaml")
        features_path = None if features is None else _write_document(features, root / "f.yaml")
        config_path = None if config is None else _write_document(config, root / "config.yaml")
        metrics_path = None
        if metrics is not None:
            metrics_path = root / "metrics.json"
            metrics_path.write_text(json.dumps(dict(metrics)), encoding="utf-8")
        work = root / "work"
        work.mkdir()
        draft = build_draft(
            model_path,
            name=name,
            flavor=model_flavor,
            workdir=work,
            schema_path=schema_path,
            features_path=features_path,
            data_path=data_path,
            metrics_path=metrics_path,
            config_path=config_path,
        )
        draft, _ = check_draft(draft, schema_given=schema is not None)
        with _open_registry(registry, artifacts) as store:
            # The contract check above is the verification: the release may take aliases.
            return store.register(
                draft, alias=alias, allow_duplicate=allow_duplicate, verification="passed"
            )


@dataclass(frozen=True)
class Predictor:
    """A loaded release that scores DataFrames, dicts of columns and lists of records.

    Columns are matched by name against the release's signature, in any order; extra
    columns are ignored. Every input row gets an output row: rows that fail validation or
    make the model raise get no prediction and say why in ``error``.
    """

    service: InferenceService

    @property
    def release(self) -> str:
        """``name:version`` of the loaded release."""
        return self.service.release

    @property
    def digest(self) -> str:
        """The loaded release's content digest."""
        return self.service.release_digest

    def infer(self, data: Any) -> InferenceResult:
        """Score `data` and return the inference core's own result (rows, rejections)."""
        if isinstance(data, Sequence) and not isinstance(data, str | bytes):
            return self.service.infer_records(list(data))
        import pyarrow as pa

        if isinstance(data, Mapping):
            data = pa.table({k: list(v) for k, v in data.items()})
        elif hasattr(data, "to_parquet"):  # a pandas DataFrame: nulls stay nulls via Arrow
            data = pa.Table.from_pandas(data, preserve_index=False)
        if not isinstance(data, pa.Table):
            raise ConfigError(
                f"Cannot score a {type(data).__name__}: pass a pandas DataFrame, a pyarrow "
                "Table, a dict of columns or a list of records."
            )
        columns = columns_from_arrow(data, names=self.service.schema.names)
        return self.service.infer(columns, n_rows=data.num_rows)

    def predict(self, data: Any) -> Any:
        """Score `data`; one row per input row: ``prediction``, ``score``, ``error``.

        Returns
        -------
        pandas.DataFrame
            In input row order; ``prediction`` and ``score`` are missing where ``error``
            says why the row was rejected.
        """
        import numpy as np

        pd: Any = importlib.import_module("pandas")  # no type stubs: imported as Any
        result = self.infer(data)
        n = result.n_rows
        prediction = np.full(n, None, dtype=object)
        prediction[result.rows] = list(np.asarray(result.predictions).tolist())
        score = np.full(n, np.nan)
        if result.scores is not None:
            score[result.rows] = result.scores
        error = np.full(n, None, dtype=object)
        for rejection in result.rejections:
            error[rejection.row] = rejection.reason
        return pd.DataFrame({"prediction": prediction, "score": score, "error": error})

    __call__ = predict


def load(ref: str, *, registry: str | None = None, artifacts: str | None = None) -> Predictor:
    """Load ``name:version`` or ``name@alias`` into a `Predictor`.

    The release's files are fetched and checked against their sha256 first; the model
    stays loaded in the predictor.
    """
    from headrace.inference.loading import load_service

    with _open_registry(registry, artifacts) as store:
        return Predictor(load_service(store, ref))
