"""Headers and keys on NATS: escaped so that any ``(str, bytes)`` pair round-trips."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote, unquote

__all__ = ["KEY_HEADER"]

log = logging.getLogger("headrace.streams.nats")

KEY_HEADER = "Headrace-Key"
"""The header that carries `Message.key` / `OutRecord.key` (option ``key_header``)."""

_B64 = "b64:"
_TOKEN = re.compile(r"[!#$&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 tchar, without "%"
_TCHARS_QUOTED = "!#$&'*+^`|"  # tchars `quote` would otherwise escape


def _encode_headers(
    headers: Sequence[tuple[str, bytes]], *, key: bytes | None, key_header: str, where: str
) -> dict[str, str] | None:
    """NATS headers for a record (see the module docstring for the escaping)."""
    if key is None and not headers:
        return None
    out: dict[str, str] = {}
    if key is not None:
        out[key_header] = _encode_value(key)
    for name, value in headers:
        wire = name if _TOKEN.fullmatch(name) else quote(name, safe=_TCHARS_QUOTED)
        if wire in out:
            log.warning(
                "%s: header '%s' appears more than once (or is the key header); NATS keeps "
                "one value per name, the last one",
                where,
                name,
            )
        out[wire] = _encode_value(value)
    return out


def _decode_headers(
    headers: Mapping[str, str] | None, *, key_header: str
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The key and the ``(name, value)`` headers of a received message."""
    if not headers:
        return None, []
    key: bytes | None = None
    out: list[tuple[str, bytes]] = []
    for wire, text in headers.items():
        if wire == key_header:
            key = _decode_value(text)
        else:
            out.append((unquote(wire) if "%" in wire else wire, _decode_value(text)))
    return key, out


def _encode_value(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # ASCII only: nats-py before 2.11 or so parses headers as e-mail headers and drops
    # every header of a message with a non-ASCII value.
    if (
        text is not None
        and text.isascii()
        and text.isprintable()
        and text == text.strip()
        and not text.startswith(_B64)
    ):
        return text
    return _B64 + base64.b64encode(value).decode("ascii")


def _decode_value(text: str) -> bytes:
    if text.startswith(_B64):
        try:
            return base64.b64decode(text[len(_B64) :], validate=True)
        except (binascii.Error, ValueError):
            pass  # not ours: a foreign value that merely starts with "b64:"
    return text.encode("utf-8")
