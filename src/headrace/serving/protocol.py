"""uvicorn's httptools connection, with the limits it lacks: a header deadline and size.

uvicorn's httptools protocol arms a timer only between requests (keep-alive): a client
that opens a connection and sends its headers a byte a minute, or 200 MB of headers,
holds a socket (and the memory) for as long as it likes. This subclass gives every
request's line and headers `header_timeout_s` from the moment the server waits for them
(connection open, or the previous response sent) and `max_header_bytes` of room; past
either the client gets 408 or 431 and the connection is closed. The body's deadline is
the application's (`InferenceApp` reads bodies under ``connections.body_timeout_s``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ["guarded_httptools_protocol"]

_REASONS: Final = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def guarded_httptools_protocol(*, header_timeout_s: float, max_header_bytes: int) -> type[Any]:
    """uvicorn's ``HttpToolsProtocol`` with a header deadline and a header size limit.

    Pass the class as ``uvicorn.Config(http=...)``.

    Parameters
    ----------
    header_timeout_s
        Seconds a request's line and headers may take to arrive.
    max_header_bytes
        Bytes the request line and headers may take.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes = 0
            self._awaiting_headers = True
            self._header_timer: asyncio.TimerHandle | None = None

        # -- the deadline: armed while the server waits for a request's headers --------

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._awaiting_headers = True
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self._header_bytes == 0:
                self.transport.close()  # an idle connection: nothing to answer
            else:
                self._refuse(408, "Request headers did not arrive in time.")

        def _refuse(self, status: int, message: str) -> None:
            self._cancel_header_timer()
            self._awaiting_headers = False
            body = message.encode("ascii")
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
            self.transport.close()

        # -- uvicorn's hooks --------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # Bytes still finishing the previous request's body (answered before it was
            # read) are not headers; the deadline alone bounds them.
            if self._awaiting_headers and (self.cycle is None or not self.cycle.more_body):
                self._header_bytes += len(data)
            super().data_received(data)
            # Still in the headers after this chunk and past the limit: refuse. (A chunk
            # that ends the headers is not counted: its tail is body.)
            if (
                self._awaiting_headers
                and self._header_bytes > max_header_bytes
                and not self.transport.is_closing()
            ):
                self._refuse(431, "Request line and headers are too large.")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # A pipelined request begins without a response before it: start its clock.
            self._awaiting_headers = True
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            self._awaiting_headers = False
            self._header_bytes = 0
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self.pipeline:
                self._arm_header_timer()

    return GuardedHttpToolsProtocol
