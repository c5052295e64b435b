"""What the detector says of its own health, and the exceptions that end a plan that lost frames.

Both device flavours read the same PVs at every point and at unstage: the file plugin's
``WriteStatus``/``WriteMessage``, ``NumCaptured_RBV`` and ``DroppedArrays_RBV``, and the camera's
``DetectorState_RBV``/``StatusMessage_RBV``. ``check`` turns them into one exception naming the
file, the frames written and expected, and the IOC's own words, so the first cause a user sees is
the real one (a full disk, a refused setting) rather than a timeout from cleanup.
"""

from __future__ import annotations

from dataclasses import dataclass

# s: stage waits this long for an IOC that went away. Channel Access clients find a restarted
# IOC by their search back-off; measured here with a CA repeater: 4 to 20 s per channel.
RECONNECT_TIMEOUT = 30.0
HEALTH_TIMEOUT = 3.0  # s: an IOC that does not answer a health read in this time is not answering


class DetectorError(RuntimeError):
    """The detector or its IOC failed; the message names the PV it said so on, and the fix."""


class DetectorWriteError(DetectorError):
    """Frames were lost: the file holds fewer frames than the plan took."""


class DetectorNotResponding(DetectorError, TimeoutError):
    """The detector's IOC stopped answering Channel Access."""


@dataclass(frozen=True)
class HealthReading:
    """The detector's own account of a capture, as read from its PVs."""

    name: str  # the device
    prefix: str  # the IOC's PV prefix
    file: str  # the file being written (FullFileName_RBV)
    expected: int  # frames the plan has taken so far
    captured: int  # HDF1:NumCaptured_RBV
    write_status: str  # "Write OK" or "Write error"
    write_message: str
    detector_state: str  # cam1:DetectorState_RBV
    status_message: str
    dropped: int = 0  # HDF1:DroppedArrays_RBV since the capture began
    writer_pv: str = "HDF1:WriteStatus"  # where the writer reports (cam1:FWState_RBV: the DCU)

    @property
    def healthy(self) -> bool:
        """Nothing to report: no write or detector error and no frame missing."""
        return (self.write_status == "Write OK" and self.detector_state != "Error"
                and self.captured >= self.expected)


def _counts(r: HealthReading) -> str:
    return f"{r.file or 'the file'} holds {r.captured} of {r.expected} frames taken"


def check_errors(reading: HealthReading) -> None:
    """Raise the error the IOC reports (file writer first, then detector), or nothing."""
    r = reading
    counts = _counts(r)
    if r.write_status != "Write OK":
        raise DetectorWriteError(
            f"{r.name}: writing failed, {counts}; the IOC says {r.write_message!r} "
            f"({r.prefix}{r.writer_pv}). Fix what it names (free space on the write path, "
            "its permissions, the compression), then run again; the frames written are kept."
        )
    if r.detector_state == "Error":
        raise DetectorError(
            f"{r.name}: the detector reports Error ({r.prefix}cam1:DetectorState_RBV), {counts}; "
            f"it says {r.status_message!r} ({r.prefix}cam1:StatusMessage_RBV). Fix the setting "
            "it names, then run again."
        )


def check(reading: HealthReading) -> None:
    """Raise the exception ``reading`` calls for (the first cause first), or nothing: the IOC's
    own errors, then frames missing from the file."""
    check_errors(reading)
    r = reading
    if r.captured < r.expected:
        cause = (f"{r.dropped} frames were dropped before the file writer "
                 f"({r.prefix}HDF1:DroppedArrays_RBV): raise HDF1:QueueSize or set "
                 "HDF1:BlockingCallbacks Yes" if r.dropped else
                 f"the detector says {r.status_message!r} and the file writer "
                 f"{r.write_message or r.write_status!r}: check the IOC's log")
        raise DetectorWriteError(f"{r.name}: frames lost, {_counts(r)}; {cause}.")


def not_responding(name: str, prefix: str, waited: float, file: str, frames: int) -> DetectorNotResponding:
    """The exception for an IOC that stopped answering (``waited`` 0: its connection closed),
    naming what was kept."""
    how = f"{waited:.0f} s without an answer" if waited else "its connection closed"
    return DetectorNotResponding(
        f"{name}: the IOC {prefix} stopped answering Channel Access ({how}); {frames} frames "
        f"were confirmed in {file or 'the file'} before. Fix: check that the IOC process runs and "
        "its host is reachable, then run again (the device unstaged itself; no restart of this "
        "session is needed)."
    )


def arm_refused(who: str, message: str) -> DetectorError:
    """The exception for an arm the detector refused (``DetectorState_RBV`` Error); ``who``
    names the detector (its name or its Acquire PV), ``message`` is its StatusMessage_RBV."""
    return DetectorError(
        f"{who}: the detector refused to arm (cam1:DetectorState_RBV Error); it says {message!r} "
        "(cam1:StatusMessage_RBV). Fix the setting it names, then run again.")


def arm_ended(name: str, prefix: str, reading_state: str, frames: int, file: str,
              message: str) -> DetectorError:
    """The exception for a detector armed for a stage's points whose arm ended mid-scan (a stop
    from a panel, an error), naming what was kept."""
    return DetectorError(
        f"{name}: the detector stopped acquiring in the middle of the scan (detector "
        f"{reading_state!r}, {frames} frames in {file or 'the file'}); it says {message!r} "
        f"({prefix}cam1:StatusMessage_RBV). Fix: leave cam1:Acquire alone while a plan runs (or "
        "fix what the message names), then run again."
    )
