"""The EIGER2 500K for ophyd-async: step scans, and fly scans of thousands of frames per arm.

``Eiger2Detector`` is an ophyd-async ``AreaDetector``: ``Eiger2DriverIO`` declares the ADEiger
PVs it uses (enum strings as the IOC serves them), and behaviour lives in three small logics:
trigger (Internal Series, External Series, External Enable/Gate), acquire (arm, wait for idle,
with timeouts) and data (HDF1 writing ``<uuid>_master.h5`` where the write path template
points, recorded by the read path template, as the classic ``id3c_eiger.devices`` device does).
Its keyword arguments are the classic device's, so a devices file switches flavour in one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated as A

from event_model import DataKey
from ophyd_async.core import (
    AsyncStatus,
    DetectorTrigger,
    DetectorTriggerLogic,
    EnableDisable,
    SignalDict,
    SignalR,
    SignalRW,
    StandardDetector,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StrictEnum,
    TriggerInfo,
    WatchableAsyncStatus,
    WatcherUpdate,
    derived_signal_r,
)
from ophyd_async.epics.adcore import (
    ADAcquireLogic,
    ADBaseDataType,
    ADBaseIO,
    ADCompression,
    ADHDFDataLogic,
    AreaDetector,
    NDArrayDescription,
    NDFileHDF5IO,
)
from ophyd_async.epics.core import PvSuffix

from .geometry import (
    DATA_TYPE_BY_BITS,
    EIGER2_500K,
    DetectorModel,
    TimingError,
    check_images_per_point,
)
from .layout import check_compression
from .paths import PathTemplates, ReadPathError, TemplatePathProvider, WritePathError

IDLE_TIMEOUT = 10.0  # s: after the last frame, the detector must report Idle within this
DATA_KEY_SUFFIX = "_image"  # data key <name>_image, as the classic device's


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


class Eiger2DriverIO(ADBaseIO):
    """``cam1:`` of an ADEiger IOC for an EIGER2: ADBase plus the eigerBase records used here."""

    trigger_mode: A[SignalRW[Eiger2TriggerMode], PvSuffix.rbv("TriggerMode")]
    manual_trigger: A[SignalRW[EnableDisable], PvSuffix.rbv("ManualTrigger")]
    num_triggers: A[SignalRW[int], PvSuffix.rbv("NumTriggers")]
    software_trigger: A[SignalRW[float], PvSuffix("Trigger")]  # value: gate (s) in Enable modes
    armed: A[SignalR[bool], PvSuffix("Armed")]
    bit_depth_image: A[SignalR[int], PvSuffix("BitDepthImage_RBV")]
    dead_time: A[SignalR[float], PvSuffix("DeadTime_RBV")]
    photon_energy: A[SignalRW[float], PvSuffix.rbv("PhotonEnergy")]
    status_message: A[SignalR[str], PvSuffix("StatusMessage_RBV")]


class Eiger2HDF5IO(NDFileHDF5IO):
    """``HDF1:``, with the write message the IOC gives when it refuses a path."""

    write_message: A[SignalR[str], PvSuffix("WriteMessage")]


def _image_data_type(bits: int) -> ADBaseDataType:
    """The frames' type from ``BitDepthImage_RBV``: the camera's ``DataType_RBV`` is disabled
    on EIGER2 IOCs, and the type follows the timing (UInt8/16/32)."""
    return ADBaseDataType(DATA_TYPE_BY_BITS.get(bits, ""))


@dataclass
class Eiger2TriggerLogic(DetectorTriggerLogic):
    """Trigger modes of the EIGER2 as ophyd-async's internal, edge and level triggers."""

    driver: Eiger2DriverIO
    level_mode: Eiger2TriggerMode = Eiger2TriggerMode.EXTERNAL_ENABLE

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

    async def _set_mode(self, mode: Eiger2TriggerMode, triggers: int, images: int) -> None:
        await asyncio.gather(
            self.driver.trigger_mode.set(mode),
            self.driver.manual_trigger.set(EnableDisable.DISABLE),
            self.driver.num_triggers.set(triggers),
            self.driver.num_images.set(images),
        )

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        await self._set_mode(Eiger2TriggerMode.INTERNAL_SERIES, 1, num)
        await self._set_timing(livetime, deadtime)

    async def prepare_edge(self, num: int, livetime: float) -> None:
        await self._set_mode(Eiger2TriggerMode.EXTERNAL_SERIES, num, 1)
        await self._set_timing(livetime, 0.0)

    async def prepare_level(self, num: int) -> None:
        await self._set_mode(self.level_mode, num, 1)


class Eiger2AcquireLogic(ADAcquireLogic):
    """Arm by ``Acquire`` until ``Armed``; the wait for Idle after the last frame is bounded."""

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


@dataclass
class Eiger2HDFDataLogic(ADHDFDataLogic):
    """HDF1 writing one master series per prepare, checked on both sides of the share."""

    path_provider: TemplatePathProvider
    writer: Eiger2HDF5IO
    compression: ADCompression = ADCompression.BSLZ4

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        await self.writer.compression.set(self.compression)
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
    ) -> None:
        check_images_per_point(images_per_point)
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
        super().__init__(
            driver,
            acquire_logic=Eiger2AcquireLogic(driver, driver_armed_signal=driver.armed),
            trigger_logic=Eiger2TriggerLogic(driver, Eiger2TriggerMode(level_trigger_mode)),
            config_sigs=(driver.trigger_mode, driver.bit_depth_image, driver.photon_energy),
            name=name,
        )
        self.add_detector_logics(
            Eiger2HDFDataLogic(
                array_description=NDArrayDescription(
                    shape_signals=[driver.array_size_y, driver.array_size_x],
                    data_type_signal=self.image_data_type,
                    color_mode_signal=driver.color_mode,
                ),
                path_provider=self.path_provider,
                writer=self.hdf1,
                driver=driver,
                datakey_suffix=DATA_KEY_SUFFIX,
                compression=ADCompression(compression),
            )
        )
        self._ophyd_labels_ = set(labels or ["detectors"])  # read by guarneri's registry

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
        await super().prepare(value)

    @WatchableAsyncStatus.wrap
    async def trigger(self) -> AsyncIterator[WatcherUpdate[int]]:
        """One step-scan point of ``images_per_point`` frames."""
        if self._prepare_ctx is None:
            await self.prepare(TriggerInfo(collections_per_event=self.images_per_point))
        async for update in StandardDetector.trigger.__wrapped__(self):
            yield update

    async def _wait_for_index(
        self,
        data_providers: Sequence[StreamableDataProvider],
        trigger_info: TriggerInfo,
        initial_collections_written: int,
        collections_requested: int,
        wait_for_idle: bool,
        watcher_divisor: int = 1,
    ) -> AsyncIterator[WatcherUpdate]:
        # As the base class, but a stalled acquisition names the frames written and expected.
        written = initial_collections_written
        try:
            async for update in super()._wait_for_index(
                data_providers, trigger_info, initial_collections_written,
                collections_requested, wait_for_idle, watcher_divisor,
            ):
                written = update.current * watcher_divisor
                yield update
        except TimeoutError as err:
            if isinstance(err, AcquisitionTimeout):
                raise
            done = written - initial_collections_written
            state, message = await asyncio.gather(
                self.driver.detector_state.get_value(), self.driver.status_message.get_value()
            )
            raise AcquisitionTimeout(
                f"{self.name}: {done} of {collections_requested} frames written, then none for "
                f"{trigger_info.exposure_timeout:g} s (detector {state.value}: {message!r}). "
                "Fix: check the trigger source (External modes wait for triggers), the IOC, "
                "and HDF1:WriteMessage; or give a longer TriggerInfo(exposure_timeout=...)"
            ) from err
