"""Bearer tokens as both transports read them (RFC 6750 over RFC 7235's syntax).

The scheme name is case-insensitive (RFC 7235 section 2.1): ``bearer``, ``Bearer`` and
``BEARER`` all name it, as curl users, proxies and client libraries variously write it.
The token itself is compared in constant time, and never logged nor echoed.
"""

from __future__ import annotations

import hmac

__all__ = ["bearer_token", "token_matches"]


def bearer_token(header: bytes | str | None) -> bytes | None:
    """The token of an ``Authorization`` value, or None when it is not a bearer one.

    Parameters
    ----------
    header
        The header's (or gRPC metadata's) value as sent, or None when absent.
    """
    if header is None:
        return None
    raw = header.encode("utf-8", "replace") if isinstance(header, str) else bytes(header)
    scheme, _, token = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip(b" \t")


def token_matches(header: bytes | str | None, expected: bytes) -> bool:
    """Whether `header` carries the bearer token `expected` (a constant-time compare)."""
    token = bearer_token(header)
    return token is not None and hmac.compare_digest(token, expected)
