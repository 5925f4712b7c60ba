"""Monitoring: metrics, traces, drift detection, payload samples and live accuracy.

Used by the stream worker and the server; depends only on the release, registry and
audit parts below it, so both transports can share it.
"""

__all__: list[str] = []
