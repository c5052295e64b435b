"""When a step-scan point of a detector armed for the whole stage is done: every counter that
follows its frames (``HDF1:NumCaptured_RBV``, each enabled plugin's ``ArrayCounter_RBV``) has
reached the point's target. Read from monitors, so waiting for a point costs no round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ophyd import Signal

ARMED_TRIGGERS = 100_000  # manual triggers of an arm that takes a stage's points; then it re-arms


class CounterTargets:
    """Counters of frames, each from its value at stage; ``on_reached`` is called once (on
    Channel Access' callback thread) when all of them hold the frames ``expect`` asked for."""

    def __init__(self, on_reached: Callable[[], None]) -> None:
        self._on_reached = on_reached
        self._lock = threading.Lock()
        self._base: dict[Signal, int] = {}
        self._latest: dict[Signal, int] = {}
        self._frames: int | None = None  # the frames the point in flight completes

    def watch(self, signal: Signal) -> None:
        """Follow ``signal``, counting from its value now (read from the IOC, not a monitor)."""
        value = int(signal.get(use_monitor=False))
        with self._lock:
            self._base[signal] = self._latest[signal] = value
        signal.subscribe(self._changed, run=False)

    def expect(self, frames: int) -> None:
        """The point in flight is done once every counter moved ``frames`` past its base."""
        with self._lock:
            self._frames = frames
        self._check()

    def shortfalls(self) -> list[str]:
        """Each counter short of the point's target, as ``PV at N, not M``."""
        with self._lock:
            frames = self._frames or 0
            return [f"{sig.pvname} at {self._latest[sig]}, not {base + frames}"
                    for sig, base in self._base.items() if self._latest[sig] < base + frames]

    def clear(self) -> None:
        """Stop following every counter."""
        with self._lock:
            signals, self._base, self._latest, self._frames = list(self._base), {}, {}, None
        for signal in signals:
            signal.clear_sub(self._changed)

    def _changed(self, *, value: Any, obj: Signal, **kwargs: Any) -> None:
        with self._lock:
            if obj in self._latest:
                self._latest[obj] = int(value)
        self._check()

    def _check(self) -> None:
        with self._lock:
            frames = self._frames
            if frames is None or any(self._latest[sig] < base + frames
                                     for sig, base in self._base.items()):
                return
            self._frames = None  # once per point
        self._on_reached()
