"""``python -m headrace`` runs the CLI."""

from __future__ import annotations

from headrace.cli.main import main

main()
