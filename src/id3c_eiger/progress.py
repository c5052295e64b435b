"""Progress in a terminal: frames written of frames expected, or points done of points planned.

ophyd-async detectors report each acquisition's progress from ``NumCaptured_RBV`` as watcher
updates; bluesky's ``ProgressBarManager`` draws them with tqdm, counting ``frames``. A classic
ophyd detector reports no progress while it waits, so step scans get a bar counting each
point's event (``show_point_progress``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from bluesky import RunEngine
from bluesky.callbacks.core import CallbackBase
from bluesky.utils import ProgressBarManager, TerminalProgressBar
from tqdm import tqdm


class FrameProgressBar(TerminalProgressBar):
    """bluesky's terminal progress bar, counting frames: ``eiger2: 45%|... 900/2000 [00:01<00:01,
    2200.00 frames/s]``."""

    def __init__(self, status_objs: Any) -> None:
        super().__init__(status_objs, delay_draw=0.2)

    def update(self, pos: int, *, name: str | None = None, current: Any = None,
               initial: Any = None, target: Any = None, unit: str = "units",
               time_elapsed: float | None = None, **kwargs: Any) -> None:
        """As bluesky's, but frames are counted in whole numbers (``223/10000``; bluesky's bar
        rounds to 3 decimals and shows ``223.0/10000.0``)."""
        unit = unit or " frames"
        if not all(isinstance(x, int | np.integer) for x in (current, initial, target)):
            super().update(pos, name=name, current=current, initial=initial, target=target,
                           unit=unit, time_elapsed=time_elapsed, **kwargs)
            return
        total = max(int(target) - int(initial), 0)
        done = min(max(int(current) - int(initial), 0), total)
        if time_elapsed is None:
            time_elapsed = time.time() - self.creation_time
        self.meters[pos] = tqdm.format_meter(n=done, total=total, elapsed=time_elapsed,
                                             unit=unit, prefix=name, ncols=self.ncols)
        self.draw()


def show_frame_progress(RE: RunEngine) -> ProgressBarManager:
    """Draw a progress bar whenever ``RE`` waits on a detector that reports progress."""
    manager = ProgressBarManager(FrameProgressBar)
    RE.waiting_hook = manager
    return manager


class PointProgress(CallbackBase):
    """A tqdm bar over the points of each run: ``count: 40%|... 4/10 [00:01<00:01, 3.9 points/s]``.

    The total is the start document's ``num_points`` (bluesky's plans set it); the bar counts the
    events of the ``primary`` stream.
    """

    def __init__(self, **tqdm_options: Any) -> None:
        super().__init__()
        self._options = tqdm_options
        self._bar: tqdm | None = None
        self._primary: set[str] = set()

    def start(self, doc: dict[str, Any]) -> None:
        self._primary.clear()
        self._bar = tqdm(total=doc.get("num_points"), desc=doc.get("plan_name", "run"),
                         unit=" points", **self._options)

    def descriptor(self, doc: dict[str, Any]) -> None:
        if doc.get("name") == "primary":
            self._primary.add(doc["uid"])

    def event(self, doc: dict[str, Any]) -> None:
        if self._bar is not None and doc["descriptor"] in self._primary:
            self._bar.update(1)

    def stop(self, doc: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def show_point_progress(RE: RunEngine, **tqdm_options: Any) -> int:
    """Draw a bar of points done for every run of ``RE``; returns the subscription token."""
    return RE.subscribe(PointProgress(**tqdm_options))
