"""The DECTRIS FileWriter source as a client sees it: one series per arm, downloaded by the IOC.

With ``file_source: file_writer`` a device stages a unique ``FWNamePattern`` (``<uuid>_$id``;
the DCU replaces ``$id`` by ``SequenceId``, one more at every arm). Each arm is a series: the DCU
writes its master at arm, for every frame the arm asks, and a data file every
``FWNImagesPerFile`` frames; the IOC (``SaveFiles``) downloads the master first, then each data
file, into ``cam1:FilePath``, and ends the acquisition (``Acquire`` Done) only once every file
is there. So a step scan arms once per point, as NSLS-II's EIGER does: a master per point, each
recorded as its own resource; a fly scan arms once for all its frames. Both device flavours find
the files by the read path. The names are those of ``id3c_eiger.layout``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .layout import MASTER_SUFFIX, data_file_name

DOWNLOAD_TIMEOUT = 10.0  # s: a downloaded file shows at the read path this late at most
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
        """The master file at the read path (downloaded first, as soon as the detector armed)."""
        return self.directory / f"{self.name}{MASTER_SUFFIX}.h5"

    def data_file(self, number: int) -> Path:
        """Data file ``number`` (1-based) at the read path."""
        return self.directory / data_file_name(self.master, number)

    def files(self, frames: int) -> list[Path]:
        """The files that hold the series' first ``frames`` frames: the master, then data files."""
        return [self.master, *(self.data_file(number)
                               for number in range(1, -(-frames // self.frames_per_file) + 1))]

    def frames_downloaded(self, expected: int) -> int:
        """Frames of the first ``expected`` that lie in data files found at the read path, with
        the master that reaches them."""
        if not self.master.exists():
            return 0
        found = 0
        number = 1
        while found < expected and self.data_file(number).exists():
            found = min(expected, number * self.frames_per_file)
            number += 1
        return found

    def wait_for_files(self, frames: int, timeout: float = DOWNLOAD_TIMEOUT) -> None:
        """Wait until the master and the data files of the first ``frames`` frames are at the
        read path (another host's mount may show them later than the IOC wrote them)."""
        deadline = time.monotonic() + timeout
        for path in self.files(frames):
            while not path.exists():
                if time.monotonic() > deadline:
                    raise self.late(path.name, timeout)
                time.sleep(POLL)

    def late(self, what: str, timeout: float) -> DownloadTimeout:
        """The error for ``what`` (a file of this series) missing at the read path."""
        return DownloadTimeout(
            f"{what} of FileWriter series {self.name} did not show in {self.directory}/ in "
            f"{timeout:.3g} s. Fix: check that cam1:SaveFiles is Enable, cam1:StatusMessage_RBV "
            "for a failed download, and that the read path template names the directory the "
            "IOC downloads into (cam1:FilePath, as this host mounts it)."
        )
