"""Logging that cannot flood: one line per kind of event per interval, with a count."""

from __future__ import annotations

import logging
import threading
import time

LOGGER = logging.getLogger("tal.service")


class RateLimitedLog:
    """Logs a warning for ``kind`` at most once per ``interval`` seconds.

    Suppressed occurrences are counted and reported with the next line that gets through.
    """

    def __init__(self, interval: float, logger: logging.Logger = LOGGER) -> None:
        self.interval = interval
        self.logger = logger
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str) -> bool:
        """Returns True when the line was written."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        extra = f" ({suppressed} similar suppressed)" if suppressed else ""
        self.logger.warning("%s%s", message, extra)
        return True
