"""Printing: JSON for machines (``--json``), aligned plain values for people.

People read values, not Python reprs: `human` turns None, floats, lists and mappings into
short text (``-``, ``0.93``, ``legit, fraud``, ``min=0``), and `print_aligned` lines
columns up without wrapping, on a terminal or in a pipe.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["human", "print_aligned", "print_json", "print_table"]

_HASH_CHARS: Final = 12
"""Hex digests are shortened to this many characters for people (``--json`` has them whole)."""


def _looks_like_digest(text: str) -> bool:
    return len(text) >= 40 and all(c in "0123456789abcdef" for c in text)


def human(value: Any, *, nested: bool = False) -> str:
    """A value as a person reads it: ``-`` for None, ``%g`` floats, ``a, b`` lists,
    ``k=v`` mappings (None entries left out), hex digests shortened."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value[:_HASH_CHARS] if _looks_like_digest(value) else value
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}={human(v, nested=True)}" for k, v in value.items() if v is not None)
        return f"{{{inner}}}" if nested else (inner or "-")
    if isinstance(value, Sequence):
        inner = ", ".join(human(v, nested=True) for v in value)
        return f"[{inner}]" if nested else (inner or "-")
    return str(value)


def print_aligned(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows of text under a header, each column as wide as its widest cell; never wrapped
    (the last column runs on), so a pipe and ``grep`` see one line per row."""
    cells = [[str(c) for c in columns], *([human(c) for c in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns) - 1)]
    out = sys.stdout
    for line in cells:
        head = "".join(f"{cell:<{w}}  " for cell, w in zip(line, widths, strict=False))
        out.write((head + line[-1]).rstrip() + "\n")


def print_json(value: Any) -> None:
    """Write `value` as indented JSON to stdout (msgspec handles Structs and dataclasses)."""
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; aligned plain text (`print_aligned`) in a pipe, where
    rich would wrap cells at 80 columns."""
    if not sys.stdout.isatty():
        print_aligned(columns, rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else human(cell) for cell in row))
    Console(soft_wrap=True).print(table)
