"""The EIGER2 500K for ophyd-async: step scans, and fly scans of thousands of frames per arm.

``Eiger2Detector`` is an ophyd-async ``AreaDetector``: ``Eiger2DriverIO`` declares the ADEiger
PVs it uses (enum strings as the IOC serves them), and behaviour lives in three small logics:
trigger (Internal Series, External Series, External Enable/Gate), acquire (arm, wait for idle,
with timeouts) and data (HDF1 writing ``<uuid>.h5`` where the write path template
points, recorded by the read path template, as the classic ``id3c_eiger.devices`` device does).
Its keyword arguments are the classic device's, so a devices file switches flavour in one line.
Each step-scan point also reads the commonPlugins' numbers (Stats1 total of the frame, Stats2 net
of ROI1's region) through ophyd-async's ``PluginSignalDataLogic``, hinted for LiveTable and plots;
for a point of several frames, those of its last frame, as NDStats reports them.
Every point, every fly scan and unstage check the IOC's own account (``health``): a write error
or a detector error ends the wait at once with the IOC's message, a dead IOC is named, and unstage
never hides the first cause.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated as A
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from aioca import Subscription, camonitor
from bluesky.protocols import Hints, Reading
from bluesky.utils import NoReplayAllowed
from ophyd_async.core import (
    AsyncStatus,
    DetectorTrigger,
    DetectorTriggerLogic,
    EnableDisable,
    NotConnectedError,
    ReadableDataProvider,
    SignalDict,
    SignalR,
    SignalRW,
    StandardDetector,
    StreamableDataProvider,
    StrictEnum,
    TriggerInfo,
    WatchableAsyncStatus,
    WatcherUpdate,
    derived_signal_r,
    error_if_none,
    observe_value,
    wait_for_value,
)
from ophyd_async.epics.adcore import (
    NDROIIO,
    ADAcquireLogic,
    ADBaseDataType,
    ADBaseIO,
    ADCompression,
    ADHDFDataLogic,
    ADState,
    AreaDetector,
    NDArrayDescription,
    NDFileHDF5IO,
    NDStatsIO,
    PluginSignalDataLogic,
)
from ophyd_async.epics.core import PvSuffix

from .async_file_writer import (
    FileWriterAcquireLogic,
    FileWriterDataLogic,
    FrameStream,
    FWHDF5Format,
)
from .file_writer import FileSource, check_file_source
from .geometry import (
    DATA_TYPE_BY_BITS,
    EIGER2_500K,
    DetectorModel,
    Roi,
    TimingError,
    check_images_per_point,
    check_roi,
)
from .health import (
    HEALTH_TIMEOUT,
    RECONNECT_TIMEOUT,
    DetectorError,
    DetectorNotResponding,
    HealthReading,
    arm_ended,
    arm_refused,
    check,
    check_errors,
    not_responding,
)
from .layout import check_compression
from .paths import (
    READ_PATH_GRACE,
    PathTemplates,
    ReadPathError,
    TemplatePathProvider,
    WritePathError,
)
from .point_counters import ARMED_TRIGGERS

IDLE_TIMEOUT = 10.0  # s: after the last frame, the detector must report Idle within this
UNSTAGE_TIMEOUT = 15.0  # s: stopping the capture and the detector (and the last download)
FLY_FRAMES_PER_FILE = 1000  # FWNImagesPerFile of a fly scan's series (DECTRIS' default)
DATA_KEY_SUFFIX = "_image"  # data key <name>_image, as the classic device's

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _ignore(value: Any) -> None:
    """A subscriber that keeps a signal monitored."""


class Eiger2TriggerMode(StrictEnum):
    """``cam1:TriggerMode`` of an EIGER2 ADEiger IOC."""

    INTERNAL_SERIES = "Internal Series"
    INTERNAL_ENABLE = "Internal Enable"
    EXTERNAL_SERIES = "External Series"
    EXTERNAL_ENABLE = "External Enable"
    CONTINUOUS = "Continuous"
    EXTERNAL_GATE = "External Gate"


LEVEL_MODES = (Eiger2TriggerMode.EXTERNAL_ENABLE, Eiger2TriggerMode.EXTERNAL_GATE)


class AcquisitionTimeout(TimeoutError):
    """The detector stopped producing frames, or did not return to Idle, in time."""


class FlyScanInterrupted(RuntimeError):
    """A pause (one Ctrl-C, ``RE.pause``) stopped a fly scan; the frames so far are kept."""


class Eiger2DataSource(StrictEnum):
    """``cam1:DataSource``: where the IOC's arrays come from."""

    NONE = "None"
    FILE_WRITER = "FileWriter"
    STREAM = "Stream"


class Eiger2DriverIO(ADBaseIO):
    """``cam1:`` of an ADEiger IOC for an EIGER2: ADBase plus the eigerBase records used here."""

    trigger_mode: A[SignalRW[Eiger2TriggerMode], PvSuffix.rbv("TriggerMode")]
    manual_trigger: A[SignalRW[EnableDisable], PvSuffix.rbv("ManualTrigger")]
    num_triggers: A[SignalRW[int], PvSuffix.rbv("NumTriggers")]
    software_trigger: A[SignalRW[float], PvSuffix("Trigger")]  # value: gate (s) in Enable modes
    armed: A[SignalR[bool], PvSuffix("Armed")]
    num_images_counter: A[SignalR[int], PvSuffix("NumImagesCounter_RBV")]
    bit_depth_image: A[SignalR[int], PvSuffix("BitDepthImage_RBV")]
    dead_time: A[SignalR[float], PvSuffix("DeadTime_RBV")]
    photon_energy: A[SignalRW[float], PvSuffix.rbv("PhotonEnergy")]
    status_message: A[SignalR[str], PvSuffix("StatusMessage_RBV")]
    fw_enable: A[SignalRW[EnableDisable], PvSuffix.rbv("FWEnable")]
    data_source: A[SignalRW[Eiger2DataSource], PvSuffix.rbv("DataSource")]
    # The FileWriter source: the DCU's series, downloaded by the IOC into FilePath.
    file_path: A[SignalRW[str], PvSuffix.rbv("FilePath")]
    file_path_exists: A[SignalR[bool], PvSuffix("FilePathExists_RBV")]
    create_directory: A[SignalRW[int], PvSuffix.rbv("CreateDirectory")]
    fw_name_pattern: A[SignalRW[str], PvSuffix.rbv("FWNamePattern")]
    fw_nimages_per_file: A[SignalRW[int], PvSuffix.rbv("FWNImagesPerFile")]
    fw_hdf5_format: A[SignalRW[FWHDF5Format], PvSuffix.rbv("FWHDF5Format")]
    fw_compression: A[SignalRW[EnableDisable], PvSuffix.rbv("FWCompression")]
    fw_state: A[SignalR[str], PvSuffix("FWState_RBV")]
    save_files: A[SignalRW[EnableDisable], PvSuffix.rbv("SaveFiles")]
    sequence_id: A[SignalR[int], PvSuffix("SequenceId")]


class Eiger2HDF5IO(NDFileHDF5IO):
    """``HDF1:``, with the write status and message, the frames dropped before it, and whether
    it stores the camera's NDAttributes with each frame."""

    store_attr: A[SignalRW[bool], PvSuffix.rbv("StoreAttr")]
    write_status: A[SignalR[str], PvSuffix("WriteStatus")]
    write_message: A[SignalR[str], PvSuffix("WriteMessage")]
    dropped_arrays: A[SignalR[int], PvSuffix("DroppedArrays_RBV")]


class Eiger2ROIIO(NDROIIO):
    """``ROI1:``: ophyd-async's NDROIIO plus where the region starts and whether it is cut."""

    min_x: A[SignalRW[int], PvSuffix.rbv("MinX")]
    min_y: A[SignalRW[int], PvSuffix.rbv("MinY")]
    enable_x: A[SignalRW[EnableDisable], PvSuffix.rbv("EnableX")]
    enable_y: A[SignalRW[EnableDisable], PvSuffix.rbv("EnableY")]


class Eiger2StatsIO(NDStatsIO):
    """``Stats1:``/``Stats2:``: ophyd-async's NDStatsIO plus the background-subtracted total."""

    net: A[SignalR[float], PvSuffix("Net_RBV")]


def _image_data_type(bits: int) -> ADBaseDataType:
    """The frames' type from ``BitDepthImage_RBV``: the camera's ``DataType_RBV`` is disabled
    on EIGER2 IOCs, and the type follows the timing (UInt8/16/32)."""
    return ADBaseDataType(DATA_TYPE_BY_BITS.get(bits, ""))


@dataclass
class Eiger2TriggerLogic(DetectorTriggerLogic):
    """Trigger modes of the EIGER2 as ophyd-async's internal, edge and level triggers."""

    driver: Eiger2DriverIO
    level_mode: Eiger2TriggerMode = Eiger2TriggerMode.EXTERNAL_ENABLE
    points_per_arm: bool = False  # internal triggers: armed once, a manual trigger per point

    def config_sigs(self) -> set[SignalR]:
        return {self.driver.dead_time}

    def get_deadtime(self, config_values: SignalDict) -> float:
        return config_values[self.driver.dead_time]

    async def _set_timing(self, livetime: float, deadtime: float) -> None:
        # AcquireTime first: the IOC stretches the period to fit it, then takes the period.
        if livetime:
            await self.driver.acquire_time.set(livetime)
            dead = deadtime or await self.driver.dead_time.get_value()
            await self.driver.acquire_period.set(livetime + dead)

    async def _set_mode(self, mode: Eiger2TriggerMode, triggers: int, images: int,
                        manual: bool = False) -> None:
        await asyncio.gather(
            self.driver.trigger_mode.set(mode),
            self.driver.manual_trigger.set(EnableDisable.ENABLE if manual else EnableDisable.DISABLE),
            self.driver.num_triggers.set(triggers),
            self.driver.num_images.set(images),
        )

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        if self.points_per_arm:  # ``num`` frames at each cam1:Trigger
            await self._set_mode(Eiger2TriggerMode.INTERNAL_SERIES, ARMED_TRIGGERS, num, True)
        else:
            await self._set_mode(Eiger2TriggerMode.INTERNAL_SERIES, 1, num)
        await self._set_timing(livetime, deadtime)

    async def prepare_edge(self, num: int, livetime: float) -> None:
        await self._set_mode(Eiger2TriggerMode.EXTERNAL_SERIES, num, 1)
        await self._set_timing(livetime, 0.0)

    async def prepare_level(self, num: int) -> None:
        await self._set_mode(self.level_mode, num, 1)


class Eiger2AcquireLogic(ADAcquireLogic):
    """Arm by ``Acquire`` until ``Armed`` (an arm the detector refuses ends the wait at once,
    with its message); the wait for Idle after the last frame is bounded."""

    async def start_acquiring(self) -> None:
        arming = asyncio.ensure_future(super().start_acquiring())
        refused = asyncio.ensure_future(self._refused())
        try:
            await asyncio.wait({arming, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if not arming.done():
            arming.cancel()
            await asyncio.gather(arming, return_exceptions=True)
            message = await self.driver.status_message.get_value(cached=False)
            raise arm_refused(self.driver.acquire.source, message)
        arming.result()

    async def _refused(self) -> None:
        """Returns once the detector goes to Error after this arm began (an Error left from
        before, seen first, does not count)."""
        began = False
        async for state in observe_value(self.driver.detector_state):
            if state == ADState.ERROR and began:
                return
            began = began or state != ADState.ERROR

    async def wait_for_idle(self) -> None:
        try:
            await asyncio.wait_for(super().wait_for_idle(), IDLE_TIMEOUT)
        except TimeoutError as err:
            state = await self.driver.detector_state.get_value()
            raise AcquisitionTimeout(
                f"{self.driver.acquire.source}: every frame arrived but the detector is still "
                f"{state.value!r} after {IDLE_TIMEOUT:g} s; stop it with Acquire=Done and check "
                "cam1:StatusMessage_RBV"
            ) from err


@dataclass
class Eiger2HDFDataLogic(ADHDFDataLogic):
    """HDF1 writing one NDFileHDF5 file per prepare, checked on both sides of the share."""

    path_provider: TemplatePathProvider
    writer: Eiger2HDF5IO
    compression: ADCompression = ADCompression.BSLZ4
    read_file: Path | None = None  # the file of the last prepare, where this host reads it

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        await asyncio.gather(self.writer.compression.set(self.compression),
                             self.writer.store_attr.set(True))
        try:
            provider = await super().prepare_unbounded(datakey_name)
        except FileNotFoundError as err:  # the IOC says FilePathExists_RBV is No
            message = await self.writer.write_message.get_value()
            raise WritePathError.refused(
                self.path_provider.last, self.path_provider.templates.write, message
            ) from err
        try:
            self.path_provider.last.check_readable()
        except ReadPathError:
            await self.stop()
            raise
        self.read_file = Path(unquote(urlparse(provider.uri).path))
        return FrameStream(
            uri=provider.uri,
            resources=provider.resources,
            mimetype=provider.bundles[0].stream_resource_doc["mimetype"],
            collections_written_signal=provider.collections_written_signal,
            flush_signal=provider.flush_signal,
        )


class Eiger2Detector(AreaDetector[Eiger2DriverIO]):
    """The EIGER2 500K (``cam1:``, ``hdf1`` = ``HDF1:``) for ophyd-async; data key ``<name>_image``.

    Step scans take ``images_per_point`` frames per trigger; fly scans take
    ``prepare(TriggerInfo(number_of_events=..., livetime=..., trigger=...))``. Internal triggers
    are Internal Series; edge triggers External Series (one frame per trigger); level triggers
    ``level_trigger_mode`` (External Enable or External Gate). Frame periods below the 16-bit
    limit (0.45 ms) are refused unless ``allow_8bit``. Frames are stored with ``compression``.
    """

    def __init__(
        self,
        prefix: str,
        *,
        name: str,
        write_path_template: str,
        read_path_template: str | None = None,
        images_per_point: int = 1,
        create_directory_depth: int = -3,
        labels: list[str] | None = None,
        allow_8bit: bool = False,
        level_trigger_mode: str = Eiger2TriggerMode.EXTERNAL_ENABLE.value,
        compression: str = "BSLZ4",
        roi: list[int] | None = None,
        file_source: str = FileSource.HDF5_PLUGIN.value,
    ) -> None:
        check_images_per_point(images_per_point)
        self.roi: Roi | None = None if roi is None else check_roi(roi, EIGER2_500K)
        self.file_source = check_file_source(file_source)
        if level_trigger_mode not in LEVEL_MODES:
            raise ValueError(
                f"level_trigger_mode {level_trigger_mode!r} is not a level trigger mode of the "
                f"EIGER2; use one of: {', '.join(m.value for m in LEVEL_MODES)}"
            )
        check_compression(compression)
        self.model: DetectorModel = EIGER2_500K
        self.images_per_point = images_per_point
        self.allow_8bit = allow_8bit
        self.path_provider = TemplatePathProvider(
            PathTemplates(write_path_template, read_path_template), create_directory_depth
        )
        driver = Eiger2DriverIO(prefix + "cam1:")
        self.hdf1 = Eiger2HDF5IO(prefix + "HDF1:")
        self.image_data_type = derived_signal_r(_image_data_type, bits=driver.bit_depth_image)
        array_description = NDArrayDescription(
            shape_signals=[driver.array_size_y, driver.array_size_x],
            data_type_signal=self.image_data_type,
            color_mode_signal=driver.color_mode,
        )
        plugins = {"roi1": Eiger2ROIIO(prefix + "ROI1:"),
                   "stats1": Eiger2StatsIO(prefix + "Stats1:"),
                   "stats2": Eiger2StatsIO(prefix + "Stats2:")}
        arm = Eiger2AcquireLogic(driver, driver_armed_signal=driver.armed)
        self.file_writer: FileWriterDataLogic | None = None
        self._hdf_logic: Eiger2HDFDataLogic | None = None
        self._file_seen = False  # the stage's HDF1 file has shown at the read path
        if self.file_source is FileSource.FILE_WRITER:
            self.file_writer = FileWriterDataLogic(driver, self.path_provider, array_description,
                                                   datakey_suffix=DATA_KEY_SUFFIX)
            arm = FileWriterAcquireLogic(arm, driver, self.file_writer)
            data_logic = self.file_writer
        else:
            data_logic = self._hdf_logic = Eiger2HDFDataLogic(
                array_description=array_description,
                path_provider=self.path_provider,
                writer=self.hdf1,
                driver=driver,
                datakey_suffix=DATA_KEY_SUFFIX,
                compression=ADCompression(compression),
            )
        self._triggering = Eiger2TriggerLogic(driver, Eiger2TriggerMode(level_trigger_mode))
        super().__init__(
            driver,
            acquire_logic=arm,
            trigger_logic=self._triggering,
            plugins=plugins,
            config_sigs=(driver.trigger_mode, driver.bit_depth_image, driver.photon_energy),
            name=name,
        )
        # Read at step-scan points by this class, not the base (which reads plugin signals only
        # at one-frame points): see _update_prepare_context.
        self._point_numbers = (
            PluginSignalDataLogic(driver, self.stats1.total),
            PluginSignalDataLogic(driver, self.stats2.net),
            PluginSignalDataLogic(driver, self.stats2.total, hinted=False),
        )
        self._point_providers: list[ReadableDataProvider] = []
        self._point_info: TriggerInfo | None = None  # what the point providers were made for
        # Step scans on the HDF1 source: one arm per stage, a cam1:Trigger per point.
        self._points_per_arm = False
        self._armed_for_points = False
        self._triggers_sent = 0  # of this arm
        self._frames_of_arm = 0
        self._plugin_bases: dict[SignalR[int], int] = {}  # ArrayCounter_RBV at the arm
        self.add_detector_logics(data_logic)
        self._ophyd_labels_ = set(labels or ["detectors"])  # read by guarneri's registry
        self._prefix = prefix
        self._health_signals: tuple[SignalR, ...] = (
            self.hdf1.full_file_name, self.hdf1.num_captured, self.hdf1.write_status,
            self.hdf1.write_message, self.hdf1.dropped_arrays, driver.detector_state,
            driver.status_message,
        )
        self._watchers = {
            self.hdf1.write_status: functools.partial(self._on_health, "Write error"),
            driver.detector_state: functools.partial(self._on_health, ADState.ERROR),
        }
        if self.file_writer is not None:  # the DCU reports its errors in FWState_RBV
            self._watchers[driver.fw_state] = functools.partial(self._on_health, "error")
        self._watchers[driver.armed] = self._on_armed
        # Monitored while staged, so a point reads and waits on them without a round trip.
        self._followed: tuple[SignalR[int], ...] = (
            self.hdf1.num_captured, self.stats1.array_counter, self.stats2.array_counter)
        self._trouble = asyncio.Event()
        self._health_subscribed = False
        self._flying = False  # between kickoff and the end of complete
        self._ioc_away = False  # the IOC stopped answering during the last stage
        self._circuit: Subscription | None = None  # tells, while staged, when the IOC goes away
        self._gone = asyncio.Event()  # set by the circuit: the IOC went away while staged
        self._interrupted = False
        self._failure: BaseException | None = None
        self._frames_confirmed = 0
        self._dropped_at_stage = 0

    # --- health: the IOC's own account; its errors watched by monitors while staged ------

    def _on_health(self, bad: str, reading: dict[str, Reading]) -> None:
        if next(iter(reading.values()))["value"] == bad:
            self._trouble.set()

    def _on_armed(self, reading: dict[str, Reading]) -> None:
        """An arm for points that ends before unstage (a stop from a panel, an error) ends the
        point's wait at once."""
        if self._arm_ended_early() and not next(iter(reading.values()))["value"]:
            self._trouble.set()

    def _arm_ended_early(self) -> bool:
        """Armed for points, with triggers of the arm left (after the last it ends as planned)."""
        return self._armed_for_points and self._triggers_sent < ARMED_TRIGGERS

    def _on_circuit(self, value: Any) -> None:
        """A closed connection ends a wait at once: the IOC is gone, no timeout need pass."""
        if not value.ok:
            self._ioc_away = True
            self._gone.set()
            self._trouble.set()

    async def _unless_gone(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result, or ``DetectorNotResponding`` as soon as the IOC goes away
        (a put or a wait on a closed channel would otherwise run to its own timeout)."""
        step = asyncio.ensure_future(awaitable)
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not step.done():
            # The cause first: the cancelled wait would record its CancelledError as one.
            self._failure = self._failure or self._not_responding(0)
            step.cancel()
            await asyncio.gather(step, return_exceptions=True)
            raise self._failure
        return step.result()

    def _not_responding(self, waited: float) -> Exception:
        self._ioc_away = True  # the next stage waits for every channel to come back
        return not_responding(self.name, self._prefix, waited, "", self._frames_confirmed)

    async def _health(self, expected: int) -> HealthReading:
        """The IOC's account of the capture, read now (not from monitors: aioca 2's first
        monitor value after an IOC restart came 20 s late); ``DetectorNotResponding`` if the IOC
        does not answer."""
        try:
            file, captured, status, message, dropped, state, status_message = await asyncio.wait_for(
                asyncio.gather(*(sig.get_value(cached=False) for sig in self._health_signals)),
                HEALTH_TIMEOUT)
            fw_state = await self.driver.fw_state.get_value() if self.file_writer else ""
        except (TimeoutError, NotConnectedError) as err:
            raise self._not_responding(HEALTH_TIMEOUT) from err
        if (writer := self.file_writer) is not None:  # the DCU's, counted where downloaded
            series = writer.series
            return HealthReading(
                name=self.name, prefix=self._prefix, file=str(series.master) if series else "",
                expected=expected, captured=await writer.frames_downloaded.get_value(),
                write_status="Write error" if fw_state == "error" else "Write OK",
                write_message=status_message, detector_state=str(state.value),
                status_message=status_message, writer_pv="cam1:FWState_RBV",
            )
        return HealthReading(
            name=self.name, prefix=self._prefix, file=file, expected=expected, captured=captured,
            write_status=status, write_message=message, detector_state=str(state.value),
            status_message=status_message, dropped=dropped - self._dropped_at_stage,
        )

    def stage(self) -> AsyncStatus:
        """Stage; this host's mount of the read path is checked first, before any put, so a
        missing one reaches the plan as ``ReadPathError`` itself (a failed status would reach
        it wrapped in bluesky's ``FailedStatus``)."""
        provider = self.path_provider
        provider.templates.check_read_mount(provider.create_directory_depth)
        return self._stage()

    @AsyncStatus.wrap
    async def _stage(self) -> None:
        self._failure = None
        self._frames_confirmed = 0
        self._file_seen = False
        self._armed_for_points = False
        self._trouble.clear()
        self._gone.clear()
        self._unsubscribe_health()  # a stage after a failed one
        self._dropped_at_stage = await self._first_answer()
        for sig, watcher in self._watchers.items():  # an IOC error ends a wait at once
            sig.subscribe_reading(watcher)
        for sig in self._followed:
            sig.subscribe(_ignore)
        self._circuit = camonitor(self._prefix + "cam1:DetectorState_RBV", self._on_circuit,
                                  notify_disconnect=True)
        self._health_subscribed = True
        try:
            await super().stage()
        except BaseException:
            self._unsubscribe_health()
            raise

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        """The region ROI1 cuts for Stats2 (detector pixels), from the next step scan's prepare
        on; ValueError if it is not inside the frame."""
        self.roi = check_roi((x, y, width, height), EIGER2_500K)

    async def _prepare_plugins(self, step: bool) -> None:
        """Arrays as frames are taken (Stream); with the HDF5 plugin source the DCU's FileWriter
        off (it would fill its disk for nobody); for a step scan, Stats1 on the frame, ROI1
        (with ``roi``) and Stats2 on it enabled. A fly scan records frames only and leaves the
        plugins as they are."""
        roi1, stats1, stats2 = self.roi1, self.stats1, self.stats2
        settings = [self.driver.data_source.set(Eiger2DataSource.STREAM)]
        if self.file_writer is None:
            settings.append(self.driver.fw_enable.set(EnableDisable.DISABLE))
        if not step:
            await asyncio.gather(*settings)
            return
        settings += [plugin.enable_callbacks.set(EnableDisable.ENABLE)
                     for plugin in (roi1, stats1, stats2)]
        settings += [stats1.compute_statistics.set(True), stats2.compute_statistics.set(True)]
        if self.roi is not None:
            x, y, width, height = self.roi
            settings += [roi1.enable_x.set(EnableDisable.ENABLE),
                         roi1.enable_y.set(EnableDisable.ENABLE), roi1.min_x.set(x),
                         roi1.min_y.set(y), roi1.size_x.set(width), roi1.size_y.set(height),
                         roi1.bin_x.set(1), roi1.bin_y.set(1)]
        await asyncio.gather(*settings)

    async def _first_answer(self) -> int:
        """``DroppedArrays_RBV``, once every channel answers: after the IOC went away (in the
        last stage, or now) its channels come back one by one in CA's search back-off."""
        if not self._ioc_away:
            try:
                return await self.hdf1.dropped_arrays.get_value(cached=False)
            except TimeoutError:
                pass
        try:
            await self.connect(timeout=RECONNECT_TIMEOUT, force_reconnect=True)
        except NotConnectedError as err:
            raise self._not_responding(RECONNECT_TIMEOUT) from err
        self._ioc_away = False
        return await self.hdf1.dropped_arrays.get_value(cached=False)

    def _unsubscribe_health(self) -> None:
        if self._health_subscribed:
            self._health_subscribed = False
            for sig, watcher in self._watchers.items():
                sig.clear_sub(watcher)
            for sig in self._followed:
                sig.clear_sub(_ignore)
        if self._circuit is not None:
            self._circuit.close()
            self._circuit = None

    # --- pause: a fly scan stops at once, keeping its frames ------------------------------

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        self._interrupted = False
        await self._unless_gone(super().kickoff())
        self._flying = True

    async def stop(self, success: bool = True) -> None:
        """Stop acquiring now (the capture keeps every frame written, and stays open)."""
        try:
            await asyncio.wait_for(self._acquire_logic.ensure_stopped(), UNSTAGE_TIMEOUT)
        except TimeoutError as err:
            raise self._not_responding(UNSTAGE_TIMEOUT) from err

    async def pause(self) -> None:
        """A fly scan cannot resume half-way through an arm: stop the detector now (one Ctrl-C
        or ``RE.pause``); the plan's end then records every frame written. Step scans pause as
        usual (the point is taken again on resume)."""
        if not self._flying:
            return
        self._interrupted = True
        self._trouble.set()
        await self.stop()
        raise NoReplayAllowed(f"{self.name}: the fly scan was stopped by the pause")

    async def resume(self) -> None:
        """Nothing to do: a paused fly scan ends (``FlyScanInterrupted``) when resumed."""

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        """Stop the detector and the capture (bounded), then check every confirmed frame is in
        the file. After a failure, cleanup errors are logged, not raised: the first cause stays."""
        try:
            if self._gone.is_set():  # nothing to stop on an IOC that is gone; forget its arm
                if self.file_writer is not None:
                    await self.file_writer.stop()
                    self._acquire_logic.armed = False
                raise self._failure or self._not_responding(0)
            # An IOC that already stopped answering gets one short try: the first cause is
            # known, and the next stage stops whatever is left once it answers again.
            patience = (HEALTH_TIMEOUT if isinstance(self._failure, DetectorNotResponding)
                        else UNSTAGE_TIMEOUT)
            try:
                await asyncio.wait_for(super().unstage(), patience)
            except TimeoutError as err:
                raise self._not_responding(patience) from err
            if self._failure is None and self._frames_confirmed:
                check(await self._health(self._frames_confirmed))
        except Exception as err:
            if self._failure is None:
                raise
            logger.warning("%s: unstage after %r also failed: %s", self.name, self._failure, err)
        finally:
            self._armed_for_points = False  # unstage stopped it (or the IOC is gone)
            self._unsubscribe_health()

    # --- checks before anything moves ------------------------------------------------------

    async def _check_trigger_info(self, info: TriggerInfo) -> None:
        if info.number_of_events == 0:
            raise TimingError(
                f"{self.name}: number_of_events 0 (run until stopped) is not supported: the "
                "master file needs its frame count; give number_of_events >= 1"
            )
        if info.trigger is DetectorTrigger.EXTERNAL_LEVEL:
            return  # the gate sets the exposure
        if not info.livetime:
            if info.number_of_events > 1:
                raise TimingError(
                    f"{self.name}: livetime 0 for {info.number_of_events} events: a fly scan "
                    "must give the exposure per frame, TriggerInfo(livetime=...) > 0"
                )
            return  # a step: the exposure set on the IOC stays
        deadtime = info.deadtime if info.trigger is DetectorTrigger.INTERNAL else 0.0
        try:
            period = self.model.frame_period(info.livetime, deadtime, self.allow_8bit)
        except TimingError as err:
            raise TimingError(f"{self.name}: {err}") from None
        if self._prepare_ctx is not None:
            bits = self.model.bit_depth(info.livetime, period)
            prepared = await self.driver.bit_depth_image.get_value()
            if bits != prepared:
                raise TimingError(
                    f"{self.name}: livetime {info.livetime:g} s gives {bits}-bit frames, but "
                    f"this stage already records {prepared}-bit frames in one file; unstage "
                    "and stage again (a new run) to change the bit depth"
                )

    @AsyncStatus.wrap
    async def prepare(self, value: TriggerInfo) -> None:
        """Refuse settings the detector cannot do (naming the limit), then set it up."""
        await self._check_trigger_info(value)
        self._trouble.clear()  # an error from before this arm is not this acquisition's
        step = value.number_of_events == 1  # a step-scan point (or a one-event fly scan)
        if self._armed_for_points:  # the arm was made for the settings before this prepare
            await self._disarm_points()
        self._points_per_arm = self._triggering.points_per_arm = (
            step and self.file_writer is None and value.trigger is DetectorTrigger.INTERNAL)
        await self._prepare_plugins(step=step)
        if self.file_writer is not None:
            await self._prepare_file_writer(value, step)
        await super().prepare(value)

    async def _prepare_file_writer(self, value: TriggerInfo, step: bool) -> None:
        """Each arm a series: a step scan's point (one data file), or a whole fly scan
        (``FLY_FRAMES_PER_FILE`` frames per data file)."""
        self.file_writer.frames_per_series = value.number_of_collections
        per_file = value.collections_per_event if step else FLY_FRAMES_PER_FILE
        await self.driver.fw_nimages_per_file.set(per_file)

    async def _update_prepare_context(self, trigger_info: TriggerInfo) -> None:
        """As the base class, plus the Stats numbers at every step-scan point, of one frame or
        of ``images_per_point`` (then of the last, as NDStats reports); none in a fly scan."""
        await super()._update_prepare_context(trigger_info)
        ctx = self._prepare_ctx
        if trigger_info is self._point_info:  # the next point of the same prepare
            return
        kept = [p for p in ctx.readable_data_providers if p not in self._point_providers]
        self._point_providers = []
        if trigger_info.number_of_events == 1:
            self._point_providers = list(await asyncio.gather(
                *(logic.prepare_single(self.name + logic.datakey_suffix)
                  for logic in self._point_numbers)))
        self._point_info = trigger_info
        ctx.readable_data_providers = [*kept, *self._point_providers]

    @property
    def hints(self) -> Hints:
        fields = list(super().hints.get("fields", []))
        for logic in self._point_numbers:
            fields.extend(logic.get_hinted_fields(self.name + logic.datakey_suffix))
        return Hints(fields=fields)

    async def read(self) -> dict[str, Reading]:
        """The point's readings; at the stage's first point first the check that the HDF1 file
        shows at the read path, so a ``ReadPathError`` reaches the plan itself before a second
        point (the FileWriter source's points wait for their downloads there)."""
        if self._hdf_logic is not None and not self._file_seen:
            await self._wait_for_read_file(self._hdf_logic)
            self._file_seen = True
        return await super().read()

    async def _wait_for_read_file(self, logic: Eiger2HDFDataLogic,
                                  timeout: float = READ_PATH_GRACE) -> None:
        path, paths = logic.read_file, self.path_provider.last
        if path is None or paths is None:
            return
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(path.exists):
            if time.monotonic() > deadline:
                written = await self.hdf1.full_file_name.get_value()
                raise ReadPathError.not_shown(written, path, paths.read, paths.write, timeout)
            await asyncio.sleep(0.05)

    @WatchableAsyncStatus.wrap
    async def trigger(self) -> AsyncIterator[WatcherUpdate[int]]:
        """One step-scan point of ``images_per_point`` frames."""
        if self._prepare_ctx is None:
            await self.prepare(TriggerInfo(collections_per_event=self.images_per_point))
        self._trouble.clear()
        updates = (self._armed_point() if self._points_per_arm
                   else StandardDetector.trigger.__wrapped__(self))
        started = time.monotonic()
        try:
            while True:
                try:
                    update = await self._unless_gone(anext(updates))
                except StopAsyncIteration:
                    break
                yield update
        except TimeoutError as err:  # a put or wait the IOC never answered (arm, capture)
            if self._failure is None:
                answers = await self._ioc_answers()
                waited = time.monotonic() - started
                self._failure = err if answers else self._not_responding(waited)
            if self._failure is err:
                raise
            raise self._failure from err
        finally:
            await updates.aclose()

    async def _armed_point(self) -> AsyncIterator[WatcherUpdate[int]]:
        """A point of the stage's arm: one ``cam1:Trigger`` (arming first, or again once an
        arm's triggers are used up); done when HDF1 holds its frames and each enabled Stats
        plugin has taken them."""
        ctx = error_if_none(self._prepare_ctx, "prepare runs before a point")
        await self._update_prepare_context(ctx.trigger_info)
        ctx = self._prepare_ctx
        if self._triggers_sent >= ARMED_TRIGGERS:
            await self._disarm_points()
        if not self._armed_for_points:
            await self._arm_for_points()
        elif not await self.driver.armed.get_value():  # from the monitor: no round trip
            # The arm ended between points (a stop from a panel); a trigger now would be ignored.
            reading = await self._health(ctx.collections_written)
            check_errors(reading)
            raise self._arm_ended_error(reading)
        frames = ctx.trigger_info.collections_per_event
        self._triggers_sent += 1
        self._frames_of_arm += frames
        await self.driver.software_trigger.set(1)
        async for update in self._wait_for_index(
                ctx.streamable_data_providers, ctx.trigger_info, ctx.collections_written, frames,
                wait_for_idle=False):
            yield update
        await asyncio.gather(*(self._plugin_took(counter, base + self._frames_of_arm)
                               for counter, base in self._plugin_bases.items()))

    async def _arm_for_points(self) -> None:
        """Arm for ``ARMED_TRIGGERS`` manual triggers, counting each enabled Stats plugin's
        arrays from now."""
        self._plugin_bases = {}
        for plugin in (self.stats1, self.stats2):
            if await plugin.enable_callbacks.get_value() == EnableDisable.ENABLE:
                counter = plugin.array_counter
                self._plugin_bases[counter] = await counter.get_value(cached=False)
        await self._unless_gone(self._acquire_logic.start_acquiring())
        self._armed_for_points = True
        self._triggers_sent = self._frames_of_arm = 0

    def _arm_ended_error(self, reading: HealthReading) -> DetectorError:
        self._armed_for_points = False
        return arm_ended(self.name, self._prefix, reading.detector_state, reading.captured,
                         reading.file, reading.status_message)

    async def _disarm_points(self) -> None:
        self._armed_for_points = False
        await self.stop()

    async def _plugin_took(self, counter: SignalR[int], target: int) -> None:
        """Returns once a plugin's ``ArrayCounter_RBV`` reaches ``target`` (HDF1 has the frames
        by then; a plugin follows within ``IDLE_TIMEOUT``)."""
        try:
            await wait_for_value(counter, lambda value: value >= target, timeout=IDLE_TIMEOUT)
        except TimeoutError as err:
            value = await counter.get_value(cached=False)
            raise AcquisitionTimeout(
                f"{counter.source}: the plugin took {target - value} arrays fewer than the "
                f"camera sent ({value}, not {target}) within {IDLE_TIMEOUT:g} s of HDF1; "
                "its readings would be of an older frame. Fix: see its DroppedArrays_RBV "
                "(raise QueueSize, or set BlockingCallbacks Yes)"
            ) from err

    async def _wait_for_index(
        self,
        data_providers: Sequence[StreamableDataProvider],
        trigger_info: TriggerInfo,
        initial_collections_written: int,
        collections_requested: int,
        wait_for_idle: bool,
        watcher_divisor: int = 1,
    ) -> AsyncIterator[WatcherUpdate]:
        """As the base class, but a write or detector error reported by the IOC ends the wait at
        once with its message, and a stall or a dead IOC names what was written and expected."""
        expected = initial_collections_written + collections_requested
        updates = super()._wait_for_index(
            data_providers, trigger_info, initial_collections_written,
            collections_requested, wait_for_idle, watcher_divisor,
        )
        trouble = asyncio.ensure_future(self._trouble.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(updates))
                await asyncio.wait({step, trouble}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    if self._interrupted:
                        raise FlyScanInterrupted(
                            f"{self.name}: the fly scan was stopped by a pause; the frames "
                            "written are kept and recorded. Run a new fly scan for the rest")
                    if self._ioc_away:
                        raise self._not_responding(0)
                    reading = await self._health(expected)
                    check_errors(reading)  # the IOC's own error first: it may have ended the arm
                    if self._arm_ended_early() and not await self.driver.armed.get_value():
                        raise self._arm_ended_error(reading)
                    check(reading)
                    raise DetectorError(f"{self.name}: the IOC reported an error that cleared "
                                        "before it could be read; see cam1:StatusMessage_RBV")
                try:
                    update = step.result()
                except StopAsyncIteration:
                    break
                yield update
            # A point of an arm for points has its frames counted in the file, and the IOC's
            # errors are watched: asked only if one came. The end of an arm is asked in full.
            if wait_for_idle or self._trouble.is_set():
                check(await self._health(expected))
            self._frames_confirmed = expected
        except TimeoutError as err:
            self._failure = await self._stall_error(trigger_info, expected, err)
            raise self._failure from err
        except BaseException as err:
            self._failure = self._failure or err
            raise
        finally:
            self._flying = False
            trouble.cancel()
            await updates.aclose()

    async def _ioc_answers(self) -> bool:
        """The IOC answers a read of the camera's state within ``HEALTH_TIMEOUT``."""
        try:
            await asyncio.wait_for(self.driver.detector_state.get_value(cached=False),
                                   HEALTH_TIMEOUT)
        except (TimeoutError, NotConnectedError):
            return False
        return True

    async def _stall_error(self, trigger_info: TriggerInfo, expected: int,
                           err: TimeoutError) -> Exception:
        """Why frames stopped coming: the IOC's own error, a dead IOC, or a stall."""
        if isinstance(err, AcquisitionTimeout):
            return err
        if not await self._ioc_answers():
            return self._not_responding(trigger_info.exposure_timeout)
        try:
            reading = await self._health(expected)
            check_errors(reading)
            if reading.dropped:  # frames that never reached the writer: that is the cause
                check(reading)
        except DetectorError as error:
            return error
        return AcquisitionTimeout(
            f"{self.name}: {reading.captured} of {expected} frames written, then none for "
            f"{trigger_info.exposure_timeout:g} s (detector {reading.detector_state}: "
            f"{reading.status_message!r}). Fix: check the trigger source (External modes wait "
            "for triggers), the IOC, and HDF1:WriteMessage; or give a longer "
            "TriggerInfo(exposure_timeout=...)"
        )

