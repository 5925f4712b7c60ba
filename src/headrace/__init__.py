"""headrace: streaming inference and model operations.

A release (model, schema, features, config, data fingerprint, reference profile, metrics)
is registered once, content-addressed, and then scored in batch, served over HTTP or run
against a live stream, always through the same inference core.

From Python, `register` records a live model object and `load` gives a `Predictor` for
a release (they live in `headrace.api`, imported on first use so that ``import headrace``
and ``headrace --help`` stay light). A program embedding headrace calls
`install_log_redaction` once to keep registry and broker passwords out of its logs (the
CLI does it for itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headrace._redact import install_log_redaction
    from headrace.api import Predictor, load, register

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__", "install_log_redaction", "load", "register"]

_API = frozenset({"Predictor", "load", "register"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from headrace import api

        return getattr(api, name)
    if name == "install_log_redaction":
        from headrace._redact import install_log_redaction

        return install_log_redaction
    raise AttributeError(f"module 'headrace' has no attribute {name!r}")
