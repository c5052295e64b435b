"""The acquisition engine: when frames happen, for each EIGER trigger mode.

An armed acquisition is a sequence of triggers; each trigger yields ``NumImages`` frames one
``AcquirePeriod`` apart (Series, Gate, Continuous) or one frame of the exposure (Enable modes).
External triggers, and internal ones with ``ManualTrigger``, come from ``trigger()`` (the
``Trigger`` PV). Frames due by now are delivered in batches, so a fast series costs one call per
tick rather than one per frame, and the engine keeps real time however long a batch takes. A
``deliver`` that takes fewer frames than it was given stalls the engine (the camera stays
acquiring, producing nothing) until ``stop()``. Unpaced (``--unpaced``, for benchmarks), a series
comes as fast as ``deliver`` takes its batches: the simulator's own ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum


class TriggerMode(StrEnum):
    """``cam1:TriggerMode`` enum strings."""

    INTERNAL_SERIES = "Internal Series"
    INTERNAL_ENABLE = "Internal Enable"
    EXTERNAL_SERIES = "External Series"
    EXTERNAL_ENABLE = "External Enable"
    CONTINUOUS = "Continuous"
    EXTERNAL_GATE = "External Gate"


_ENABLE_MODES = {TriggerMode.INTERNAL_ENABLE, TriggerMode.EXTERNAL_ENABLE}
_EXTERNAL_MODES = {TriggerMode.EXTERNAL_SERIES, TriggerMode.EXTERNAL_ENABLE,
                   TriggerMode.EXTERNAL_GATE}
_MANUAL_CAPABLE = {TriggerMode.INTERNAL_SERIES, TriggerMode.INTERNAL_ENABLE}

# Sleeps longer than this wait on the stop event, so a stop is seen at once.
_INTERRUPTIBLE_SLEEP = 0.05
UNPACED_BATCH = 200  # frames a batch unpaced: the writer flushes once a batch (25: half the rate)


@dataclass(frozen=True)
class AcquisitionPlan:
    """The settings of one armed acquisition, read from the camera PVs at Acquire."""

    mode: TriggerMode
    n_images: int
    n_triggers: int
    count_time: float
    frame_time: float
    manual_trigger: bool

    @property
    def waits_for_triggers(self) -> bool:
        """Each trigger comes from ``trigger()`` rather than from the engine itself."""
        return self.mode in _EXTERNAL_MODES or (self.manual_trigger and self.mode in _MANUAL_CAPABLE)

    @property
    def images_per_trigger(self) -> int:
        """Frames each trigger yields (one exposure in the Enable modes)."""
        return 1 if self.mode in _ENABLE_MODES else self.n_images

    @property
    def total_frames(self) -> int | None:
        """Frames the acquisition yields; None when it runs until stopped (Continuous)."""
        if self.mode is TriggerMode.CONTINUOUS:
            return None
        if self.mode in _ENABLE_MODES:
            return self.n_triggers
        return self.n_images * self.n_triggers


Deliver = Callable[[range], Awaitable[int | None]]  # frames taken; None: all
Report = Callable[[str, str], Awaitable[None]]


class AcquisitionEngine:
    """Runs one acquisition; ``deliver`` gets each batch of frame indices (0-based, in order)."""

    def __init__(
        self,
        plan: AcquisitionPlan,
        deliver: Deliver,
        report: Report,
        min_tick: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
        paced: bool = True,
    ) -> None:
        self.plan = plan
        self._deliver = deliver
        self._report = report
        self._min_tick = min_tick
        self._clock = clock
        self._paced = paced  # False: frames as fast as ``deliver`` takes them (a benchmark)
        self._stop = asyncio.Event()
        self._triggers: asyncio.Queue[float] = asyncio.Queue()
        self.produced = 0

    @property
    def stopped(self) -> bool:
        """``stop()`` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """End the acquisition after the batch in progress."""
        self._stop.set()

    def trigger(self, gate: float) -> bool:
        """A software trigger; ``gate`` > 0 is the exposure in External Enable. False if unused."""
        if not self.plan.waits_for_triggers:
            return False
        self._triggers.put_nowait(gate)
        return True

    async def run(self) -> int:
        """Produce every frame of the plan (or until stopped); returns the frames produced."""
        plan = self.plan
        triggers_done = 0
        while not self.stopped and (
            plan.mode is TriggerMode.CONTINUOUS or triggers_done < plan.n_triggers
        ):
            gate = 0.0
            if plan.waits_for_triggers:
                await self._report("Waiting", f"Waiting for trigger {triggers_done + 1}")
                received = await self._next_trigger()
                if received is None:
                    break
                gate = received
            start = self._clock()  # the exposure starts at the trigger, not once it is shown
            await self._report("Acquire", "Acquiring")
            if plan.mode in _ENABLE_MODES:
                exposure = gate if plan.mode is TriggerMode.EXTERNAL_ENABLE and gate > 0 else (
                    plan.count_time
                )
                await self._series(1, exposure, start)
            else:
                await self._series(plan.n_images, plan.frame_time, start)
            triggers_done += 1
        return self.produced

    async def _series(self, n: int, period: float, start: float) -> None:
        done = 0
        while done < n and not self.stopped:
            due = (min(n, int((self._clock() - start) / period + 1e-9)) if self._paced
                   else min(n, done + UNPACED_BATCH))
            if due > done:
                batch = range(self.produced, self.produced + due - done)
                taken = await self._deliver(batch)
                if taken is not None and taken < len(batch):
                    self.produced += taken
                    await self._stop.wait()  # stalled
                    return
                self.produced += len(batch)
                done = due
                continue
            wait = start + (done + 1) * period - self._clock()
            await self._sleep(max(wait, self._min_tick) if n - done > 1 else max(wait, 0.0))

    async def _sleep(self, seconds: float) -> None:
        if seconds < _INTERRUPTIBLE_SLEEP:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _next_trigger(self) -> float | None:
        getter = asyncio.ensure_future(self._triggers.get())
        stopper = asyncio.ensure_future(self._stop.wait())
        done, pending = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return getter.result() if getter in done else None
