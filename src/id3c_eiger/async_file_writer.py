"""The FileWriter source of the ophyd-async EIGER2: two small logics and a stream provider.

``FileWriterDataLogic`` stages the DCU's series (unique ``FWNamePattern`` with ``$id``,
``SaveFiles`` into the write path) and counts the frames whose files have reached the read path,
over every series of the stage: that count is what a point or a fly scan waits for.
``FileWriterAcquireLogic`` names each arm's series by its sequence id and, once the IOC ends the
acquisition (after downloading every file), waits for the files at the read path. Each arm is a
series: a step scan's point, or a whole fly scan. ``DownloadedSeriesStream`` records each series'
master as a stream resource of its own, whose name is known only once the detector has armed
(the DCU replaces ``$id`` by ``SequenceId``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bluesky.protocols import StreamAsset
from event_model import DataKey, StreamRange
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    EnableDisable,
    SignalRW,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StrictEnum,
    soft_signal_rw,
)
from ophyd_async.epics.adcore import NDArrayDescription
from ophyd_async.epics.adcore._data_logic import get_ndarray_resource_info

from .file_writer import DOWNLOAD_TIMEOUT, POLL, DownloadedSeries, unique_name_pattern
from .layout import DATA_DATASET, FIRST_THRESHOLD
from .paths import TemplatePathProvider, WritePathError

if TYPE_CHECKING:
    from .async_devices import Eiger2DriverIO

HDF5_MIMETYPE = "application/x-hdf5"
WATCHER_STOP_TIMEOUT = 1.0  # s: a cancelled download watcher ends within one file-system poll


def file_uri(path: str | Path) -> str:
    """A read path as the URI a stream resource records."""
    return "file://localhost" + quote(str(path))


class FWHDF5Format(StrictEnum):
    """``cam1:FWHDF5Format``: how the DCU's master reaches the frames."""

    LEGACY = "Legacy"
    V2024_2 = "v2024.2"


class FrameStream(StreamResourceDataProvider):
    """Stream resources whose events hold one frame as (H, W), as the classic device's do, so
    Tiled shows (N, H, W); n frames per event stay (n, H, W)."""

    async def make_datakeys(self, collections_per_event: int) -> dict[str, DataKey]:
        keys = await super().make_datakeys(collections_per_event)
        if collections_per_event == 1:
            for key in keys.values():
                if len(key["shape"]) > 2:
                    key["shape"] = key["shape"][1:]
        return keys


class DownloadedSeriesStream(FrameStream):
    """The frames of a stage's FileWriter series, a stream resource per series (its master at
    the read path), each indexing its own frames from 0."""

    def __init__(self, logic: FileWriterDataLogic, resources: list[Any]) -> None:
        super().__init__(uri=logic.directory_uri, resources=resources, mimetype=HDF5_MIMETYPE,
                         collections_written_signal=logic.frames_downloaded)
        self._logic = logic
        self._series_emitted: int | None = None  # the series whose resource was emitted last

    async def make_stream_docs(self, collections_written: int,
                               collections_per_event: int) -> AsyncIterator[StreamAsset]:
        events = collections_written // collections_per_event
        starts = self._logic.series_starts
        while self.last_emitted < events:
            number = max(i for i, (first, _) in enumerate(starts)
                         if first // collections_per_event <= self.last_emitted)
            first = starts[number][0] // collections_per_event
            end = (starts[number + 1][0] // collections_per_event if number + 1 < len(starts)
                   else events)
            stop = min(events, end)
            if number != self._series_emitted:  # a new series: its master, a new resource
                self._series_emitted = number
                emitted = self.last_emitted  # (the base class starts its count at 0)
                StreamResourceDataProvider.__init__(
                    self, uri=file_uri(starts[number][1].master), resources=self.resources,
                    mimetype=HDF5_MIMETYPE,
                    collections_written_signal=self.collections_written_signal)
                self.last_emitted = emitted
                for bundle in self.bundles:
                    yield "stream_resource", bundle.stream_resource_doc
            indices: StreamRange = {"start": self.last_emitted - first, "stop": stop - first}
            self.last_emitted = stop
            for bundle in self.bundles:
                yield "stream_datum", bundle.compose_stream_datum(indices)


@dataclass
class FileWriterDataLogic(DetectorDataLogic):
    """The DCU's FileWriter, downloaded by the IOC into the write path, counted at the read path."""

    driver: Eiger2DriverIO
    path_provider: TemplatePathProvider
    array_description: NDArrayDescription
    datakey_suffix: str = ""
    frames_downloaded: SignalRW[int] = field(default_factory=lambda: soft_signal_rw(int))
    frames_per_series: int = 0  # frames an arm asks: a step's point, or the fly scan's count
    series: DownloadedSeries | None = None  # the series of the last arm
    series_starts: list[tuple[int, DownloadedSeries]] = field(default_factory=list)
    _pattern: str = ""
    _watcher: asyncio.Task | None = None

    @property
    def directory_uri(self) -> str:
        """The read directory as a URI (each master's name comes at its arm)."""
        return file_uri(self.path_provider.last.read)

    @property
    def frames_before(self) -> int:
        """Frames of the stage's series before the last one (each had all its frames)."""
        return self.series_starts[-1][0] if self.series_starts else 0

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        driver = self.driver
        paths = self.path_provider.last = self.path_provider.templates.expand()
        await driver.create_directory.set(self.path_provider.create_directory_depth)
        await driver.file_path.set(paths.write)
        if not await driver.file_path_exists.get_value(cached=False):
            message = await driver.status_message.get_value(cached=False)
            raise WritePathError.refused(paths, self.path_provider.templates.write, message)
        paths.check_readable()
        self._pattern = unique_name_pattern()
        await asyncio.gather(
            driver.fw_name_pattern.set(self._pattern),
            driver.fw_enable.set(EnableDisable.ENABLE),
            driver.save_files.set(EnableDisable.ENABLE),
            driver.fw_hdf5_format.set(FWHDF5Format.V2024_2),
            driver.fw_compression.set(EnableDisable.ENABLE),
            self.frames_downloaded.set(0),
        )
        self.series = None
        self.series_starts = []
        info = await get_ndarray_resource_info(
            array_description=self.array_description, data_key=datakey_name,
            parameters={"dataset": DATA_DATASET, "slice": FIRST_THRESHOLD},
            frames_per_chunk=1)
        return DownloadedSeriesStream(self, [info])

    async def series_started(self) -> None:
        """The detector armed: name the series by its sequence id and count its downloads."""
        sequence_id, per_file = await asyncio.gather(
            self.driver.sequence_id.get_value(cached=False),
            self.driver.fw_nimages_per_file.get_value(cached=False))
        before = (await self.frames_downloaded.get_value()) if self.series_starts else 0
        series = self.series = DownloadedSeries.armed(self.path_provider.last.read,
                                                      self._pattern, sequence_id, per_file)
        self.series_starts.append((before, series))
        await self._stop_watcher()
        self._watcher = asyncio.create_task(self._watch(series, before))

    async def _watch(self, series: DownloadedSeries, before: int) -> None:
        """Post the frames found at the read path as files land (about every 10 ms), until the
        series is no longer the one watched (a stop, or the next arm)."""
        while self.series is series and self._watcher is not None:
            found = before + await asyncio.to_thread(series.frames_downloaded,
                                                     self.frames_per_series)
            if found != await self.frames_downloaded.get_value():
                await self.frames_downloaded.set(found)
            await asyncio.sleep(POLL)

    async def series_ended(self, frames: int, timeout: float = DOWNLOAD_TIMEOUT) -> None:
        """The IOC ended the acquisition (every file downloaded): wait until the master and the
        data files of the series' ``frames`` show at the read path, then count them."""
        series = self.series
        await self._stop_watcher()
        if series is None or not frames:
            return
        await asyncio.to_thread(series.wait_for_files, frames, timeout)
        await self.frames_downloaded.set(self.frames_before + frames)

    async def _stop_watcher(self) -> None:
        """Cancel the watcher and wait (bounded) for it to end, so none outlives its series."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.wait([watcher], timeout=WATCHER_STOP_TIMEOUT)

    async def stop(self) -> None:
        await self._stop_watcher()


@dataclass
class FileWriterAcquireLogic(DetectorAcquireLogic):
    """Each arm a series: started by ``inner`` (Acquire until Armed), named by its sequence id;
    once the IOC is idle (every file downloaded), done when its files show at the read path."""

    inner: DetectorAcquireLogic  # arms (Acquire until Armed) and waits for Idle
    driver: Eiger2DriverIO
    data: FileWriterDataLogic
    armed: bool = False

    async def start_acquiring(self) -> None:
        await self.inner.start_acquiring()
        self.armed = True
        await self.data.series_started()

    async def _ended(self) -> None:
        """The arm is over: its frames (as the camera counted them) at the read path."""
        if self.armed:
            self.armed = False
            frames = await self.driver.num_images_counter.get_value(cached=False)
            await self.data.series_ended(min(frames, self.data.frames_per_series))

    async def wait_for_idle(self) -> None:
        await self.inner.wait_for_idle()
        await self._ended()

    async def ensure_stopped(self) -> None:
        await self.inner.ensure_stopped()
        await self._ended()
