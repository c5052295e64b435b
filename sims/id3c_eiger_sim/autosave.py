"""Autosave: the settings a real IOC's autosave keeps, in a state file of the simulator's own.

A real ADEiger IOC restores file numbers, paths and acquisition settings at boot (autosave's
``.sav`` files), so a restarted IOC goes on where it stopped instead of writing file number 1
again. The simulator saves the same set (``SAVED``) whenever one changes (checked every
``SAVE_PERIOD``, and at once when a file is done) and restores it, through the records' own
putters, before it answers any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from caproto.server import PVGroup

log = logging.getLogger(__name__)

SAVE_PERIOD = 0.5  # s
# In restore order: CreateDirectory before FilePath, the period before the exposure.
SAVED = {
    "cam1:": (
        "TriggerMode", "ManualTrigger", "NumImages", "NumTriggers", "AcquirePeriod",
        "AcquireTime", "PhotonEnergy", "BeamX", "BeamY", "DetDist", "FWEnable",
        "FWNamePattern", "FWNImagesPerFile", "FWHDF5Format", "FWCompression", "FWAutoRemove",
        "SequenceId", "SaveFiles", "CompressionAlgo", "DataSource", "FilePerms", "FileOwner",
        "FileOwnerGrp", "WaitForPlugins", "CreateDirectory", "FilePath",
    ),
    "HDF1:": (
        "EnableCallbacks", "FileWriteMode", "NumCapture", "Compression", "ZLevel", "LazyOpen",
        "AutoIncrement", "AutoSave", "FileTemplate", "FileName", "CreateDirectory", "FilePath",
        "FileNumber",
    ),
}


def _plain(value: Any) -> Any:
    """A PV value as JSON keeps it."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value.item() if hasattr(value, "item") else value


class Autosave:
    """Saves and restores ``SAVED`` of the groups (by plugin prefix) in ``path``."""

    def __init__(self, path: Path, groups: dict[str, PVGroup]) -> None:
        self.path = path
        self.groups = groups
        self._saved: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The saved settings as they are now, by full suffix (``HDF1:FileNumber``)."""
        return {
            f"{plugin}{name}": _plain(getattr(self.groups[plugin], name).value)
            for plugin, names in SAVED.items()
            for name in names
        }

    async def restore(self) -> int:
        """Put the saved values back (through the putters, so rules apply); returns how many.
        A missing file restores nothing; an unreadable one is named in the log and ignored."""
        try:
            values = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as err:
            log.warning("autosave file %s not restored (%s); starting from defaults", self.path, err)
            return 0
        restored = 0
        for plugin, names in SAVED.items():
            for name in names:
                key = f"{plugin}{name}"
                if key in values:
                    pv = getattr(self.groups[plugin], name)
                    try:
                        await pv.write(values[key])
                        restored += 1
                    except Exception as err:  # one bad value must not stop the IOC starting
                        log.warning("autosave: %s = %r not restored: %s", key, values[key], err)
        self._saved = self.snapshot()
        return restored

    def save(self) -> None:
        """Write the settings now if they changed (atomically: a crash leaves old or new)."""
        values = self.snapshot()
        if values == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            json.dump(values, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._saved = values

    async def run(self) -> None:
        """Save whenever something changed, until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(SAVE_PERIOD)
                try:
                    self.save()
                except OSError as err:
                    log.warning("autosave to %s failed: %s", self.path, err)
        finally:
            with contextlib.suppress(OSError):
                self.save()
