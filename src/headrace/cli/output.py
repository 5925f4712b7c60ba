"""Printing: JSON for machines (``--json``), rich tables for people."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["print_json", "print_table"]


def print_json(value: Any) -> None:
    """Write `value` as indented JSON to stdout (msgspec handles Structs and dataclasses)."""
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout; plain when stdout is not a terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(soft_wrap=True).print(table)
