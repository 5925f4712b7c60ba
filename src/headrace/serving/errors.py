"""The errors of the inference protocol, each carrying the status the protocol answers with.

::

    HeadraceError
    └── ProtocolError                 a request the server answers with an error (status)
        ├── InvalidInputError            400: the request's body or tensors are malformed
        ├── UnauthorizedError            401: a bearer token is missing or wrong
        ├── NotFoundError                404: no such route, model or version
        ├── RequestTimeoutError          408: the body did not arrive in time
        ├── PayloadTooLargeError         413: the body is past the configured limit
        ├── InferenceFailedError         500: the model raised on the request's rows
        ├── OverloadedError              503: the model's queue is full (retry_after)
        └── InferenceTimeoutError        504: the answer took longer than the timeout

`status` is the HTTP status the Open Inference Protocol prescribes; the gRPC transport maps
the same statuses to its codes. Errors raised by other parts (the repository's
`UnknownModelError` and `ModelUnavailableError`, a `ModelError`) are mapped by
`status_of`, the one table both transports share.
"""

from __future__ import annotations

from typing import ClassVar

from headrace.errors import (
    ConfigError,
    HeadraceError,
    ModelError,
    ModelUnavailableError,
    RegistryUnavailableError,
    ReleaseNotFoundError,
    SchemaError,
    UnknownModelError,
    ValidationError,
)

__all__ = [
    "InferenceFailedError",
    "InferenceTimeoutError",
    "InvalidInputError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RequestTimeoutError",
    "UnauthorizedError",
    "status_of",
]


class ProtocolError(HeadraceError):
    """A request the server answers with ``{"error": message}`` and `status`."""

    status: ClassVar[int] = 500


class InvalidInputError(ProtocolError):
    """The request body or one of its tensors is malformed (wrong datatype, shape, name)."""

    status = 400


class UnauthorizedError(ProtocolError):
    """The request lacks the bearer token its route needs, or carries a wrong one."""

    status = 401


class NotFoundError(ProtocolError, LookupError):
    """No route, model or version matches the request."""

    status = 404


class RequestTimeoutError(ProtocolError):
    """The request's body did not arrive within ``connections.body_timeout_s``."""

    status = 408


class PayloadTooLargeError(ProtocolError):
    """The request body is larger than the server's ``max_body_bytes``."""

    status = 413


class InferenceFailedError(ProtocolError):
    """The model raised on some of the request's rows (the server keeps serving)."""

    status = 500


class OverloadedError(ProtocolError):
    """The model's queue is full: retry after `retry_after` seconds.

    Parameters
    ----------
    message
        What is full and how to get through.
    retry_after
        Whole seconds a client should wait before retrying (the ``Retry-After`` header).
    """

    status = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class InferenceTimeoutError(ProtocolError):
    """The request waited and ran longer than the per-request timeout."""

    status = 504


# Errors of other parts, most specific first: the first class that matches wins.
_FOREIGN_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownModelError, 404),
    (ReleaseNotFoundError, 404),
    (ModelUnavailableError, 503),
    (ValidationError, 400),
    (RegistryUnavailableError, 503),
    (ModelError, 500),
    (SchemaError, 500),
    (ConfigError, 500),
)


def status_of(exc: BaseException) -> int:
    """The protocol status for any error: a `ProtocolError`'s own, else the table's.

    An error of another part that the table does not list (or one that is not a
    `HeadraceError` at all) is a bug on the server's side: 500. A class may declare its
    own integer `status` (the model repository's errors do) and it is used.
    """
    if isinstance(exc, ProtocolError):
        return exc.status
    declared = getattr(type(exc), "status", None)
    if isinstance(declared, int) and 400 <= declared <= 599:
        return declared
    for kind, status in _FOREIGN_STATUS:
        if isinstance(exc, kind):
            return status
    return 500
