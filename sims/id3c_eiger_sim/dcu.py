"""The detector's own FileWriter (the DECTRIS DCU) with its disk, and the IOC's downloads from it.

With ``cam1:FWEnable`` Enable every arm starts a series on the DCU's disk (``--dcu-root``, not a
directory clients read): ``<FWNamePattern>_master.h5``, ``$id`` replaced by ``SequenceId`` (one
more at every arm), and ``_data_NNNNNN.h5`` files of ``FWNImagesPerFile`` frames in
``FWHDF5Format``, compressed per ``FWCompression``/``CompressionAlgo``: Legacy data are 3-D
(n, y, x); v2024.2 data 4-D (n, thresholds, y, x), two thresholds with ``Threshold2Enable``. A
data file is available once full (the last one at disarm); the master at arm, for every frame
the arm asks (links to data files a series stopped early never makes dangle, as on the
detector). A pattern without ``$id`` is accepted as the DCU accepts it: the next series
overwrites the files.

With ``DataSource`` FileWriter the IOC parses each data file, once full, into arrays for HDF1
and the plugins (they then come a file at a time); with Stream they come as frames are taken;
with None, never. DataSource FileWriter with FWEnable Disable refuses to arm.

With ``SaveFiles`` Enable the IOC downloads each available file into ``cam1:FilePath`` (inside a
data root, never over an existing file), in ADEiger's order: the master first, then data files
1..N as they come, each named in ``FullFileName_RBV`` as its copy starts. As ADEiger's
acquisition task, the camera then stays busy ("Processing files") until the series is
downloaded: ``FW_SETTLE`` after the FileWriter leaves "acquire", then every file, and
``MISSING_FILES_WAIT`` more when the master names data files an early stop never made. So
``AcquireBusy`` Done means every file is in ``FilePath``. Downloads get ``FilePerms`` (its digits read as
octal, 644 -> rw-r--r--) and, where the IOC may, ``FileOwner``/``FileOwnerGrp``; with
``FWAutoRemove`` Enable the DCU's copy is deleted once downloaded. ``FWFree_RBV`` is the free
space of the DCU disk in GB; a write that fails there (full disk) ends the acquisition with
``FWState_RBV`` "error" and the reason in ``StatusMessage_RBV``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import grp
import logging
import os
import pwd
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hdf5plugin
import numpy as np

from id3c_eiger.layout import MASTER_SUFFIX, MasterLayout

from .faults import Faults
from .frames import FrameSettings
from .roots import FileTarget, PathRefused
from .writer import SeriesWriter

if TYPE_CHECKING:
    from .ioc import EigerIOC

log = logging.getLogger(__name__)

DOWNLOAD_POLL = 0.1  # s: the IOC looks for new files on the DCU at about 10 Hz
FW_SETTLE = 0.5  # s: ADEiger's acquire task sleeps this long once the FileWriter leaves "acquire"
MISSING_FILES_WAIT = 3.0  # s: ADEiger's poll task waits 1 s for a missing file, retried twice
DOWNLOAD_WAIT = 60.0  # s: the camera waits this long at most for a series' downloads


class FileWriterError(Exception):
    """The DCU could not write a series; the message names the cause and the fix."""


def pattern_warning(pattern: str) -> str | None:
    """What the IOC says of an ``FWNamePattern`` it accepts but that will lose files."""
    if "$id" in pattern:
        return None
    return (f"FWNamePattern {pattern!r} has no $id: every series gets the same name and the DCU "
            "overwrites the last one; put $id in the pattern")


def fw_filters(compression: str, algorithm: str) -> dict[str, Any]:
    """h5py keywords for ``FWCompression`` + ``CompressionAlgo``."""
    if compression != "Enable" or algorithm == "None":
        return {}
    if algorithm == "BS LZ4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    return dict(hdf5plugin.LZ4())


def series_name(pattern: str, sequence_id: int) -> str:
    """``FWNamePattern`` with ``$id`` replaced by the sequence id."""
    return pattern.replace("$id", str(sequence_id))


class DcuDiskFaults:
    """The fault surface as the DCU's disk sees it: only ``sim:DcuDiskFullAfterBytes``."""

    write_delay = 0.0

    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    def before_write(self, n_bytes: int) -> None:
        """Before one frame goes to the DCU's disk."""
        self._faults.before_dcu_write(n_bytes)


@dataclass
class DcuSeries:
    """One series on the DCU disk and what of it is ready to download, in order."""

    name: str
    writer: SeriesWriter
    target: FileTarget
    settings: FrameSettings
    frames: tuple[np.ndarray, ...]  # what the camera cycles through, for parsed arrays
    base: int | None = None  # the camera's array counter before the series' first frame
    ready: collections.deque[Path] = field(default_factory=collections.deque)
    to_parse: collections.deque[int] = field(default_factory=collections.deque)  # file numbers
    closed: bool = False
    failed: bool = False
    download_failed: bool = False  # a file could not be saved into FilePath (it stays here)
    downloaded: asyncio.Event = field(default_factory=asyncio.Event)  # nothing left to serve

    def data_file_closed(self, path: Path) -> None:
        """(Writer thread) a data file is full: downloadable, and parsable into arrays."""
        self.ready.append(path)
        self.to_parse.append(int(path.stem.rpartition("_")[2]))

    @property
    def master(self) -> Path:
        """The master on the DCU disk."""
        return self.target.master_path


class DetectorControlUnit:
    """The DCU's FileWriter and its disk, driven by the camera (arm, frames, disarm)."""

    def __init__(self, ioc: EigerIOC, root: Path) -> None:
        self.ioc = ioc
        self.root = Path(os.path.realpath(root))
        self.series: DcuSeries | None = None
        self._downloads: collections.deque[DcuSeries] = collections.deque()
        self._task: asyncio.Task | None = None
        # The IOC's download thread, apart from the DCU's writer: a copy never holds up frames.
        self._download_executor = ThreadPoolExecutor(1, thread_name_prefix="dcu-download")

    @property
    def cam(self) -> Any:
        """The camera PVs, where the FileWriter's records live."""
        return self.ioc.cam

    def free_gb(self) -> float:
        """Free space of the DCU disk, GB (0 while ``sim:DcuDiskFullAfterBytes`` has struck)."""
        if self.ioc.faults.dcu_disk_full:
            return 0.0
        return shutil.disk_usage(self.root).free / 1e9

    async def start(self) -> None:
        """Start-up values and the download loop."""
        await self.cam.FWState_RBV.write("ready")
        await self.cam.FWFree_RBV.write(self.free_gb())
        self._task = asyncio.get_running_loop().create_task(self._download_loop())

    # --- the series, driven by the camera ---------------------------------------------------

    def thresholds(self) -> int | None:
        """The threshold axis of this series' data: None for Legacy (3-D), else 1 or 2."""
        cam = self.cam
        if MasterLayout(cam.FWHDF5Format.value) is MasterLayout.LEGACY:
            return None
        return 2 if cam.Threshold2Enable.value == "Enable" else 1

    async def arm(self, settings: FrameSettings, frames: tuple[np.ndarray, ...]) -> None:
        """A new series if the FileWriter is enabled: the sequence id moves on at every arm."""
        cam = self.cam
        sequence_id = cam.SequenceId.value + 1
        await cam.SequenceId.write(sequence_id)
        if cam.FWEnable.value != "Enable":
            if cam.DataSource.value == "FileWriter":
                raise FileWriterError(
                    "DataSource FileWriter takes its arrays from the FileWriter's files and "
                    "FWEnable is Disable: nothing would reach HDF1 or the plugins; set FWEnable "
                    "Enable, or DataSource Stream"
                )
            return
        pattern = cam.FWNamePattern.value or "series_$id"
        if "/" in pattern:
            raise FileWriterError(f"FWNamePattern {pattern!r} holds a '/': give a file name only")
        name = series_name(pattern, sequence_id)
        filters = fw_filters(cam.FWCompression.value, cam.CompressionAlgo.value)
        pool = await self.ioc.pool(settings, filters, self.thresholds())
        master = self.root / f"{name}{MASTER_SUFFIX}.h5"

        def create() -> DcuSeries:
            for old in (master, *self.root.glob(f"{name}_data_*.h5")):
                old.unlink(missing_ok=True)  # the DCU overwrites a series of the same name
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            target = FileTarget(master, self.root, fd, fd)
            series = DcuSeries(name, None, target, settings, frames)  # type: ignore[arg-type]
            try:
                series.writer = SeriesWriter(
                    target=target, pool=pool,
                    frames_per_file=cam.FWNImagesPerFile.value,
                    layout=MasterLayout(cam.FWHDF5Format.value),
                    metadata=cam.series_metadata(settings),
                    faults=DcuDiskFaults(self.ioc.faults),
                    on_data_file_closed=series.data_file_closed,
                )
            except BaseException:
                target.close()  # the directory held for a series that never started
                raise
            return series

        try:
            self.series = await self._in_thread(create)
        except OSError as err:
            await self._fail(f"cannot start series {name} on the DCU disk: {err}")
        self.series.ready.append(self.series.master)  # written at arm: downloaded first
        await cam.FWState_RBV.write("acquire")

    async def receive(self, settings: FrameSettings, indices: range) -> None:
        """Frames of the series, written to the DCU disk."""
        series = self.series
        if series is None or not indices:
            return
        if series.base is None:
            series.base = indices.start - series.writer.n_frames
        armed = series.writer.pool  # compression and thresholds are those of the arm
        pool = await self.ioc.pool(settings, dict(armed.filters), armed.thresholds)
        try:
            await self._in_thread(series.writer.write, pool, indices)
        except (OSError, PathRefused) as err:
            series.failed = True
            await self._fail(f"series {series.name}: writing frame {series.writer.n_frames + 1} "
                             f"failed: {err}")

    async def disarm(self) -> DcuSeries | None:
        """Close the series (its last data file becomes available); the series, if one ran."""
        series, self.series = self.series, None
        if series is None:
            return None
        try:
            await self._in_thread(series.writer.close)
        except OSError as err:
            await self.cam.FWState_RBV.write("error")
            await self.cam.report_error(f"closing series {series.name} on the DCU failed: {err}")
        series.closed = True
        series.target.close()
        self._downloads.append(series)
        await self.cam.FWState_RBV.write("error" if series.failed else "ready")
        await self.cam.FWFree_RBV.write(self.free_gb())
        return series

    def downloads(self) -> bool:
        """The IOC fetches this arm's files (ADEiger: DataSource FileWriter, or FWEnable with
        SaveFiles), so the acquisition ends only once they are in ``FilePath``."""
        cam = self.cam
        return cam.DataSource.value == "FileWriter" or (
            cam.FWEnable.value == "Enable" and cam.SaveFiles.value == "Enable")

    async def wait_downloaded(self, series: DcuSeries, settle: float) -> bool:
        """As ADEiger's acquire task after disarm: ``settle``, then until every file of
        ``series`` is fetched, plus the poll task's retries for files the master names that an
        early stop never made. Bounded: a stalled download is named, not waited for. Whether
        every file reached ``FilePath`` (else the reason is in ``StatusMessage_RBV``)."""
        await self.cam.report_status("Processing files")
        await asyncio.sleep(settle)
        try:
            await asyncio.wait_for(series.downloaded.wait(), DOWNLOAD_WAIT)
        except TimeoutError:
            await self.cam.report_error(f"series {series.name}: files still not downloaded "
                                        f"after {DOWNLOAD_WAIT:g} s; see the IOC's log")
            return False
        if series.writer.n_frames < series.writer.metadata.total_images:
            await asyncio.sleep(MISSING_FILES_WAIT)
        return not series.download_failed

    async def _fail(self, message: str) -> None:
        """The FileWriter's error: the driver's message first, then its state, so a client that
        sees ``FWState_RBV`` "error" already has the reason in ``StatusMessage_RBV``."""
        error = FileWriterError(f"{message}; the DCU disk {self.root} has "
                                f"{self.free_gb():.3f} GB free (FWFree_RBV)")
        await self.cam.report_error(f"FileWriter: {error}")
        await self.cam.FWFree_RBV.write(self.free_gb())
        await self.cam.FWState_RBV.write("error")
        raise error

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ioc.writer_executor, func, *args)

    # --- downloads by the IOC ----------------------------------------------------------------

    async def _download_loop(self) -> None:
        """About 10 Hz: with DataSource FileWriter, parse each new data file into arrays for
        HDF1 and the plugins; while SaveFiles is Enable, download what the DCU made available."""
        while True:
            await asyncio.sleep(DOWNLOAD_POLL)
            for series in [*self._downloads, *([self.series] if self.series else [])]:
                try:
                    await self._serve(series)
                except Exception as err:  # the loop must outlive one bad file
                    log.exception("DCU series %s", series.name)
                    await self.cam.report_error(f"series {series.name}: internal error {err!r}")
                    series.ready.clear()
                    series.to_parse.clear()
                # A file closed at disarm while this series was served waits for the next turn.
                done = series.closed and not series.ready and not series.to_parse
                if done and series in self._downloads:
                    self._downloads.remove(series)
                    series.downloaded.set()

    async def _serve(self, series: DcuSeries) -> None:
        """Parse and download what of ``series`` is ready."""
        while series.to_parse:
            await self._parse(series, series.to_parse.popleft())
        if self.cam.SaveFiles.value != "Enable":
            if series.closed:
                series.ready.clear()  # not saved: it stays on the DCU only
            return
        while series.ready:
            await self._download(series, series.ready[0])
            series.ready.popleft()

    async def _parse(self, series: DcuSeries, number: int) -> None:
        """The frames of data file ``number`` as the driver parses them: arrays to the plugins."""
        if self.cam.DataSource.value != "FileWriter" or series.base is None:
            return
        per_file = series.writer.frames_per_file
        first = (number - 1) * per_file
        last = min(number * per_file, series.writer.n_frames)
        indices = range(series.base + first, series.base + last)
        await self.cam.send_arrays(series.settings, indices, series.frames)
        await self.ioc.hdf.flush_counters()  # a file at a time: NumCaptured shows each

    async def _download(self, series: DcuSeries, source: Path) -> None:
        cam = self.cam
        try:
            directory = self.ioc.roots.prepare_directory(cam.FilePath.value,
                                                        cam.CreateDirectory.value)
            await cam.FullFileName_RBV.write(str(directory / source.name))  # as saveTask
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._download_executor, self._copy, source,
                                                     directory)
        except (OSError, PathRefused) as err:
            series.download_failed = True
            await cam.report_error(f"download of {source.name} from the DCU failed: {err}; it "
                                   "stays on the DCU (fix cam1:FilePath and download again)")
            return
        if cam.FWAutoRemove.value == "Enable":
            source.unlink(missing_ok=True)
            await cam.FWFree_RBV.write(self.free_gb())

    def _copy(self, source: Path, directory: Path) -> Path:
        """Copy one file into ``directory`` (held open, never over an existing file)."""
        cam = self.cam
        fd = self.ioc.roots.open_directory(directory)
        try:
            with open(source, "rb") as src, open(f"/proc/self/fd/{fd}/{source.name}", "xb") as dst:
                # In the kernel, one call a GB: a copy loop in Python waited for the GIL at
                # each chunk while the plugins ran (0.5 s a data file instead of 0.14 s).
                while os.sendfile(dst.fileno(), src.fileno(), None, 1 << 30):
                    pass
                perms = int(cam.FilePerms.value)
                if 0 < perms <= 777:
                    os.fchmod(dst.fileno(), int(str(perms), 8))
                owner, group = cam.FileOwner.value, cam.FileOwnerGrp.value
                if owner or group:
                    with contextlib.suppress(KeyError, PermissionError):
                        os.fchown(dst.fileno(), pwd.getpwnam(owner).pw_uid if owner else -1,
                                  grp.getgrnam(group).gr_gid if group else -1)
        finally:
            os.close(fd)
        return directory / source.name

