"""Scoring a batch file: `score_file` runs the inference core over a whole file.

The input is read a chunk at a time (`iter_input_chunks`); each chunk goes through
`InferenceService.infer`, its predictions to the output and its rejected rows, whether
they failed to decode, validate or predict, to the rejects (`OutputWriter`). Row numbers
are the input's 0-based data rows, and every row read ends up either in the output or in
the rejects (``predicted + rejected == rows``).
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
from headrace.inference.service import InferenceService
from headrace.inference.validate import Rejection
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


def _prediction_columns(*, scores: bool) -> list[str]:
    """The output's columns; ``score`` only for a model that gives scores."""
    return ["row", "prediction", *(["score"] if scores else []), "release", "release_digest"]


def _reject_rows(rejections: Sequence[Rejection]) -> dict[str, Any]:
    """Rejections as the rejects file's columns (`REJECT_COLUMNS`)."""
    return {
        "row": np.asarray([r.row for r in rejections], dtype=np.int64),
        "stage": np.asarray([r.stage for r in rejections], dtype=object),
        "field": np.asarray([r.field for r in rejections], dtype=object),
        "reason": np.asarray([r.reason for r in rejections], dtype=object),
    }


def score_file(
    service: InferenceService,
    *,
    input_path: Path,
    output_path: Path,
    rejects_path: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    chunk_rows: int = 65536,
) -> BatchSummary:
    """Score a batch file through `service`, writing predictions and rejects.

    Output rows are ``row`` (the input's 0-based data row), ``prediction``, ``score``
    (only when the model gives scores), ``release`` and ``release_digest``. Reject rows are
    ``row``, ``stage``, ``field`` and ``reason``. Both files appear only once the whole
    input was scored.

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

    Returns
    -------
    BatchSummary
        The counts and timing; ``predicted + rejected == rows``.

    Raises
    ------
    InputFileError
        When the input cannot be read, or lacks a column the schema requires.
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

    schema = service.schema
    rejects = (
        OutputWriter(rejects_path, columns=REJECT_COLUMNS, what="rejects")
        if rejects_path is not None
        else None
    )
    predictions: OutputWriter | None = None
    read = predicted = rejected = 0
    by_stage: dict[str, int] = {}
    first_rejections: list[Rejection] = []
    checked = False
    try:
        for chunk in iter_input_chunks(input_path, chunk_rows=chunk_rows, columns=schema.names):
            if not checked and chunk.n_rows:
                _require_columns(schema, chunk, input_path)
                checked = True
            result = service.infer(
                chunk.columns, n_rows=chunk.n_rows, coerce_strings=chunk.coerce_strings
            )
            if result.n_predicted:
                if predictions is None:
                    predictions = OutputWriter(
                        output_path,
                        columns=_prediction_columns(scores=result.scores is not None),
                        what="predictions",
                    )
                n = result.n_predicted
                out: dict[str, Any] = {
                    "row": chunk.file_rows(result.rows),
                    "prediction": result.predictions,
                    "release": np.full(n, result.release, dtype=object),
                    "release_digest": np.full(n, result.release_digest, dtype=object),
                }
                if "score" in predictions.columns:
                    out["score"] = (
                        result.scores if result.scores is not None else np.full(n, np.nan)
                    )
                predictions.write(out)
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
                if rejects is not None:
                    rejects.write(_reject_rows(chunk_rejections))
            read += chunk.n_read
            predicted += result.n_predicted
            rejected += len(chunk_rejections)
            if progress is not None:
                progress(read, None if total is None else max(total, read))
        if predictions is None:
            predictions = OutputWriter(
                output_path, columns=_prediction_columns(scores=False), what="predictions"
            )
        predictions.close()
        if rejects is not None:
            rejects.close()
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
        rejects_path=None if rejects_path is None else str(rejects_path),
        rejected_by_stage=by_stage,
        first_rejections=first_rejections,
    )
