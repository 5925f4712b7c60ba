"""Keeping secrets out of messages and logs: one redaction, used wherever a URL is shown.

A URL is shown through `redact_url`; free text that may quote URLs or config values (an
error message from a client library, a log line, a doctor report) through `redact_text`.
Both also remember the secrets they meet, so a password a library echoes later *without*
its URL around it (``Invalid bucket name "AKIA:s3cr3t@bucket"``) is masked too.

Parsing is deliberately not `urllib`: a password holding ``/``, ``?``, ``#`` or ``@``
(``postgresql://u:S3cr3t/Pw@db/x``) splits wrongly there and comes out whole. Here the
user part runs from ``://`` to the *last* ``@``, so a stray ``@`` further on hides more
than needed, never less.
"""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["install_log_redaction", "note_secret", "redact_text", "redact_url", "show_value"]

MASK = "***"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# A URL inside free text: up to whitespace or a quote that delimits it in a message.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"`<>]+")
# ``user:password@host`` without a scheme (a URL missing its ``kafka://``).
_USERINFO_IN_TEXT = re.compile(r"(?<![\w@:])([\w.\-~%]*):([^\s'\"`<>/@]+)@(?=[\w\[])")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[\w.\-]*(?:pass|pwd|secret|token|key|credential|auth|sig)[\w.\-]*)=)"
    r"([^&;#\s'\"`]*)"
)
_NO_USERINFO = frozenset({"file", "memory"})  # paths, where an "@" is just a character

_lock = threading.Lock()
_known: set[str] = set()
_MIN_SECRET = 4  # shorter "secrets" would mask ordinary words


def note_secret(secret: str | None) -> None:
    """Remember `secret` so that `redact_text` masks it wherever it appears later."""
    if secret and len(secret) >= _MIN_SECRET:
        with _lock:
            _known.add(secret)


def redact_url(url: str, *, _in_text: bool = False) -> str:
    """`url` with its password (or bare token) and secret query values replaced by ``***``.

    >>> redact_url("postgresql://app:hunter2@db:5432/registry")
    'postgresql://app:***@db:5432/registry'
    >>> redact_url("nats://s3cr3t-token@127.0.0.1:4222")
    'nats://***@127.0.0.1:4222'
    >>> redact_url("postgresql://u:S3cr3t/Pw@db/x")
    'postgresql://u:***@db/x'
    """
    match = _SCHEME.match(url)
    if match is None:
        return _mask_bare_userinfo(url)
    scheme, rest = match.group(1), url[match.end() :]
    if scheme.lower() not in _NO_USERINFO and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon:
            note_secret(password)
            shown_user = "" if _looks_secret(user) else user
            rest = f"{shown_user}:{MASK}@{after}"
        elif not (_in_text and userinfo.isalpha() and len(userinfo) <= 12):
            # A bare token in the user part (nats://TOKEN@host), or a user name: hidden
            # in the URL either way. Remembered only when it looks like a token, so a
            # user called "headrace" does not mask the word everywhere. In free text a
            # short word is a placeholder (``postgresql://user@host/db`` in a hint), kept.
            if _looks_secret(userinfo):
                note_secret(userinfo)
            rest = f"{MASK}@{after}"
    return f"{scheme}://{_mask_params(rest)}"


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted and every remembered secret masked."""
    # Remembered secrets first: a pattern below may cut one short (at an "@" in it) and
    # leave its tail in view.
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0), _in_text=True), text)
    return _mask_bare_userinfo(text)


def show_value(value: object, *, limit: int = 60) -> str:
    """`value` as it may appear in a one-line message: redacted, escaped, at most `limit`.

    Config values quoted in errors go through here: a value in the wrong field may be
    a secret, a newline in it would break the message into lines, and a megabyte of it
    would bury the message.
    """
    text = redact_text(value if isinstance(value, str) else repr(value))
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def install_log_redaction() -> None:
    """Redact every log record of this process (message and arguments) as it is made.

    A record factory, not a handler filter: it covers every logger and handler,
    uvicorn's and the last-resort stderr handler included. Installed once by the CLI.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "_headrace_redacting", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's to report
            return record
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatted once here (handlers reuse exc_text): a traceback quotes URLs too.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record

    factory._headrace_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _mask_bare_userinfo(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        note_secret(match.group(2))
        return f"{match.group(1)}:{MASK}@"

    return _USERINFO_IN_TEXT.sub(mask, text)


def _mask_params(rest: str) -> str:
    def mask(match: re.Match[str]) -> str:
        note_secret(match.group(2))
        return match.group(1) + MASK

    return _SECRET_PARAM.sub(mask, rest)


def _looks_secret(user: str) -> bool:
    """An access key id or a random token, not a name: long, and not only letters."""
    return len(user) >= 12 and not user.replace("_", "").replace("-", "").isalpha()
