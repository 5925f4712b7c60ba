"""Scoring a batch file: `score_file` runs the inference core over a whole file.

The input is read a chunk at a time (`iter_input_chunks`); each chunk goes through
`InferenceService.infer`, its predictions to the output and its rejected rows, whether
they failed to decode, validate or predict, to the rejects (`OutputWriter`). Row numbers
are the input's 0-based data rows, and every row read ends up either in the output or in
the rejects (``predicted + rejected == rows``). The rejects file exists only when a row
was rejected: an empty one would read as "look here" for nothing.

``keep`` columns (an id, pass-through values) are read beside the schema's fields and
written, as read, into the output next to ``row``; a classifier's per-class
probabilities become ``proba_<class>`` columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from headrace.errors import ConfigError, InputFileError
from headrace.inference.chunk import InputChunk
from headrace.inference.readers import _check_input_file, _input_format, iter_input_chunks
from headrace.inference.service import InferenceResult, InferenceService
from headrace.inference.validate import MISSING, Rejection
from headrace.inference.writers import OutputWriter, _output_format
from headrace.release.schema import Schema

__all__ = ["BatchSummary", "score_file"]

_SAMPLE_BYTES: Final = 1 << 20
REJECT_COLUMNS: Final = ("row", "stage", "field", "reason")


class BatchSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What `score_file` did.

    Parameters
    ----------
    rows
        Data rows read from the input (``predicted + rejected``).
    predicted
        Rows written to the output.
    rejected
        Rows written to the rejects (or only counted, without a rejects file).
    seconds
        Wall time.
    output_path, rejects_path
        Where predictions and rejects went.
    rejected_by_stage
        Rejected rows per stage (``decode``, ``validate``, ``predict``).
    first_rejections
        The first few rejections, to show without opening the rejects file.
    """

    rows: int
    predicted: int
    rejected: int
    seconds: float
    output_path: str
    rejects_path: str | None
    rejected_by_stage: dict[str, int]
    first_rejections: list[Rejection]

    @property
    def rows_per_second(self) -> float:
        """Throughput over the whole run."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _estimate_rows(path: Path, fmt: str, size: int) -> int | None:
    """The exact row count for Parquet, an estimate from a sample's lines for text."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            rows: int = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # the reader will say what is wrong
            return None
        return rows
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE_BYTES)
    if not sample:
        return None
    lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") else 1)
    if size > len(sample):
        lines = round(lines * size / len(sample))
    return max(lines - (1 if fmt == "csv" else 0), 0)


def _require_columns(schema: Schema, chunk: InputChunk, path: Path) -> None:
    missing = [f.name for f in schema.fields if f.required and f.name not in chunk.columns]
    if missing:
        raise InputFileError(
            f"Input file '{path}' has no column {', '.join(repr(m) for m in missing)}, required "
            f"by the schema: add it (the schema's fields are {', '.join(schema.names)})"
        )


_OWN_COLUMNS: Final = ("row", "prediction", "score", "release", "release_digest")


def _prediction_columns(
    *, keep: Sequence[str] = (), scores: bool, classes: Sequence[str] | None = None
) -> list[str]:
    """The output's columns: ``row``, the kept input columns, ``prediction``, ``score``
    and ``proba_<class>`` only for a model that gives them, the release."""
    probas = [f"proba_{c}" for c in classes or ()]
    return [
        "row",
        *keep,
        "prediction",
        *(["score"] if scores else []),
        *probas,
        "release",
        "release_digest",
    ]


def _check_keep(keep: Sequence[str]) -> None:
    clash = [k for k in keep if k in _OWN_COLUMNS or k.startswith("proba_")]
    if clash:
        raise ConfigError(
            f"--keep column {clash[0]!r} has the name of an output column: rename it in the "
            f"input (the output has {', '.join(_OWN_COLUMNS)} and proba_<class>)"
        )
    repeated = sorted({k for k in keep if keep.count(k) > 1})
    if repeated:
        raise ConfigError(f"--keep names {repeated[0]!r} twice: name each column once")


def _require_kept(keep: Sequence[str], chunk: InputChunk, path: Path) -> None:
    """Kept columns must be in the file (JSON lines: in at least one row of the chunk)."""
    absent = [
        k
        for k in keep
        if k not in chunk.columns or all(v is MISSING for v in chunk.columns[k][:10_000])
    ]
    if absent:
        raise InputFileError(
            f"Input file '{path}' has no column {', '.join(repr(a) for a in absent)} to keep: "
            "check the names given to --keep (they are case-sensitive)"
        )


def _kept_values(column: Any, rows: Any) -> Any:
    """A kept column's values at `rows`, nulls (masked, absent keys) as None."""
    if isinstance(column, np.ma.MaskedArray):
        values = np.asarray(column.data, dtype=object)
        values[np.ma.getmaskarray(column)] = None
        return values[rows]
    picked = np.asarray(column)[rows]
    if picked.dtype.kind == "O":
        picked = np.asarray([None if v is MISSING else v for v in picked], dtype=object)
    elif picked.dtype.kind == "M":
        picked = np.asarray([None if np.isnat(v) else str(v) for v in picked], dtype=object)
    return picked


def _reject_rows(rejections: Sequence[Rejection]) -> dict[str, Any]:
    """Rejections as the rejects file's columns (`REJECT_COLUMNS`)."""
    return {
        "row": np.asarray([r.row for r in rejections], dtype=np.int64),
        "stage": np.asarray([r.stage for r in rejections], dtype=object),
        "field": np.asarray([r.field for r in rejections], dtype=object),
        "reason": np.asarray([r.reason for r in rejections], dtype=object),
    }


def _output_rows(
    result: InferenceResult, chunk: InputChunk, keep: Sequence[str], columns: Sequence[str]
) -> dict[str, Any]:
    """One chunk's output columns (`columns`, fixed by the first scored chunk)."""
    n = result.n_predicted
    out: dict[str, Any] = {
        "row": chunk.file_rows(result.rows),
        "prediction": result.predictions,
        "release": np.full(n, result.release, dtype=object),
        "release_digest": np.full(n, result.release_digest, dtype=object),
    }
    for name in keep:
        out[name] = _kept_values(chunk.columns[name], result.rows)
    if "score" in columns:
        out["score"] = result.scores if result.scores is not None else np.full(n, np.nan)
    if result.probabilities is not None and result.classes is not None:
        for j, name in enumerate(result.classes):
            out[f"proba_{name}"] = result.probabilities[:, j]
    for name in columns:
        if name not in out:  # every chunk fills every column the first one fixed
            out[name] = np.full(n, np.nan)
    return out


def score_file(
    service: InferenceService,
    *,
    input_path: Path,
    output_path: Path,
    rejects_path: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    chunk_rows: int = 65536,
    keep: Sequence[str] = (),
) -> BatchSummary:
    """Score a batch file through `service`, writing predictions and rejects.

    Output rows are ``row`` (the input's 0-based data row), the `keep` columns,
    ``prediction``, ``score`` (only when the model gives scores: P(positive class) for a
    binary classifier), ``proba_<class>`` per class (when the model gives probabilities),
    ``release`` and ``release_digest``. Reject rows are ``row``, ``stage``, ``field`` and
    ``reason``. Both files appear only once the whole input was scored, the rejects file
    only when a row was rejected (a file left there by an earlier run is removed, as the
    output would be replaced).

    Parameters
    ----------
    service
        The release's inference service.
    input_path
        The ``.csv``, ``.parquet`` or ``.jsonl`` file to score.
    output_path
        Where predictions go (``.jsonl``, ``.csv`` or ``.parquet``).
    rejects_path
        Where rejected rows go; None only counts them (see `BatchSummary`).
    progress
        Called after each chunk with the rows done so far and the total (exact for
        Parquet, estimated for text files), and once at the end with both equal.
    chunk_rows
        The most rows scored per model call.
    keep
        Input columns copied into the output as they were read (ids, pass-through).

    Returns
    -------
    BatchSummary
        The counts and timing; ``predicted + rejected == rows``.

    Raises
    ------
    InputFileError
        When the input cannot be read, or lacks a column the schema requires or `keep`
        names.
    ConfigError
        When an output path has an unknown extension, is not writable, or is the input.
    ModelError
        When the model breaks its contract (rows that make it raise are rejected instead).
    """
    started = time.perf_counter()
    fmt = _input_format(input_path)
    _output_format(output_path, what="predictions")
    if rejects_path is not None:
        _output_format(rejects_path, what="rejects")
    for target in (output_path, rejects_path):
        if target is not None and target.resolve() == input_path.resolve():
            raise ConfigError(
                f"Output '{target}' is the input file: choose another path so the input is kept"
            )
    if rejects_path is not None and rejects_path.resolve() == output_path.resolve():
        raise ConfigError(f"Predictions and rejects both go to '{output_path}': use two paths")
    size = _check_input_file(input_path)
    total = _estimate_rows(input_path, fmt, size)

    _check_keep(keep)
    schema = service.schema
    wanted = [*schema.names, *(k for k in keep if k not in schema.names)]
    rejects: OutputWriter | None = None
    predictions: OutputWriter | None = None
    read = predicted = rejected = 0
    by_stage: dict[str, int] = {}
    first_rejections: list[Rejection] = []
    checked = False
    try:
        for chunk in iter_input_chunks(input_path, chunk_rows=chunk_rows, columns=wanted):
            if not checked and chunk.n_rows:
                _require_columns(schema, chunk, input_path)
                _require_kept(keep, chunk, input_path)
                checked = True
            inputs = {k: v for k, v in chunk.columns.items() if k in schema.names}
            result = service.infer(inputs, n_rows=chunk.n_rows, coerce_strings=chunk.coerce_strings)
            if result.n_predicted:
                if predictions is None:
                    predictions = OutputWriter(
                        output_path,
                        columns=_prediction_columns(
                            keep=keep, scores=result.scores is not None, classes=result.classes
                        ),
                        what="predictions",
                    )
                predictions.write(_output_rows(result, chunk, keep, predictions.columns))
            chunk_rejections = list(chunk.rejections)
            if result.rejections:
                mapped = chunk.file_rows([r.row for r in result.rejections]).tolist()
                chunk_rejections.extend(
                    msgspec.structs.replace(r, row=row)
                    for r, row in zip(result.rejections, mapped, strict=True)
                )
                chunk_rejections.sort(key=lambda r: r.row)
            if chunk_rejections:
                for r in chunk_rejections:
                    by_stage[r.stage] = by_stage.get(r.stage, 0) + 1
                first_rejections.extend(chunk_rejections[: 10 - len(first_rejections)])
                if rejects_path is not None:
                    if rejects is None:
                        rejects = OutputWriter(rejects_path, columns=REJECT_COLUMNS, what="rejects")
                    rejects.write(_reject_rows(chunk_rejections))
            read += chunk.n_read
            predicted += result.n_predicted
            rejected += len(chunk_rejections)
            if progress is not None:
                progress(read, None if total is None else max(total, read))
        if predictions is None:
            predictions = OutputWriter(
                output_path,
                columns=_prediction_columns(keep=keep, scores=False),
                what="predictions",
            )
        predictions.close()
        if rejects is not None:
            rejects.close()
        elif rejects_path is not None:
            rejects_path.unlink(missing_ok=True)
    except BaseException:
        for writer in (predictions, rejects):
            if writer is not None:
                writer.abort()
        raise
    if progress is not None:
        progress(read, read)
    return BatchSummary(
        rows=read,
        predicted=predicted,
        rejected=rejected,
        seconds=time.perf_counter() - started,
        output_path=str(output_path),
        rejects_path=None if rejects is None else str(rejects_path),
        rejected_by_stage=by_stage,
        first_rejections=first_rejections,
    )
