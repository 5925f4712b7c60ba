"""One status table for every error a transport may meet."""

from __future__ import annotations

import pytest

from headrace.errors import (
    ConfigError,
    HeadraceError,
    ModelError,
    ModelUnavailableError,
    RegistryUnavailableError,
    ReleaseNotFoundError,
    UnknownModelError,
    ValidationError,
)
from headrace.serving.errors import (
    InferenceFailedError,
    InferenceTimeoutError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
    status_of,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInputError("x"), 400),
        (UnauthorizedError("x"), 401),
        (NotFoundError("x"), 404),
        (PayloadTooLargeError("x"), 413),
        (InferenceFailedError("x"), 500),
        (OverloadedError("x", retry_after=3), 503),
        (InferenceTimeoutError("x"), 504),
        (UnknownModelError("x"), 404),
        (ReleaseNotFoundError("x"), 404),
        (ModelUnavailableError("x"), 503),
        (RegistryUnavailableError("x"), 503),
        (ValidationError("x"), 400),
        (ModelError("x"), 500),
        (ConfigError("x"), 500),
        (HeadraceError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_status_of(error: BaseException, status: int) -> None:
    assert status_of(error) == status


def test_a_declared_status_is_used_and_a_bogus_one_ignored() -> None:
    class TeapotError(HeadraceError):
        status = 418

    class BogusError(HeadraceError):
        status = "nope"

    assert status_of(TeapotError("x")) == 418
    assert status_of(BogusError("x")) == 500
