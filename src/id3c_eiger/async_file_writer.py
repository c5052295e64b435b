"""The FileWriter source of the ophyd-async EIGER2: two small logics and a stream provider.

``FileWriterDataLogic`` stages the DCU's series (unique ``FWNamePattern`` with ``$id``,
``SaveFiles`` into the write path) and counts the frames whose data files have reached the read
path: that count is what a point or a fly scan waits for. ``FileWriterAcquireLogic`` arms once
per series: a step scan's points are ``cam1:Trigger`` pulses of one arm (``ManualTrigger``), a
fly scan is one arm; either ends when the master, downloaded last, is at the read path.
``DownloadedSeriesStream`` records that master, whose name is known only once the detector has
armed (the DCU replaces ``$id`` by ``SequenceId``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bluesky.protocols import StreamAsset
from event_model import DataKey
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    EnableDisable,
    SignalRW,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StrictEnum,
    soft_signal_rw,
    wait_for_value,
)
from ophyd_async.epics.adcore import NDArrayDescription, NDPluginBaseIO
from ophyd_async.epics.adcore._data_logic import get_ndarray_resource_info

from .file_writer import DOWNLOAD_TIMEOUT, POLL, DownloadedSeries, unique_name_pattern
from .layout import DATA_DATASET, FIRST_THRESHOLD
from .paths import TemplatePathProvider, WritePathError

if TYPE_CHECKING:
    from .async_devices import Eiger2DriverIO

HDF5_MIMETYPE = "application/x-hdf5"
PLUGIN_TIMEOUT = 10.0  # s: an enabled plugin has a point's last array this long after its file
WATCHER_STOP_TIMEOUT = 1.0  # s: a cancelled download watcher ends within one file-system poll


class PluginTimeout(TimeoutError):
    """An enabled plugin did not process a point's arrays in time."""


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
    """The frames of one FileWriter series, recorded by its master's read path once armed."""

    def __init__(self, logic: FileWriterDataLogic, resources: list[Any]) -> None:
        super().__init__(uri=logic.directory_uri, resources=resources, mimetype=HDF5_MIMETYPE,
                         collections_written_signal=logic.frames_downloaded)
        self._logic = logic

    async def make_stream_docs(self, collections_written: int,
                               collections_per_event: int) -> AsyncIterator[StreamAsset]:
        if not self.last_emitted and collections_written:  # the first: the series is armed
            StreamResourceDataProvider.__init__(
                self, uri=self._logic.master_uri(), resources=self.resources,
                mimetype=HDF5_MIMETYPE, collections_written_signal=self.collections_written_signal)
        async for doc in super().make_stream_docs(collections_written, collections_per_event):
            yield doc


@dataclass
class FileWriterDataLogic(DetectorDataLogic):
    """The DCU's FileWriter, downloaded by the IOC into the write path, counted at the read path."""

    driver: Eiger2DriverIO
    path_provider: TemplatePathProvider
    array_description: NDArrayDescription
    datakey_suffix: str = ""
    frames_downloaded: SignalRW[int] = field(default_factory=lambda: soft_signal_rw(int))
    expected: int = 0  # frames the series will have (a fly scan's count; a step's so far)
    series: DownloadedSeries | None = None
    master_frames: int | None = None  # frames the downloaded master reaches, once it is there
    _pattern: str = ""
    _watcher: asyncio.Task | None = None

    @property
    def directory_uri(self) -> str:
        """The read directory as a URI (the master's name comes at arm)."""
        return "file://localhost" + quote(self.path_provider.last.read)

    def master_uri(self) -> str:
        """The master of the armed series at the read path, as a URI."""
        if self.series is None:
            raise RuntimeError("the FileWriter series has not started: arm the detector first")
        return "file://localhost" + quote(str(self.series.master))

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
        self.series = DownloadedSeries.armed(self.path_provider.last.read, self._pattern,
                                             sequence_id, per_file)
        self.master_frames = None
        await self._stop_watcher()
        self._watcher = asyncio.create_task(self._watch(self.series))

    async def _watch(self, series: DownloadedSeries) -> None:
        """Post the frames found at the read path as data files land (about every 10 ms), until
        the series is no longer the one watched (a stop, or the next arm)."""
        while self.series is series and self._watcher is not None:
            found = await asyncio.to_thread(series.frames_downloaded, self.expected)
            if found != await self.frames_downloaded.get_value():
                await self.frames_downloaded.set(found)
            await asyncio.sleep(POLL)

    async def wait_for_master(self, timeout: float = DOWNLOAD_TIMEOUT) -> int:
        """Wait until the master (downloaded last) is at the read path; its frame count. Nothing
        to wait for when no data file of the series ever arrived."""
        series = self.series
        if series is None or not await self.frames_downloaded.get_value():
            return 0
        self.master_frames = await asyncio.to_thread(series.wait_for_master, timeout)
        return self.master_frames

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
    """One arm per series: ``manual`` (a step scan) sends ``cam1:Trigger`` per point and stays
    armed until unstage; otherwise the arm is the whole acquisition (a fly scan). A step's point
    also waits for the enabled ``plugins`` to have its last array (nothing else waits for them
    while the detector stays armed)."""

    inner: DetectorAcquireLogic  # arms (Acquire until Armed) and waits for Idle
    driver: Eiger2DriverIO
    data: FileWriterDataLogic
    plugins: tuple[NDPluginBaseIO, ...] = ()
    manual: bool = False
    armed: bool = False
    _array_base: int = 0  # cam1:ArrayCounter_RBV at the arm: arrays are numbered on from it

    async def start_acquiring(self) -> None:
        if not self.armed:
            await self.inner.start_acquiring()
            self.armed = True
            self._array_base = await self.driver.array_counter.get_value(cached=False)
            await self.data.series_started()
        if self.manual:
            await self.driver.software_trigger.set(1.0)

    async def _wait_for_plugins(self) -> None:
        last = self._array_base + await self.data.frames_downloaded.get_value()
        enabled = await asyncio.gather(*(p.enable_callbacks.get_value() for p in self.plugins))
        for plugin, state in zip(self.plugins, enabled, strict=True):
            if state != EnableDisable.ENABLE:
                continue
            try:
                await wait_for_value(plugin.unique_id, lambda uid, last=last: uid >= last,
                                     timeout=PLUGIN_TIMEOUT)
            except TimeoutError as err:
                raise PluginTimeout(
                    f"{plugin.unique_id.source} did not reach array {last} in "
                    f"{PLUGIN_TIMEOUT:g} s after the point's file: the plugin is stalled or "
                    "dropping arrays (see its DroppedArrays_RBV); set BlockingCallbacks Yes "
                    "or disable it") from err

    async def wait_for_idle(self) -> None:
        if self.manual:
            await self._wait_for_plugins()
            return  # still armed for the next point
        await self.inner.wait_for_idle()
        self.armed = False
        await self.data.wait_for_master()

    async def ensure_stopped(self) -> None:
        await self.inner.ensure_stopped()
        if self.armed:
            self.armed = False
            await self.data.wait_for_master()
