"""The model contract, settled at registration: the model's own signature decides the columns.

A model fitted on named columns knows their order; the schema and the training data are
just documents about it. So registration reads the model's signature (scikit-learn
``feature_names_in_``, LightGBM ``feature_name()``, XGBoost ``feature_names``, ONNX graph
inputs, a ``torch.export`` input width), checks that the release's inputs are exactly those
columns (by name, any order) with types the model can take, and records the model's order
in the manifest. Every transport then lays columns out by name in that order.

Then the reference sample is scored twice: once the way the model was fitted (a DataFrame
with the training columns, by name) and once through the runtime's own path (validate,
lay out, predict). The two must agree exactly, or the release is refused: a silently wrong
prediction is the worst outcome a serving platform can have.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from headrace.errors import HeadraceError, ModelLoadError, ReleaseError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.service import InferenceService
from headrace.inference.validate import validate
from headrace.release.bundle import ReleaseDraft
from headrace.release.features import model_inputs
from headrace.release.manifest import Signature, SignatureInput, SignatureOutput
from headrace.release.schema import Schema
from headrace.runtimes.base import LoadedModel, ModelOutput, NativeSignature, SignedModel
from headrace.runtimes.loader import load_model

__all__ = ["check_draft", "compare_outputs", "resolve_signature"]

_TEXT_TYPES = frozenset({"string", "category"})
_TEXT_TENSOR = "tensor(string)"
_SHOWN = 8
_PROBE_ROWS = 32


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def resolve_signature(
    native: NativeSignature, *, schema: Schema, inputs: Sequence[str], release: str
) -> Signature:
    """Match the release's inputs against what the model says, and record the model's order.

    Parameters
    ----------
    native
        What the loaded model says about itself.
    schema
        The release's input schema (types of the inputs).
    inputs
        The release's model inputs (the feature spec's `inputs`, else every schema field).
    release
        ``name``, for messages.

    Raises
    ------
    ReleaseError
        A column the model takes is missing, a column it was not fitted on is given, the
        count differs, or a column's type cannot feed the model.
    """
    given = list(inputs)
    where = native.source or "its signature"
    if native.names is not None:
        names = list(native.names)
        missing = [n for n in names if n not in set(given)]
        extra = [n for n in given if n not in set(names)]
        if missing:
            raise ReleaseError(
                f"Model of release '{release}' takes columns {_names(missing)} ({where}) that "
                "are not among the release's inputs: add them to the schema (or to --data when "
                "the schema is inferred from it), or to `inputs` in --features."
            )
        if extra:
            raise ReleaseError(
                f"Release '{release}' gives the model columns {_names(extra)} that it was not "
                f"fitted on ({where}: {_names(names)}): remove them from the schema, or list "
                "only the model's columns under `inputs` in --features."
            )
        order = names
    else:
        if native.n_features is not None and native.n_features != len(given):
            raise ReleaseError(
                f"Model of release '{release}' takes {native.n_features} input columns "
                f"({where}) but the release gives it {len(given)} ({_names(given)}): make the "
                "schema, or `inputs` in --features, list exactly the model's columns in "
                "training order."
            )
        order = given
    named_columns = native.names is not None and native.dtypes is not None
    per_column = native.dtypes if named_columns and len(native.dtypes or ()) == len(order) else None
    wrong = []
    for i, name in enumerate(order):
        ftype = schema.field(name).type
        if per_column is not None:
            bad = (ftype == "string") != (per_column[i] == _TEXT_TENSOR)
        else:
            bad = native.numeric_only and ftype == "string"
        if bad:
            wrong.append(f"'{name}' ({ftype})")
    if wrong:
        raise ReleaseError(
            f"Columns {', '.join(wrong)} of release '{release}' have types the model cannot "
            f"take ({where}): a `string` field feeds only a string input; type numbers as "
            "float, int or category (a category reaches the model as its code)."
        )
    frame = native.frame and any(schema.field(n).type in _TEXT_TYPES for n in order)
    shape: list[int | None] = [None, 1] if per_column is not None else [None]
    return Signature(
        inputs=[
            SignatureInput(
                name=name,
                type=schema.field(name).type,
                dtype=per_column[i] if per_column is not None else None,
                shape=shape,
            )
            for i, name in enumerate(order)
        ],
        named=native.names is not None,
        frame=frame,
        outputs=[
            SignatureOutput(name=n, type=t, shape=None if s is None else list(s))
            for n, t, s in native.outputs
        ],
        classes=None if native.classes is None else [_plain(c) for c in native.classes],
        source=native.source,
    )


def _plain(value: Any) -> str | int | float | bool:
    item = value.item() if isinstance(value, np.generic) else value
    return item if isinstance(item, str | int | float | bool) else str(item)


def _check_order_is_known(draft: ReleaseDraft, inputs: list[str], *, schema_given: bool) -> None:
    """A model fitted without names: refuse when the schema and the data disagree on order."""
    if not schema_given or draft.features.inputs is not None or draft.data is None:
        return
    in_data = [c.name for c in draft.data.columns if c.name in set(inputs)]
    if len(in_data) == len(inputs) and in_data != inputs:
        raise ReleaseError(
            f"Model of release '{draft.name}' was fitted without column names, and the "
            f"schema's field order ({_names(inputs)}) differs from the --data column order "
            f"({_names(in_data)}): list the inputs in training order under `inputs` in "
            "--features."
        )


def sign_draft(
    draft: ReleaseDraft, model: LoadedModel, *, schema_given: bool = True
) -> ReleaseDraft:
    """The draft with the model's signature; with an inferred schema, data-only columns
    (a label, an id) that the named model was not fitted on are dropped from the schema."""
    native = model.signature() if isinstance(model, SignedModel) else NativeSignature()
    schema = draft.schema
    if not schema_given and native.names is not None and draft.features.inputs is None:
        wanted = set(native.names)
        schema = Schema(fields=[f for f in schema.fields if f.name in wanted])
    inputs = model_inputs(schema, draft.features)
    if native.names is None:
        _check_order_is_known(draft, inputs, schema_given=schema_given)
    signature = resolve_signature(native, schema=schema, inputs=inputs, release=draft.name)
    return dataclasses.replace(draft, schema=schema, signature=signature)


def compare_outputs(runtime: ModelOutput, reference: ModelOutput) -> str | None:
    """Say how two outputs of one batch differ (first differing row), or None when equal."""
    for what, got, want in (
        ("prediction", runtime.predictions, reference.predictions),
        ("probabilities", runtime.probabilities, reference.probabilities),
    ):
        if got is None or want is None:
            continue
        a, b = np.asarray(got), np.asarray(want)
        if a.shape != b.shape:
            return f"{what} shapes {a.shape} and {b.shape} differ"
        if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
            same = np.isclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)
        else:
            same = a == b
        if same.ndim > 1:
            same = same.all(axis=tuple(range(1, same.ndim)))
        bad = np.flatnonzero(~same)
        if bad.size:
            row = int(bad[0])
            return (
                f"{bad.size} of {len(a)} rows differ in {what}, e.g. row {row}: the model says "
                f"{_show(b[row])}, the runtime {_show(a[row])}"
            )
    return None


def _show(value: Any) -> str:
    text = np.array2string(np.asarray(value), precision=6, threshold=6)
    return text if len(text) <= 80 else text[:77] + "..."


def verify_with_reference(draft: ReleaseDraft, model: LoadedModel) -> int:
    """Score the reference sample through the runtime and as fitted; refuse on any difference.

    Returns
    -------
    int
        The number of rows scored (0 without a reference sample).
    """
    service = InferenceService(
        model,
        schema=draft.schema,
        inputs=model_inputs(draft.schema, draft.features),
        config=draft.config,
        release=f"{draft.name}:draft",
        release_digest="",
        signature=draft.signature,
    )
    if draft.profile is None or draft.profile.sample is None:
        return 0
    import pyarrow.parquet as pq

    table = pq.read_table(draft.sources[draft.profile.sample.sha256])
    what = f"Model '{draft.name}' ({draft.model.flavor})"
    try:
        result = service.infer(columns_from_arrow(table), n_rows=table.num_rows)
    except HeadraceError as exc:
        raise ReleaseError(
            f"{what} fails on its own training sample: {exc}. Check the schema and feature "
            "order match what the model was trained on."
        ) from exc
    failed = [r for r in result.rejections if r.stage == "predict"]
    if failed:
        raise ReleaseError(
            f"{what} raised on {len(failed)} of {table.num_rows} rows of its training sample, "
            f"e.g. row {failed[0].row}: {failed[0].reason}. Check the schema and feature "
            "order match the model."
        )
    if table.num_rows and not result.n_predicted:
        first = result.rejections[0]
        raise ReleaseError(
            f"{what} cannot score any row of its own training sample: row {first.row} is "
            f"rejected ({first.reason}). Fix the schema so the training data passes it."
        )
    if isinstance(model, SignedModel) and draft.signature is not None and result.n_predicted:
        _compare_with_fitted(draft, model, service, table, what=what)
    return result.n_predicted


def _compare_with_fitted(
    draft: ReleaseDraft, model: SignedModel, service: InferenceService, table: Any, *, what: str
) -> None:
    batch = validate(draft.schema, columns_from_arrow(table), n_rows=table.num_rows)
    if batch.rows.size == 0:
        return
    runtime = service.model.predict(service.model_input(batch.columns))
    names = service.inputs
    as_text = draft.signature is not None and draft.signature.frame
    frame = _reference_frame(table, draft.schema, names, rows=batch.rows, as_text=as_text)
    try:
        reference = model.reference_predict(frame)
    except Exception as exc:
        raise ReleaseError(
            f"{what} cannot score its reference sample called as it was fitted (a DataFrame "
            f"with columns {_names(names)}): {type(exc).__name__}: {exc}. Register it with "
            "the data it was fitted on."
        ) from exc
    difference = compare_outputs(runtime, reference)
    if difference is not None:
        raise ReleaseError(
            f"{what} answers differently through headrace than called as it was fitted on its "
            f"reference sample: {difference}. Check that the schema types and the column "
            "names match the training data; nothing was registered."
        )


def _reference_frame(
    table: Any, schema: Schema, names: Sequence[str], *, rows: Any, as_text: bool
) -> Any:
    """The training rows straight from pandas, encoded as the schema documents what the
    model sees: a category as its index in `values` (as text for a DataFrame model), a
    timestamp as epoch seconds, a bool as 0/1 for a matrix model."""
    frame = table.select(list(names)).to_pandas().iloc[rows].reset_index(drop=True)
    for name in names:
        field = schema.field(name)
        column = frame[name]
        if field.type == "category":
            if as_text:
                frame[name] = column.astype(object).where(column.notna(), None)
            else:
                categorical = column.astype("category").cat.set_categories(field.values or [])
                codes = categorical.cat.codes.astype(np.float64)
                frame[name] = codes.where(codes >= 0, np.nan)
        elif field.type == "timestamp" and hasattr(column, "dt"):
            pandas: Any = importlib.import_module("pandas")  # no type stubs: imported as Any
            epoch = pandas.Timestamp(0, tz=column.dt.tz)
            frame[name] = (column - epoch) / pandas.Timedelta(seconds=1)
        elif field.type == "bool" and not as_text:
            frame[name] = column.astype(np.float64)
    return frame


def check_draft(draft: ReleaseDraft, *, schema_given: bool = True) -> tuple[ReleaseDraft, int]:
    """Load the draft's model, record its signature, and verify it on the reference sample.

    Parameters
    ----------
    draft
        The release draft (its model files on local disk).
    schema_given
        The schema came from a file, not inferred from --data: a column the model was not
        fitted on is then an error rather than a data-only column to leave out.

    Returns
    -------
    tuple
        The draft with its signature (and, for an inferred schema, only the model's
        columns), and the number of reference rows scored.

    Raises
    ------
    ReleaseError
        The model and the release disagree on columns, or the runtime's output differs
        from the model's own on the reference sample, or the model fails on it.
    """
    if draft.model_dir is None:
        raise ReleaseError(f"Draft '{draft.name}' has no model directory to verify.")
    # Loaded from a copy of exactly the release's files, never from the source directory:
    # a model that reads a file the release does not hold fails here, not in a worker.
    with tempfile.TemporaryDirectory(prefix="headrace-verify-") as scratch:
        root = _stage(draft, Path(scratch))
        try:
            model = load_model(
                draft.model.flavor,
                model_dir=root,
                entry=draft.model.entry,
                options=dict(draft.config.runtime),
            )
        except ModelLoadError as exc:
            if isinstance(exc.__cause__, OSError | ImportError) and len(draft.model.files) == 1:
                raise ReleaseError(
                    f"{exc} The release holds only '{draft.model.files[0].path}': register "
                    "the directory with every file the model reads (headrace register DIR "
                    "--flavor python --entry file.py:Class)."
                ) from exc
            raise
        return _signed_and_verified(draft, model, schema_given=schema_given)


def _stage(draft: ReleaseDraft, root: Path) -> Path:
    """Copy the draft's model files, by their hashed sources, under `root`."""
    for entry in draft.model.files:
        target = root / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(draft.sources[entry.sha256], target)
    return root


def _signed_and_verified(
    draft: ReleaseDraft, model: LoadedModel, *, schema_given: bool
) -> tuple[ReleaseDraft, int]:
    signed = sign_draft(draft, model, schema_given=schema_given)
    if _needs_frame(signed, model):
        signature = signed.signature
        if signature is not None:
            signed = dataclasses.replace(
                signed, signature=msgspec.structs.replace(signature, frame=True)
            )
    return signed, verify_with_reference(signed, model)


def _needs_frame(draft: ReleaseDraft, model: LoadedModel) -> bool:
    """A model fitted on a DataFrame of numbers that refuses a numpy matrix (a
    ColumnTransformer selecting columns by name) must get a DataFrame after all."""
    signature = draft.signature
    if signature is None or signature.frame or not isinstance(model, SignedModel):
        return False
    if not model.signature().frame:
        return False
    if draft.profile is None or draft.profile.sample is None:
        return True  # nothing to try it on: the DataFrame is always right, only slower
    import pyarrow.parquet as pq

    table = pq.read_table(draft.sources[draft.profile.sample.sha256]).slice(0, _PROBE_ROWS)
    batch = validate(draft.schema, columns_from_arrow(table), n_rows=table.num_rows)
    if batch.rows.size == 0:
        return True
    service = InferenceService(
        model,
        schema=draft.schema,
        inputs=signature.names,
        config=draft.config,
        release=draft.name,
        release_digest="",
        signature=signature,
    )
    try:
        model.predict(service.model_input(batch.columns))
    except Exception:
        return True
    return False
