"""headrace: streaming inference and model operations.

A release (model, schema, features, config, data fingerprint, reference profile, metrics)
is registered once, content-addressed, and then scored in batch, served over HTTP or run
against a live stream, always through the same inference core.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
