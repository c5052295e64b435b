"""Progress in a terminal: frames written of frames expected, rate and time left.

ophyd-async detectors report each acquisition's progress from ``NumCaptured_RBV`` as watcher
updates; bluesky's ``ProgressBarManager`` draws them with tqdm. This names the unit ``frames``.
"""

from __future__ import annotations

from typing import Any

from bluesky import RunEngine
from bluesky.utils import ProgressBarManager, TerminalProgressBar


class FrameProgressBar(TerminalProgressBar):
    """bluesky's terminal progress bar, counting frames: ``eiger2: 45%|... 900/2000 [00:01<00:01,
    2200.00 frames/s]``."""

    def __init__(self, status_objs: Any) -> None:
        super().__init__(status_objs, delay_draw=0.2)

    def update(self, pos: int, *, unit: str = "units", **kwargs: Any) -> None:
        super().update(pos, unit=unit or " frames", **kwargs)


def show_frame_progress(RE: RunEngine) -> ProgressBarManager:
    """Draw a progress bar whenever ``RE`` waits on a detector that reports progress."""
    manager = ProgressBarManager(FrameProgressBar)
    RE.waiting_hook = manager
    return manager
