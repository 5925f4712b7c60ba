"""`InputChunk`: the rows every batch-file reader yields, with their file row numbers.

Row numbers are 0-based data rows of the file (see `headrace.inference.readers`). A chunk
carries both the decoded rows, as columns ready for `InferenceService.infer`, and the rows
of the same stretch of file that could not be decoded, as rejections at stage ``decode``:
together they account for every row read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from headrace.inference.validate import Rejection
from headrace.types import Array

__all__ = ["InputChunk"]


@dataclass(frozen=True, slots=True)
class InputChunk:
    """A chunk of rows read from a batch file.

    Attributes
    ----------
    columns
        Field name -> column of `n_rows` values, ready for `InferenceService.infer`.
    n_rows
        The number of rows in `columns`.
    first_row
        The file row number of the chunk's first row (decoded or not).
    coerce_strings
        True when every value is text (CSV): pass it on to `infer`.
    row_numbers
        The file row number of each row of `columns`, when they are not simply
        ``first_row, first_row + 1, ...`` (rows that failed to decode leave gaps).
    rejections
        Rows of this chunk that could not be decoded (stage ``decode``), with file row
        numbers; they are not in `columns`.
    """

    columns: dict[str, Array]
    n_rows: int
    first_row: int
    coerce_strings: bool
    row_numbers: npt.NDArray[np.int64] | None = None
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def n_read(self) -> int:
        """Rows read from the file for this chunk: decoded plus rejected at decode."""
        return self.n_rows + len(self.rejections)

    def file_rows(self, positions: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Map row positions within `columns` to file row numbers."""
        idx = np.asarray(positions, dtype=np.int64)
        if self.row_numbers is None:
            return idx + self.first_row
        return self.row_numbers[idx]


def _numbered_chunk(
    columns: dict[str, Array],
    rows: npt.NDArray[np.int64],
    rejections: list[Rejection],
    *,
    coerce_strings: bool,
) -> InputChunk:
    """A chunk whose decoded rows carry explicit file row numbers (`rows`, one per row)."""
    first = min([*rows[:1].tolist(), *(r.row for r in rejections)], default=0)
    return InputChunk(
        columns=columns,
        n_rows=len(rows),
        first_row=first,
        coerce_strings=coerce_strings,
        row_numbers=rows,
        rejections=rejections,
    )


def _decode_rejection(row: int, reason: str) -> Rejection:
    """A row of the file that could not be decoded into a record."""
    return Rejection(row=row, field=None, reason=reason, stage="decode")


def _select_names(present: Sequence[str], only: Sequence[str] | None) -> list[str]:
    """The names of `present` to read: those also in `only` (all when None), in file order."""
    if only is None:
        return list(present)
    wanted = set(only)
    return [name for name in present if name in wanted]
