"""Keeping secrets out of messages and logs.

Every error message and log line that names a service URL goes through `redact_url`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """`url` with its password, or a bare token in the user part, replaced by ``***``.

    >>> redact_url("postgresql://app:hunter2@db:5432/registry")
    'postgresql://app:***@db:5432/registry'
    >>> redact_url("nats://s3cr3t-token@127.0.0.1:4222")
    'nats://***@127.0.0.1:4222'
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # unparsable (a bad port): hide the whole user part to be safe
        return re.sub(r"//[^/@]*@", "//***@", url, count=1)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = "***" if parts.password is None else f"{parts.username}:***"
    netloc = f"{user}@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
