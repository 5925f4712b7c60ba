"""The inference service: the one core every transport calls.

The stream worker, the HTTP server and batch ``predict`` all hand a columnar batch to
`InferenceService.infer` and get back predictions for the good rows and a `Rejection`
for every other row. The service does no I/O and keeps no per-batch state, so transports
may share one instance across threads when the model allows it.

A model call that raises is retried once (a transient failure costs nothing more). If it
fails again, the batch is bisected to isolate the rows that make the model raise: those
rows are rejected at stage ``predict`` and every other row still gets its prediction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from headrace.errors import ModelError, SchemaError
from headrace.inference.matrix import model_frame, model_matrix
from headrace.inference.postprocess import postprocess
from headrace.inference.validate import Rejection, _json_type, records_to_columns, validate
from headrace.release.config import ReleaseConfig
from headrace.release.manifest import Signature
from headrace.release.schema import Schema
from headrace.runtimes.base import LoadedModel, ModelOutput
from headrace.types import Array, Columns, Matrix

__all__ = ["InferenceResult", "InferenceService"]

_MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What the service made of one batch.

    Attributes
    ----------
    rows
        The int64 index, in the input batch, of every row that got a prediction.
    predictions
        One prediction per entry of `rows`.
    scores
        One float64 score per entry of `rows`, or None when the model gives none.
    rejections
        One per input row without a prediction, sorted by row.
    release
        The release that produced the predictions, like ``fraud:3``.
    release_digest
        That release's content digest.
    n_rows
        The number of rows of the input batch (``n_predicted + n_rejected``).
    stages_ns
        When validation started, and validation, prediction and post-processing ended
        (`time.time_ns`), for trace spans; shorter when the batch stopped early.
    probabilities
        float64 ``(len(rows), classes)``: every class's probability, or None when the
        model gives none.
    classes
        The class names of the `probabilities` columns, or None.
    """

    rows: npt.NDArray[np.int64]
    predictions: Array
    scores: npt.NDArray[np.float64] | None
    rejections: list[Rejection]
    release: str
    release_digest: str
    n_rows: int
    stages_ns: tuple[int, ...] = ()
    probabilities: npt.NDArray[np.float64] | None = None
    classes: tuple[str, ...] | None = None

    @property
    def n_predicted(self) -> int:
        """How many rows got a prediction."""
        return len(self.rows)

    @property
    def n_rejected(self) -> int:
        """How many rows were rejected."""
        return len(self.rejections)


class _WrongRowCountError(ModelError):
    """The model broke its contract; bisecting cannot help."""


@dataclass(slots=True)
class _Predicted:
    """The rows of a matrix the model scored, and the failures it isolated."""

    positions: npt.NDArray[np.intp]
    output: ModelOutput | None
    failures: list[tuple[int, BaseException]]


class InferenceService:
    """Validate, predict and post-process batches for one loaded release.

    Parameters
    ----------
    model
        The loaded model.
    schema
        The release's input schema.
    inputs
        The model's input fields in order (see `headrace.release.features.model_inputs`).
    config
        The release config.
    release
        The release reference, like ``fraud:3``, stamped on every result.
    release_digest
        The release's content digest, stamped on every result.
    signature
        The model's own signature from the manifest: when given, its input order wins
        over `inputs` (columns are laid out by name in the model's order), and a model
        fitted on a DataFrame with non-numeric columns is handed a DataFrame.

    Raises
    ------
    SchemaError
        When an input is not a schema field.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        schema: Schema,
        inputs: Sequence[str],
        config: ReleaseConfig,
        release: str,
        release_digest: str,
        signature: Signature | None = None,
    ) -> None:
        if signature is not None:
            inputs = signature.names
        known = set(schema.names)
        unknown = [name for name in inputs if name not in known]
        if unknown or not inputs:
            raise SchemaError(
                f"model inputs {unknown or list(inputs)!r} are not fields of the schema "
                f"(its fields are {', '.join(schema.names)}): fix the feature spec's `inputs`"
            )
        self.model = model
        self.schema = schema
        self.inputs = list(inputs)
        self.config = config
        self.release = release
        self.release_digest = release_digest
        self.signature = signature
        self._frame = signature is not None and signature.frame

    def infer(
        self, columns: Columns, *, n_rows: int, coerce_strings: bool = False
    ) -> InferenceResult:
        """Score a columnar batch.

        Parameters
        ----------
        columns
            Field name -> column of `n_rows` values (see `validate` for what a column may
            hold).
        n_rows
            The number of rows of the batch.
        coerce_strings
            Every value arrives as text (CSV): parse it per field type.

        Returns
        -------
        InferenceResult
            Predictions for the good rows, a rejection for every other row.

        Raises
        ------
        ModelError
            When the model breaks its contract (not one prediction per row); a model that
            merely raises on some rows does not raise here, those rows are rejected.
        SchemaError
            When the release config does not fit the model's output.
        """
        started = time.time_ns()
        batch = validate(self.schema, columns, n_rows=n_rows, coerce_strings=coerce_strings)
        validated = time.time_ns()
        if batch.rows.size == 0:
            return self._result(
                rows=batch.rows,
                predictions=np.empty(0, dtype=object),
                scores=None,
                rejections=batch.rejections,
                n_rows=n_rows,
                stages_ns=(started, validated),
            )
        predicted = self._predict(self.model_input(batch.columns))
        stages_ns = (started, validated, time.time_ns())
        rejections = batch.rejections
        if predicted.failures:
            rejections = rejections + [
                Rejection(
                    row=int(batch.rows[position]),
                    field=None,
                    reason=_model_reason(exc),
                    stage="predict",
                )
                for position, exc in predicted.failures
            ]
            rejections.sort(key=lambda r: r.row)
        if predicted.output is None:
            return self._result(
                rows=np.empty(0, dtype=np.int64),
                predictions=np.empty(0, dtype=object),
                scores=None,
                rejections=rejections,
                n_rows=n_rows,
                stages_ns=stages_ns,
            )
        outputs = postprocess(predicted.output, config=self.config)
        return self._result(
            rows=batch.rows[predicted.positions],
            predictions=outputs.predictions,
            scores=outputs.scores,
            rejections=rejections,
            n_rows=n_rows,
            stages_ns=(*stages_ns, time.time_ns()),
            probabilities=outputs.probabilities,
            classes=outputs.classes,
        )

    def infer_records(self, records: Sequence[Any]) -> InferenceResult:
        """Score decoded JSON objects, one per row.

        A record that is not a mapping (a JSON array, string, number) is rejected at stage
        ``decode``; the others are scored as by `infer`.

        Parameters
        ----------
        records
            The decoded events, one per row; absent keys are missing fields, None is null.

        Returns
        -------
        InferenceResult
            Rows are indices into `records`.
        """
        bad = [i for i, record in enumerate(records) if not isinstance(record, Mapping)]
        if not bad:
            columns = records_to_columns(records, names=self.schema.names)
            return self.infer(columns, n_rows=len(records))
        good = np.setdiff1d(np.arange(len(records)), bad).astype(np.int64)
        kept = [records[i] for i in good.tolist()]
        result = self.infer(records_to_columns(kept, names=self.schema.names), n_rows=len(kept))
        rejections = [
            Rejection(row=int(good[r.row]), field=r.field, reason=r.reason, stage=r.stage)
            for r in result.rejections
        ]
        rejections.extend(
            Rejection(
                row=i,
                field=None,
                reason=f"Expected `object`, got `{_json_type(records[i])}` - at `$`",
                stage="decode",
            )
            for i in bad
        )
        rejections.sort(key=lambda r: r.row)
        return self._result(
            rows=good[result.rows],
            predictions=result.predictions,
            scores=result.scores,
            rejections=rejections,
            n_rows=len(records),
            stages_ns=result.stages_ns,
            probabilities=result.probabilities,
            classes=result.classes,
        )

    def model_input(self, columns: Columns) -> Matrix:
        """Validated columns as the model takes them: a matrix in the model's input order,
        or a DataFrame under its fitted names when the signature says so."""
        if self._frame:
            frame: Matrix = model_frame(columns, inputs=self.inputs)
            return frame
        return model_matrix(self.schema, columns, inputs=self.inputs)

    # -- the model call, retried and bisected -------------------------------------

    def _call(self, matrix: Matrix) -> ModelOutput:
        output = self.model.predict(matrix)
        n = len(matrix)
        got = len(output.predictions)
        probabilities = output.probabilities
        what = None
        if got != n:
            what = f"{got} predictions"
        elif probabilities is not None and len(probabilities) != n:
            what = f"probabilities for {len(probabilities)} rows"
        if what is not None:
            raise _WrongRowCountError(
                f"Model of release {self.release} ({self.model.flavor}) returned {what} for "
                f"{n} rows: a model must return exactly one prediction per input row, in "
                "order; fix its predict function"
            )
        return output

    def _predict(self, matrix: Matrix) -> _Predicted:
        n = len(matrix)
        everything = np.arange(n, dtype=np.intp)
        error: BaseException | None = None
        for _attempt in range(2):  # a transient failure gets one retry
            try:
                return _Predicted(everything, self._call(matrix), [])
            except _WrongRowCountError:
                raise
            except Exception as exc:
                error = exc
        if n == 1 and error is not None:
            return _Predicted(np.empty(0, dtype=np.intp), None, [(0, error)])
        parts: list[tuple[int, int, ModelOutput]] = []
        failures: list[tuple[int, BaseException]] = []
        middle = n // 2
        self._bisect(matrix, 0, middle, parts, failures)
        self._bisect(matrix, middle, n, parts, failures)
        if not parts:
            return _Predicted(np.empty(0, dtype=np.intp), None, failures)
        positions = np.concatenate([np.arange(lo, hi, dtype=np.intp) for lo, hi, _ in parts])
        return _Predicted(positions, _concat([out for _, _, out in parts]), failures)

    def _bisect(
        self,
        matrix: Matrix,
        lo: int,
        hi: int,
        parts: list[tuple[int, int, ModelOutput]],
        failures: list[tuple[int, BaseException]],
    ) -> None:
        """Score rows lo..hi, splitting in halves until each failing row stands alone."""
        if lo >= hi:
            return
        try:
            parts.append((lo, hi, self._call(matrix[lo:hi])))
        except _WrongRowCountError:
            raise
        except Exception as exc:
            if hi - lo == 1:
                failures.append((lo, exc))
                return
            middle = (lo + hi) // 2
            self._bisect(matrix, lo, middle, parts, failures)
            self._bisect(matrix, middle, hi, parts, failures)

    def _result(
        self,
        *,
        rows: npt.NDArray[np.int64],
        predictions: Array,
        scores: npt.NDArray[np.float64] | None,
        rejections: list[Rejection],
        n_rows: int,
        stages_ns: tuple[int, ...] = (),
        probabilities: npt.NDArray[np.float64] | None = None,
        classes: tuple[str, ...] | None = None,
    ) -> InferenceResult:
        return InferenceResult(
            rows=np.asarray(rows, dtype=np.int64),
            predictions=predictions,
            scores=scores,
            rejections=rejections,
            release=self.release,
            release_digest=self.release_digest,
            n_rows=n_rows,
            stages_ns=stages_ns,
            probabilities=probabilities,
            classes=classes,
        )


def _concat(outputs: list[ModelOutput]) -> ModelOutput:
    """Join the outputs of consecutive slices of one batch."""
    if len(outputs) == 1:
        return outputs[0]
    predictions = np.concatenate([np.asarray(o.predictions) for o in outputs])
    probabilities = None
    if all(o.probabilities is not None for o in outputs):
        probabilities = np.concatenate([np.asarray(o.probabilities) for o in outputs])
    return ModelOutput(
        predictions=predictions, probabilities=probabilities, classes=outputs[0].classes
    )


def _model_reason(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > _MAX_REASON_CHARS:
        message = message[: _MAX_REASON_CHARS - 3] + "..."
    return f"Model raised {type(exc).__name__}: {message}"
