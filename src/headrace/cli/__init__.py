"""The command-line interface: ``headrace …``. Nothing imports it; it imports anything."""

from __future__ import annotations

from headrace.cli.main import app, main

__all__ = ["app", "main"]
