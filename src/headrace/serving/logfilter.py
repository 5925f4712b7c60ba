"""A log filter that lets a repeated message through a few times a minute, then counts it.

Why: a client can make the server log on every request (a model that raises on its rows,
a malformed HTTP request uvicorn warns about). At 800 requests a second that grew a log
by 48 MB in 40 s; the metrics already count every request, so the log needs only
enough lines to show what happens, and how often.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

__all__ = ["RateLimitFilter", "rate_limit"]

_MAX_KEYS: Final = 1024  # message templates are the code's, but stay bounded anyway


class RateLimitFilter(logging.Filter):
    """Let at most `burst` records of one message template through per `interval_s`.

    Records are grouped by logger, level and unformatted message (``"request failed:
    %s"``, whatever its arguments). The first record let through after a quiet spell
    says how many of its kind were dropped.

    Parameters
    ----------
    burst
        Records of one kind let through per interval.
    interval_s
        The interval, in seconds.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        # key -> [window start, records let through in it, records dropped since]
        self._windows: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is logged (it may be reworded to count the dropped ones)."""
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= _MAX_KEYS:
                self._windows.clear()
            window = self._windows[key] = [now, 0.0, 0.0]
        elif now - window[0] >= self.interval_s:
            window[0], window[1] = now, 0.0
        if window[1] >= self.burst:
            window[2] += 1
            return False
        window[1] += 1
        dropped = int(window[2])
        if dropped:
            window[2] = 0.0
            record.msg = f"{record.getMessage()} ({dropped} more like this were not logged)"
            record.args = ()
        return True


def rate_limit(*loggers: logging.Logger, burst: int = 10, interval_s: float = 60.0) -> None:
    """Put one `RateLimitFilter` on each logger that has none yet (idempotent)."""
    for logger in loggers:
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter(burst=burst, interval_s=interval_s))
