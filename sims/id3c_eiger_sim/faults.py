"""The simulator's fault surface: ``<prefix>sim:`` PVs (and ``--fault NAME=VALUE``) that make it
fail as a beamline does, so plans and devices can be tested against stalls, drops, crashes, slow
and full disks, and a failing file writer.

Count faults are armed by a positive value and count from the moment they are set; they strike
once and their PV returns to 0 (``DiskFullAfterBytes`` stays struck until set to 0, as a full
disk stays full). ``WriteDelay`` holds until changed.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass
from typing import Any

from caproto.server import PVGroup, pvproperty


@dataclass(frozen=True)
class Fault:
    """One fault PV: its name, type and what it does (the ``--help`` and README text)."""

    name: str
    attribute: str  # of ``Faults``
    dtype: type
    doc: str


FAULTS = (
    Fault("StallAfterFrames", "stall_after", int,
          "after N more frames the camera stays Acquiring and produces no frame until Acquire=Done"),
    Fault("DropFrames", "drop", int,
          "the next N frames are dropped before HDF1 (DroppedArrays_RBV), as by a full queue"),
    Fault("DieAfterFrames", "die_after", int,
          "after N more frames the IOC process dies at once (SIGKILL)"),
    Fault("WriteDelay", "write_delay", float,
          "every frame written takes this many more seconds (a slow disk)"),
    Fault("DiskFullAfterBytes", "disk_full_after", int,
          "after N more bytes of frame data every write fails with 'No space left on device' "
          "until this is set to 0"),
    Fault("FailWriterAfterFrames", "fail_writer_after", int,
          "after N more frames the file writer fails once with 'Input/output error'"),
    Fault("DcuDiskFullAfterBytes", "dcu_disk_full_after", int,
          "after N more bytes the detector's own disk (its FileWriter) is full: FWFree_RBV 0, "
          "FWState_RBV error, until this is set to 0"),
)
FAULT_NAMES = {fault.name: fault for fault in FAULTS}


def parse_fault(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` of ``--fault``; ValueError naming the choices."""
    name, _, value = text.partition("=")
    fault = FAULT_NAMES.get(name)
    if fault is None or not value:
        raise ValueError(f"--fault {text!r}: give NAME=VALUE with NAME one of "
                         f"{', '.join(FAULT_NAMES)}")
    try:
        number = fault.dtype(value)
    except ValueError:
        raise ValueError(f"--fault {text!r}: {name} takes a {fault.dtype.__name__}") from None
    if number < 0:
        raise ValueError(f"--fault {text!r}: {name} must be >= 0 (0 is off)")
    return name, number


class Faults:
    """What the faults do to frames; the camera and the writer thread ask it as frames pass.

    Counts go down as frames (or bytes) pass; the fault strikes when one more would go past
    zero. ``FAULTS`` names the attributes.
    """

    def __init__(self) -> None:
        self.stall_after = 0
        self.drop = 0
        self.die_after = 0
        self.write_delay = 0.0
        self.disk_full_after = 0
        self.fail_writer_after = 0
        self.dcu_disk_full_after = 0
        self._armed: set[str] = set()

    def arm(self, attribute: str, value: float) -> None:
        """Set a fault's count (0 clears it)."""
        setattr(self, attribute, value)
        if value:
            self._armed.add(attribute)
        else:
            self._armed.discard(attribute)

    def _count_down(self, attribute: str, n: int) -> tuple[int, bool]:
        """(units of ``n`` that pass before the fault, whether it strikes within ``n``)."""
        if attribute not in self._armed:
            return n, False
        remaining = getattr(self, attribute)
        if n <= remaining:
            setattr(self, attribute, remaining - n)
            return n, False
        setattr(self, attribute, 0)
        return remaining, True

    def camera_frames(self, n: int) -> tuple[int, str | None]:
        """(frames the camera may produce of ``n`` more, then "die", "stall" or None). A fault
        of N frames strikes when frame N+1 is due."""
        n, die = self._count_down("die_after", n)
        n, stall = self._count_down("stall_after", n)
        if die or stall:
            self._armed.discard("die_after" if die else "stall_after")
        return n, "die" if die else "stall" if stall else None

    def dropped(self, n: int) -> int:
        """How many of ``n`` frames reaching the plugin are dropped."""
        dropped = min(n, self.drop)
        self.drop -= dropped
        return dropped

    def before_write(self, n_bytes: int) -> None:
        """In the writer thread, before one frame of ``n_bytes`` goes to disk: raise the armed
        write faults as the OS would."""
        _, fail = self._count_down("fail_writer_after", 1)
        if fail:
            self._armed.discard("fail_writer_after")
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} (sim:FailWriterAfterFrames)")
        _, full = self._count_down("disk_full_after", n_bytes)
        if full:  # stays armed at 0 bytes: a full disk stays full until cleared
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (sim:DiskFullAfterBytes)")


    @property
    def dcu_disk_full(self) -> bool:
        """``DcuDiskFullAfterBytes`` has struck (and was not cleared)."""
        return "dcu_disk_full_after" in self._armed and self.dcu_disk_full_after == 0

    def before_dcu_write(self, n_bytes: int) -> None:
        """Before one frame of ``n_bytes`` goes to the DCU's disk."""
        _, full = self._count_down("dcu_disk_full_after", n_bytes)
        if full:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (sim:DcuDiskFullAfterBytes)")


def die() -> None:
    """End the IOC process as a crash does: no cleanup, no answer to any client."""
    os.kill(os.getpid(), signal.SIGKILL)


async def _arm(group: FaultPVs, instance: Any, value: Any) -> Any:
    name = instance.pvspec.name
    if not value >= 0:  # NaN too
        raise ValueError(f"sim:{name} {value} must be >= 0 (0 is off)")
    group.set(name, value)
    return value


def _fault_pv(fault: Fault) -> pvproperty:
    value = 0.0 if fault.dtype is float else 0
    return pvproperty(name=fault.name, value=value, doc=fault.doc, put=_arm,
                      **({"precision": 4} if fault.dtype is float else {}))


FaultSurface = type("FaultSurface", (PVGroup,), {f.name: _fault_pv(f) for f in FAULTS})


class FaultPVs(FaultSurface):
    """``sim:``: one PV per fault (see ``FAULTS``); reading one gives what is still armed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = Faults()

    def set(self, name: str, value: float) -> None:
        """Arm (or with 0 clear) fault ``name``."""
        self.state.arm(FAULT_NAMES[name].attribute, value)

    async def arm(self, name: str, value: float) -> None:
        """Arm a fault as a put would (``--fault`` at start-up)."""
        self.set(name, value)
        await getattr(self, name).write(value)

    async def show(self) -> None:
        """Post what is still armed (counts go down as frames pass)."""
        for fault in FAULTS:
            value = getattr(self.state, fault.attribute)
            pv = getattr(self, fault.name)
            if pv.value != value:
                await pv.write(value, verify_value=False)
