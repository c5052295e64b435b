"""A step scan's point deadline without a thread per point: one thread per stage waits for the
point in flight and calls its ``on_late`` once the deadline passes, unless the point settled
first. (``threading.Timer`` starts a thread at every point: 0.17 ms each, on the hot path.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class PointWatchdog:
    """Deadlines of one point at a time, kept by one thread that ``stop`` ends."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._condition = threading.Condition()
        self._due: tuple[float, Callable[[], None]] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, seconds: float, on_late: Callable[[], None]) -> None:
        """Call ``on_late`` (on the watchdog's thread) in ``seconds``, unless ``cancel`` comes
        first; replaces any deadline still pending."""
        with self._condition:
            self._due = (time.monotonic() + seconds, on_late)
            self._stopping = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name=f"{self._name} point watchdog")
                self._thread.start()
            self._condition.notify()

    def cancel(self) -> None:
        """The point settled: its ``on_late`` will not be called (unless already under way)."""
        with self._condition:
            self._due = None
            self._condition.notify()

    def stop(self) -> None:
        """End the thread once no deadline is pending (the stage is over); ``start`` makes a new
        one."""
        with self._condition:
            self._due = None
            self._stopping = True
            self._condition.notify()

    def _watch(self) -> None:
        while True:
            with self._condition:
                while self._due is None:
                    if self._stopping:
                        self._thread = None
                        return
                    self._condition.wait()
                deadline, on_late = self._due
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue
                self._due = None
            try:
                on_late()
            except Exception:  # the thread must outlive one point's failing report
                logger.exception("%s: the late point's handler failed", self._name)
