"""Keeping features_library.pth current on a server without an O(N) write per upload."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..errors import LibraryError

__all__ = ["Flusher"]

log = logging.getLogger(__name__)


class Flusher:
    """Keeps features_library.pth current without an O(N) write per upload: each poke
    schedules one background flush, at most one per max(MIN_GAP, 10 x the last flush's
    duration), so a small library is current within seconds and a 1M one is not rewritten
    more than a tenth of the time."""
    MIN_GAP = 2.0   # seconds

    def __init__(self, flush: Callable[[], None]):
        self._flush, self._lock = flush, threading.Lock()
        self._timer: threading.Timer | None = None
        self._next = 0.0                # no flush starts before this (monotonic seconds)
        self._running = self._again = False

    def poke(self) -> None:
        with self._lock:
            if self._running:            # a write during a flush: one more flush after it, throttled
                self._again = True
            elif self._timer is None:
                self._schedule()

    def _schedule(self) -> None:
        self._timer = threading.Timer(max(0.0, self._next - time.monotonic()), self._run)
        self._timer.daemon = True
        self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer, self._running, self._again = None, True, False
        start = time.monotonic()
        try:
            self._flush()
        except (OSError, LibraryError) as e:   # e.g. disk full: the journal still holds every add
            log.warning("could not rewrite features_library.pth: %s", e)
        with self._lock:
            self._next = time.monotonic() + max(self.MIN_GAP, 10 * (time.monotonic() - start))
            self._running = False
            if self._again:
                self._schedule()

    def close(self) -> None:
        """Cancel what is pending and flush now (on shutdown)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._flush()
