"""The DECTRIS FileWriter source as a client sees it: one series per arm, downloaded by the IOC.

With ``file_source: file_writer`` a device arms the detector once per stage with a unique
``FWNamePattern`` (``<uuid>_$id``; the DCU replaces ``$id`` by ``SequenceId``), the DCU cuts a
data file every ``FWNImagesPerFile`` frames, and the IOC (``SaveFiles``) downloads each into
``cam1:FilePath``: the data files as they fill, the master last, at disarm. Both device flavours
find the files by the read path; a point is done when its data file is there, a run when its
master is. The names are those of ``id3c_eiger.layout``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import h5py

from .layout import DATA_DATASET, MASTER_SUFFIX, data_file_name

DOWNLOAD_TIMEOUT = 10.0  # s: a full file reaches the read path this late at most (IOC polls it)
MAX_TRIGGERS = 1_000_000  # NumTriggers of a step scan's arm: ended by disarm, not by count
POLL = 0.01  # s: how often the read directory is looked at while waiting


class FileSource(StrEnum):
    """Where a device's files come from (``file_source`` in ``devices.yml``)."""

    FILE_WRITER = "file_writer"  # the detector's FileWriter, downloaded by the IOC (SaveFiles)
    HDF5_PLUGIN = "hdf5_plugin"  # the IOC's HDF1: plugin, fed by the Stream interface


def check_file_source(value: str) -> FileSource:
    """``value`` as a ``FileSource``; ValueError naming the choices otherwise."""
    try:
        return FileSource(value)
    except ValueError:
        choices = ", ".join(source.value for source in FileSource)
        raise ValueError(
            f"file_source {value!r} is not a file source of the EIGER2; use one of: {choices} "
            "(file_writer: the detector's FileWriter, downloaded by the IOC; hdf5_plugin: HDF1)"
        ) from None


def unique_name_pattern() -> str:
    """An ``FWNamePattern`` no other stage uses, with the ``$id`` the DCU fills in."""
    return f"{uuid.uuid4().hex}_$id"


class DownloadTimeout(TimeoutError):
    """A file the IOC should have downloaded did not reach the read path in time."""


@dataclass(frozen=True)
class DownloadedSeries:
    """One FileWriter series as it lands in the read directory."""

    directory: Path  # the read path of cam1:FilePath
    name: str  # FWNamePattern with $id replaced by the series' SequenceId
    frames_per_file: int  # FWNImagesPerFile

    @classmethod
    def armed(cls, directory: str | Path, pattern: str, sequence_id: int,
              frames_per_file: int) -> DownloadedSeries:
        """The series an arm with ``pattern`` started as ``sequence_id``."""
        return cls(Path(directory), pattern.replace("$id", str(sequence_id)), frames_per_file)

    @property
    def master(self) -> Path:
        """The master file at the read path (downloaded last, once the series is over)."""
        return self.directory / f"{self.name}{MASTER_SUFFIX}.h5"

    def data_file(self, number: int) -> Path:
        """Data file ``number`` (1-based) at the read path."""
        return self.directory / data_file_name(self.master, number)

    def frames_downloaded(self, expected: int) -> int:
        """Frames of the first ``expected`` that lie in data files found at the read path."""
        found = 0
        number = 1
        while found < expected and self.data_file(number).exists():
            found = min(expected, number * self.frames_per_file)
            number += 1
        return found

    def wait_for_master(self, timeout: float = DOWNLOAD_TIMEOUT) -> int:
        """Wait until the master is at the read path and opens whole; its frame count."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                # SWMR, as Tiled opens it: one process may hold it both ways (embedded Tiled).
                with h5py.File(self.master, "r", swmr=True) as master:
                    return int(master[DATA_DATASET].shape[0]) if DATA_DATASET in master else 0
            except (OSError, KeyError):  # not there yet, or still being copied
                if time.monotonic() > deadline:
                    raise self.late(f"master {self.master.name}", timeout) from None
                time.sleep(POLL)

    def data_file_of(self, frames: int) -> Path:
        """The data file that holds frame number ``frames`` (1-based)."""
        return self.data_file(max(1, -(-frames // self.frames_per_file)))

    def late(self, what: str, timeout: float) -> DownloadTimeout:
        """The error for ``what`` (a file of this series) missing at the read path."""
        return DownloadTimeout(
            f"{what} of FileWriter series {self.name} did not reach {self.directory}/ in "
            f"{timeout:.3g} s. Fix: check that cam1:SaveFiles is Enable, cam1:StatusMessage_RBV "
            "for a failed download, and that the read path template names the directory the "
            "IOC downloads into (cam1:FilePath, as this host mounts it)."
        )
