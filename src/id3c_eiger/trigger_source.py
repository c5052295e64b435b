"""A software trigger source: pulses ``cam1:Trigger`` so fly scans in External modes run
without a hardware trigger line.

The simulator takes each put of its ``Trigger`` PV as one external trigger (the value is the
gate length in External Enable). A real EIGER2 in an External mode listens to its trigger
input instead; at the beamline, a pulse generator (SoftGlue, PandA) takes this device's place.
"""

from __future__ import annotations

import asyncio
import time

from bluesky.protocols import Flyable, Preparable
from ophyd_async.core import AsyncStatus, Device, error_if_none
from ophyd_async.epics.core import epics_signal_w
from pydantic import BaseModel, Field, PositiveInt


class PulseTrain(BaseModel):
    """``number`` triggers, one every ``period`` seconds; ``gate`` is each exposure (External
    Enable), 0 for edge triggers."""

    number: PositiveInt
    period: float = Field(gt=0)
    gate: float = Field(default=0.0, ge=0)


class SoftwareTriggerSource(Device, Preparable, Flyable):
    """Fires a ``PulseTrain`` at ``<prefix>cam1:Trigger`` between kickoff and complete."""

    def __init__(self, prefix: str, name: str = "") -> None:
        self.trigger_pv = epics_signal_w(float, prefix + "cam1:Trigger")
        self._train: PulseTrain | None = None
        self._pulses: asyncio.Task[None] | None = None
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def prepare(self, value: PulseTrain) -> None:
        """Set the pulse train the next kickoff fires."""
        self._train = value

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        """Start firing; returns at once."""
        train = error_if_none(self._train, f"{self.name}: prepare(PulseTrain(...)) first")
        self._pulses = asyncio.create_task(self._fire(train))

    def complete(self) -> AsyncStatus:
        """Done when the last pulse is out."""
        pulses = error_if_none(self._pulses, f"{self.name}: kickoff first")
        return AsyncStatus(pulses, name=self.name)

    async def _fire(self, train: PulseTrain) -> None:
        start = time.monotonic()
        for index in range(train.number):
            delay = start + index * train.period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.trigger_pv.set(train.gate)
