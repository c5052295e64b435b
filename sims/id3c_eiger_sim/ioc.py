"""The simulated ADEiger IOC: ``cam1:`` (the EIGER driver), ``HDF1:`` (NDFileHDF5) and the
commonPlugins (``plugins/``), which take the camera's frames as NDArrays from its port ``EIG``.

Each PV group serves the full record surface (``surface.py``) and redeclares the records whose
behaviour matters: timing clamps and the data type that follows them, photon energy, triggers and
``Acquire`` with put-completion on the camera; file paths, ``Capture`` in Single/Capture/Stream
modes and priming on the plugin. Putters never raise: errors land in ``StatusMessage_RBV`` or
``WriteStatus``/``WriteMessage`` so a put-with-callback always gets its answer.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, SubGroup

from id3c_eiger import __version__
from id3c_eiger.geometry import HC_EV_ANGSTROM, DetectorModel
from id3c_eiger.layout import SeriesMetadata
from id3c_eiger.records import records_for

from .autosave import Autosave
from .dcu import FW_SETTLE, DetectorControlUnit, FileWriterError, pattern_warning
from .engine import AcquisitionEngine, AcquisitionPlan, TriggerMode
from .faults import FaultPVs, Faults, die
from .frames import FrameGenerator, FramePool, FrameSettings, build_pool
from .plugins import NDArray, Ports, PvaPlugin, ROIPlugin, StatsPlugin, StdArraysPlugin, plugin_group
from .roots import DataRoots, FileTarget, PathRefused, check_file_name, expand_template
from .surface import apply_disabled_fields, record_pv, surface_class, sync_readbacks
from .writer import NDFileWriter, compression_filters

log = logging.getLogger(__name__)

CAM = records_for("cam1:")
HDF = records_for("HDF1:")

COUNTER_UPDATE_PERIOD = 0.1  # s between CA updates of frame counters, as a real IOC throttles
MAX_COUNT = 2**31 - 1
CAMERA_PORT = "EIG"
POOL_CACHE_SIZE = 3
PLUGIN_WAIT = 30.0  # s: WaitForPlugins gives up (and says so) after this
ARM_TIME = 0.025  # s: default time from Acquire to the first exposure (the DCU arms)
DISARM_TIME = 0.005  # s: default time from the last frame to AcquireBusy Done


class SimulatorError(Exception):
    """A request the simulated IOC refuses; the message names the value, the rule and the fix."""


def reported(fallback: Any = None) -> Callable:
    """Make a putter report errors on its group's message PVs instead of raising.

    An exception leaving a caproto putter sends no answer to a put-with-callback, so the client
    would wait out its own timeout; here the put completes and the value becomes ``fallback``
    (or stays as it was).
    """

    def decorate(putter: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(putter)
        async def wrapper(group: Any, instance: Any, value: Any) -> Any:
            try:
                check_finite(instance.pvspec.name, value)
                return await putter(group, instance, value)
            except (SimulatorError, PathRefused) as err:
                await group.report_error(str(err))
            except Exception as err:
                log.exception("putter %s failed", instance.pvspec.name)
                await group.report_error(f"{instance.pvspec.name}: internal error: {err!r}")
            return instance.value if fallback is None else fallback

        return wrapper

    return decorate


def check_finite(name: str, value: Any) -> None:
    """Refuse NaN and infinities, which the record would take and every acquisition fail on."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SimulatorError(f"{name} {value} refused: not a finite number; give a finite value "
                             "(the previous value is kept)")


def _float32(value: float) -> float:
    """``value`` as the detector keeps it (float32)."""
    return float(np.float32(value))


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to [low, high]."""
    return min(max(value, low), high)


class Throttle:
    """True at most once per ``period`` seconds (and whenever forced)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last = -float("inf")

    def ready(self, force: bool = False) -> bool:
        """Whether an update is due now; marks it done if so."""
        now = time.monotonic()
        if force or now - self._last >= self.period:
            self._last = now
            return True
        return False


class CameraPVs(surface_class("cam1:", "CameraSurface")):
    """``cam1:``: the EIGER driver with its timing rules and the acquisition engine."""

    Acquire = record_pv(CAM["Acquire"])
    AcquireTime = record_pv(CAM["AcquireTime"])
    AcquirePeriod = record_pv(CAM["AcquirePeriod"])
    NumImages = record_pv(CAM["NumImages"])
    NumTriggers = record_pv(CAM["NumTriggers"])
    NumExposures = record_pv(CAM["NumExposures"])
    PhotonEnergy = record_pv(CAM["PhotonEnergy"])
    Wavelength = record_pv(CAM["Wavelength"])
    ThresholdEnergy = record_pv(CAM["ThresholdEnergy"])
    Trigger = record_pv(CAM["Trigger"])
    FilePath = record_pv(CAM["FilePath"])
    FWNImagesPerFile = record_pv(CAM["FWNImagesPerFile"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine: AcquisitionEngine | None = None
        self._series: tuple[np.ndarray, ...] = ()  # the frames the acquisition cycles through
        self._counter_base = 0
        self._acquire_start = 0.0
        self._counters = Throttle(COUNTER_UPDATE_PERIOD)

    @property
    def ioc(self) -> EigerIOC:
        """The IOC this camera belongs to."""
        return self.parent

    @property
    def model(self) -> DetectorModel:
        """The simulated detector model."""
        return self.parent.model

    async def report_error(self, message: str) -> None:
        """Show an error as the driver does: ``StatusMessage_RBV``."""
        log.warning("cam1: %s", message)
        await self.StatusMessage_RBV.write(message[:255])

    async def report_status(self, message: str) -> None:
        await self.StatusMessage_RBV.write(message[:255])

    # --- timing: clamped to the model, data type follows --------------------------------

    async def apply_timing(self, count_time: float, frame_time: float, keep: str) -> None:
        """Clamp exposure and period to the model; ``keep`` names the one the user just set."""
        model = self.model
        notes = []
        low_ct = model.min_period - model.dead_time
        ct = clamp(count_time, low_ct, model.max_time)
        ft = clamp(frame_time, model.min_period, model.max_time + model.dead_time)
        if keep == "AcquireTime" and ct != count_time:
            notes.append(f"AcquireTime {count_time:g} s is outside the {model.description} "
                         f"range {low_ct:g}..{model.max_time:g} s; set to {ct:g} s")
        if keep == "AcquirePeriod" and ft != frame_time:
            notes.append(f"AcquirePeriod {frame_time:g} s is outside the {model.description} "
                         f"range {model.min_period:g}..{model.max_time:g} s; set to {ft:g} s")
        if ft < ct + model.dead_time:
            if keep == "AcquirePeriod":
                ct = ft - model.dead_time
                notes.append(f"AcquireTime reduced to {ct:g} s to fit AcquirePeriod minus the "
                             f"{model.dead_time:g} s dead time")
            else:
                ft = ct + model.dead_time
        for name, value in (("AcquireTime", ct), ("AcquirePeriod", ft)):
            await getattr(self, name).write(value, verify_value=False)
            await getattr(self, f"{name}_RBV").write(value)
        bits = model.bit_depth(ct, ft)
        await self.BitDepthImage_RBV.write(bits)
        await self.DataType_RBV.write(model.data_type(ct, ft))
        await self.DataType.write(model.data_type(ct, ft), verify_value=False)
        await self.CountCutoff_RBV.write(float(model.saturation_value(ct, bits)))
        if notes:
            await self.report_status("; ".join(notes))

    @AcquireTime.putter
    @reported()
    async def AcquireTime(self, instance: Any, value: float) -> float:
        await self.apply_timing(value, self.AcquirePeriod.value, keep="AcquireTime")
        return self.AcquireTime.value

    @AcquirePeriod.putter
    @reported()
    async def AcquirePeriod(self, instance: Any, value: float) -> float:
        await self.apply_timing(self.AcquireTime.value, value, keep="AcquirePeriod")
        return self.AcquirePeriod.value

    async def _count(self, instance: Any, value: int, low: int) -> int:
        name = instance.pvspec.name
        clamped = int(clamp(value, low, MAX_COUNT))
        if clamped != value:
            await self.report_status(f"{name} {value} is outside {low}..{MAX_COUNT}; set to {clamped}")
        await getattr(self, f"{name}_RBV").write(clamped)
        return clamped

    @NumImages.putter
    @reported()
    async def NumImages(self, instance: Any, value: int) -> int:
        return await self._count(instance, value, 1)

    @NumTriggers.putter
    @reported()
    async def NumTriggers(self, instance: Any, value: int) -> int:
        return await self._count(instance, value, 1)

    @NumExposures.putter
    @reported()
    async def NumExposures(self, instance: Any, value: int) -> int:
        return await self._count(instance, value, 1)

    @FWNImagesPerFile.putter
    @reported()
    async def FWNImagesPerFile(self, instance: Any, value: int) -> int:
        return await self._count(instance, value, 1)

    # --- energy: photon energy sets wavelength and threshold (50 %) ----------------------

    async def set_photon_energy(self, energy: float) -> float:
        """Clamp, then follow with wavelength and the default threshold as the detector does."""
        low, high = self.model.energy_range
        clamped = clamp(energy, low, high)
        if clamped != energy:
            await self.report_status(f"PhotonEnergy {energy:g} eV is outside the {self.model.description} "
                             f"range {low:g}..{high:g} eV; set to {clamped:g} eV")
        await self.PhotonEnergy.write(clamped, verify_value=False)
        await self.PhotonEnergy_RBV.write(clamped)
        wavelength = HC_EV_ANGSTROM / clamped
        await self.Wavelength.write(wavelength, verify_value=False)
        await self.Wavelength_RBV.write(wavelength)
        await self.ThresholdEnergy.write(clamped / 2, verify_value=False)
        await self.ThresholdEnergy_RBV.write(clamped / 2)
        return clamped

    @PhotonEnergy.putter
    @reported()
    async def PhotonEnergy(self, instance: Any, value: float) -> float:
        return await self.set_photon_energy(value)

    @Wavelength.putter
    @reported()
    async def Wavelength(self, instance: Any, value: float) -> float:
        if value <= 0:
            raise SimulatorError(f"Wavelength {value:g} A must be positive")
        await self.set_photon_energy(HC_EV_ANGSTROM / value)
        return self.Wavelength.value

    @ThresholdEnergy.putter
    @reported()
    async def ThresholdEnergy(self, instance: Any, value: float) -> float:
        low, high = self.model.threshold_range
        clamped = clamp(value, low, high)
        if clamped != value:
            await self.report_status(f"ThresholdEnergy {value:g} eV is outside {low:g}..{high:g} eV; "
                             f"set to {clamped:g} eV")
        await self.ThresholdEnergy_RBV.write(clamped)
        return clamped

    # --- the detector's own file path (data files when SaveFiles is Enable) --------------

    @FilePath.putter
    @reported()
    async def FilePath(self, instance: Any, value: str) -> str:
        return await self.ioc.set_file_path(self, value)

    # --- acquisition ----------------------------------------------------------------------

    def frame_settings(self) -> FrameSettings:
        """What the frames of an acquisition started now depend on, in the float32 the
        detector keeps (and the master stores), so a reader of the master can recompute them."""
        return FrameSettings(
            count_time=_float32(self.AcquireTime.value),
            bit_depth=self.BitDepthImage_RBV.value,
            beam_center_x=_float32(self.BeamX.value),
            beam_center_y=_float32(self.BeamY.value),
            distance=_float32(self.DetDist.value),
            wavelength=_float32(self.Wavelength.value),
        )

    def acquisition_plan(self) -> AcquisitionPlan:
        """The acquisition the current settings describe."""
        return AcquisitionPlan(
            mode=TriggerMode(self.TriggerMode.value),
            n_images=self.NumImages.value,
            n_triggers=self.NumTriggers.value,
            count_time=self.AcquireTime.value,
            frame_time=self.AcquirePeriod.value,
            manual_trigger=self.ManualTrigger.value == "Enable",
        )

    def series_metadata(self, settings: FrameSettings) -> SeriesMetadata:
        """The master file's metadata for frames taken with ``settings``, as the DCU writes it
        at arm: images per trigger and the triggers asked."""
        model, plan = self.model, self.acquisition_plan()
        saturation = model.saturation_value(settings.count_time, settings.bit_depth)
        return SeriesMetadata(
            description=model.description,
            detector_number=model.serial_number,
            bit_depth_image=settings.bit_depth,
            sensor_material=model.sensor_material,
            sensor_thickness=model.sensor_thickness,
            x_pixel_size=model.pixel_size,
            y_pixel_size=model.pixel_size,
            beam_center_x=settings.beam_center_x,
            beam_center_y=settings.beam_center_y,
            count_time=settings.count_time,
            frame_time=self.AcquirePeriod.value,
            detector_distance=settings.distance,
            incident_wavelength=settings.wavelength,
            photon_energy=self.PhotonEnergy.value,
            threshold_energy=self.ThresholdEnergy.value,
            nimages=plan.images_per_trigger,
            ntrigger=plan.n_triggers,
            x_pixels_in_detector=model.width,
            y_pixels_in_detector=model.height,
            saturation_value=saturation,
            countrate_correction_count_cutoff=saturation,
            software_version=f"id3c-eiger-sim {__version__}",
            eiger_fw_version=model.firmware_version,
            dead_time=model.dead_time,
            pixel_mask=model.pixel_mask(),
            start_time=datetime.datetime.now().astimezone().isoformat(timespec="microseconds"),
        )

    @Trigger.putter
    @reported()
    async def Trigger(self, instance: Any, value: float) -> float:
        engine = self._engine
        if engine is None:
            raise SimulatorError("Trigger ignored: the detector is not armed; set Acquire first")
        if not engine.trigger(value):
            raise SimulatorError(
                f"Trigger ignored: TriggerMode {engine.plan.mode} with ManualTrigger Disable "
                "makes its own triggers; set ManualTrigger to Enable or use an External mode"
            )
        return value

    @Acquire.putter
    @reported(fallback="Done")
    async def Acquire(self, instance: Any, value: str) -> str:
        if value != "Acquire":
            if self._engine is not None:
                self._engine.stop()
            return "Done"
        if self._engine is not None:
            await self.report_status("Acquire ignored: an acquisition is already running; "
                             "put Acquire=Done to stop it first")
            return "Acquire"
        await instance.write("Acquire", verify_value=False)
        await self._run_acquisition()
        return "Done"

    async def _set_busy(self, busy: bool) -> None:
        await self.AcquireBusy.write("Acquiring" if busy else "Done")
        await self.Acquire_RBV.write("Acquiring" if busy else "Done")
        if not busy:
            await self.Armed.write("Unarmed")

    async def _run_acquisition(self) -> None:
        plan = self.acquisition_plan()
        settings = self.frame_settings()
        await self._set_busy(True)
        await self.DetectorState_RBV.write("Acquire")
        await self.report_status("Arming")
        engine = AcquisitionEngine(
            plan, functools.partial(self._deliver, settings), self._report_state,
            paced=self.ioc.paced,
        )
        self._engine = engine
        produced = 0
        failed = downloads = False
        try:
            await self.ioc.hdf.prepare(settings)
            loop = asyncio.get_running_loop()
            self._series = await loop.run_in_executor(None, self.ioc.generator.series_frames,
                                                      settings)
            downloads = self.ioc.dcu.downloads()  # decided at arm, as ADEiger does
            await self.ioc.dcu.arm(settings, self._series)
            await asyncio.sleep(self.ioc.arm_time)  # the DCU prepares the series
            await self.Armed.write("Armed")  # as the driver: once arm returned the sequence id
            self._counter_base = self.ArrayCounter_RBV.value
            self._acquire_start = time.monotonic()
            await self.NumImagesCounter_RBV.write(0)
            produced = await engine.run()
        except (SimulatorError, PathRefused, FileWriterError) as err:
            failed = True
            await self.report_error(f"Acquisition failed after {engine.produced} frames: {err}")
        finally:
            self._engine = None
            await self._update_counters(engine.produced, force=True)
            await self.ioc.hdf.flush_counters()  # the last frames' NumCaptured, not throttled
            await asyncio.sleep(self.ioc.disarm_time)
            if failed:  # the reason, shown again once the files are processed
                state, message = "Error", self.StatusMessage_RBV.value
            elif engine.stopped:
                state, message = "Aborted", f"Acquisition aborted after {engine.produced} frames"
            else:
                state, message = "Idle", f"Acquisition completed: {produced} frames"
            await self.DetectorState_RBV.write(state)
            series = await self.ioc.dcu.disarm()  # the DCU closes its last file
            # Busy until the IOC has every file; a failed download's reason stays in view.
            settle = self.ioc.fw_settle_time
            if (series is not None and downloads
                    and not await self.ioc.dcu.wait_downloaded(series, settle)):
                message = None
            if message is not None:
                await self.report_status(message)
            await self._wait_for_plugins()  # the detector is done; AcquireBusy waits for them
            await self._set_busy(False)

    async def setting_changed(self, suffix: str, value: Any) -> None:
        """A setpoint echoed to its readback: the FileWriter's name pattern is checked."""
        if suffix == "FWNamePattern" and (warning := pattern_warning(value)):
            await self.report_error(warning)

    async def _wait_for_plugins(self) -> None:
        """With ``WaitForPlugins`` Yes, ``AcquireBusy`` stays busy until every plugin has done
        the arrays it took (ADCore 3.4), so a client reading Stats after it sees this series."""
        ports = self.ioc.ports
        if self.WaitForPlugins.value == "Yes" and not await ports.wait_idle(PLUGIN_WAIT):
            await self.report_status(f"WaitForPlugins: plugins still busy after {PLUGIN_WAIT:g} s")
        await ports.flush_counters()

    async def _report_state(self, state: str, message: str) -> None:
        # Counters are throttled while frames flow; a pause (waiting for a trigger) shows them.
        if self._engine is not None:
            await self._update_counters(self._engine.produced, force=True)
        await self.ioc.hdf.flush_counters()
        await self.DetectorState_RBV.write(state)
        await self.report_status(message)

    async def _deliver(self, settings: FrameSettings, frames: range) -> int:
        """Frames to the DCU and, with DataSource Stream, to HDF1 and the plugins; returns how
        many the camera produced (fewer: it stalls)."""
        taken, fault = self.ioc.faults.camera_frames(len(frames))
        frames = frames[:taken]
        base = self._counter_base
        indices = range(base + frames.start, base + frames.stop)
        await self.ioc.dcu.receive(settings, indices)
        if self.DataSource.value == "Stream":  # FileWriter: parsed from the DCU's files later
            await self.send_arrays(settings, indices, self._series)
        await self.ioc.sim.show()
        if fault == "die":
            die()
        if fault == "stall":  # the counters stop here: show where
            await self._update_counters(frames.stop, force=True)
            await self.ioc.hdf.flush_counters()
        else:
            await self._update_counters(frames.stop)
        return taken

    async def send_arrays(self, settings: FrameSettings, indices: range,
                          frames: tuple[np.ndarray, ...]) -> None:
        """Frames ``indices`` (of the series cycling through ``frames``) as NDArrays: to
        ``HDF1:`` and on the camera's port to the plugins listening there. The plugins are
        offered them first: as an IOC's non-blocking callbacks, their queues fill in a moment,
        and they work while HDF1 writes (which would otherwise hold them up)."""
        ports = self.ioc.ports
        if ports.wanted(CAMERA_PORT):
            now = time.time()
            for index in indices:
                array = NDArray(frames[index % len(frames)], index + 1, now)
                await ports.publish(CAMERA_PORT, array)
        await self.ioc.hdf.receive(settings, indices)

    async def _update_counters(self, produced: int, force: bool = False) -> None:
        if not self._counters.ready(force):
            return
        counter = self._counter_base + produced
        elapsed = time.monotonic() - self._acquire_start
        await self.ArrayCounter.write(counter, verify_value=False)
        await self.ArrayCounter_RBV.write(counter)
        await self.NumImagesCounter_RBV.write(produced)
        await self.UniqueId_RBV.write(counter)
        await self.TimeStamp_RBV.write(time.time())
        if elapsed > 0:
            await self.ArrayRate_RBV.write(produced / elapsed)


@dataclass
class _Capture:
    """One Capture/Stream capture in progress."""

    mode: str
    limit: int  # 0 = until stopped
    target: FileTarget  # the file's directory, held open
    writer: NDFileWriter | None = None
    buffer: list[tuple[FrameSettings, range, int]] = field(default_factory=list)  # + unique id
    count: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def path(self) -> Path:
        """The file as clients see it (``FullFileName_RBV``)."""
        return self.target.master_path


class FilePluginPVs(surface_class("HDF1:", "FilePluginSurface")):
    """``HDF1:``: NDFileHDF5 writing one file per capture in its default layout (no external
    links), in Single, Capture or Stream mode; NDAttributes with ``StoreAttr``, SWMR with
    ``SWMRMode``."""

    FilePath = record_pv(HDF["FilePath"])
    FileName = record_pv(HDF["FileName"])
    FileTemplate = record_pv(HDF["FileTemplate"], value="%s%s_%6.6d.h5")
    Capture = record_pv(HDF["Capture"])
    WriteFile = record_pv(HDF["WriteFile"])
    FlushNow = record_pv(HDF["FlushNow"])
    NumCapture = record_pv(HDF["NumCapture"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._capture: _Capture | None = None
        self._lock = asyncio.Lock()
        self._primed: FrameSettings | None = None
        self._last_frame: tuple[FrameSettings, int, int] | None = None  # + its unique id
        self._array_counter = 0
        self._counters = Throttle(COUNTER_UPDATE_PERIOD)

    @property
    def ioc(self) -> EigerIOC:
        """The IOC this plugin belongs to."""
        return self.parent

    async def report_error(self, message: str) -> None:
        """Show an error as NDPluginFile does: ``WriteStatus`` and ``WriteMessage``."""
        log.warning("HDF1: %s", message)
        await self.WriteStatus.write(
            "Write error", status=AlarmStatus.WRITE, severity=AlarmSeverity.MAJOR_ALARM
        )
        await self.WriteMessage.write(message[:255])

    async def write_ok(self) -> None:
        await self.WriteStatus.write(
            "Write OK", status=AlarmStatus.NO_ALARM, severity=AlarmSeverity.NO_ALARM
        )
        await self.WriteMessage.write("")

    # --- paths --------------------------------------------------------------------------

    @FilePath.putter
    @reported()
    async def FilePath(self, instance: Any, value: str) -> str:
        return await self.ioc.set_file_path(self, value)

    async def _keep_and_check(self, readback: Any, value: str, check: Callable[[], Any]) -> str:
        """Store the value as a real IOC does, and report now if a capture would refuse it."""
        await readback.write(value)
        try:
            check()
        except PathRefused as err:
            await self.report_error(str(err))
        return value

    @FileName.putter
    @reported()
    async def FileName(self, instance: Any, value: str) -> str:
        return await self._keep_and_check(self.FileName_RBV, value,
                                          lambda: check_file_name(value))

    @FileTemplate.putter
    @reported()
    async def FileTemplate(self, instance: Any, value: str) -> str:
        return await self._keep_and_check(self.FileTemplate_RBV, value,
                                          lambda: expand_template(value, "/", "name", 1))

    @NumCapture.putter
    @reported()
    async def NumCapture(self, instance: Any, value: int) -> int:
        clamped = int(clamp(value, 0, MAX_COUNT))
        await self.NumCapture_RBV.write(clamped)
        return clamped

    def _next_file(self) -> FileTarget:
        """The path of the next file, its directory checked against the data roots and held
        open from now on."""
        roots = self.ioc.roots
        directory = roots.prepare_directory(self.FilePath.value, self.CreateDirectory.value)
        name = check_file_name(self.FileName.value)
        full = expand_template(self.FileTemplate.value, f"{directory}/", name, self.FileNumber.value)
        fd = roots.open_directory(directory)
        return FileTarget(Path(full), directory, fd, fd)

    async def _file_done(self, path: Path) -> None:
        await self.FullFileName_RBV.write(str(path))
        if self.AutoIncrement.value == "Yes":
            number = self.FileNumber.value + 1
            await self.FileNumber.write(number)
            await self.FileNumber_RBV.write(number)
            self.ioc.save_settings()

    def _new_writer(self, target: FileTarget, pool: FramePool) -> NDFileWriter:
        return NDFileWriter(
            target=target,
            pool=pool,
            metadata=self.ioc.cam.series_metadata(pool.settings),
            store_attributes=self.StoreAttr.value == "Yes",
            swmr=self.SWMRMode.value == "On",
            faults=self.ioc.faults,
        )

    def filters(self) -> dict[str, Any]:
        """h5py keywords for the selected ``Compression``."""
        return compression_filters(self.Compression.value, self.ZLevel.value)

    # --- frames in ---------------------------------------------------------------------

    async def prepare(self, settings: FrameSettings) -> None:
        """Before an acquisition: compress its frame pool if this plugin will write frames."""
        if self.EnableCallbacks.value == "Enable":
            await self.ioc.pool(settings, self.filters())

    async def _prime(self, settings: FrameSettings) -> None:
        if self._primed == settings:
            return
        height, width = self.ioc.model.shape
        for name, value in (("ArraySize0", width), ("ArraySize1", height), ("ArraySize2", 0),
                            ("ArraySizeX", width), ("ArraySizeY", height), ("ArraySizeZ", 0),
                            ("NDimensions", 2)):
            await getattr(self, f"{name}_RBV").write(value)
            if hasattr(self, name):
                await getattr(self, name).write(value, verify_value=False)
        await self.ArraySize_RBV.write(width * height * settings.bit_depth // 8)
        await self.DataType_RBV.write(f"UInt{settings.bit_depth}")
        await self.ColorMode_RBV.write("Mono")
        self._primed = settings

    async def receive(self, settings: FrameSettings, frames: range) -> None:
        """Frames from the camera (indices of their content); written as the mode says."""
        if self.EnableCallbacks.value != "Enable" or not frames:
            return
        dropped = self.ioc.faults.dropped(len(frames))
        if dropped:
            await self.DroppedArrays_RBV.write(self.DroppedArrays_RBV.value + dropped)
            frames = frames[dropped:]
            if not frames:
                return
        await self._prime(settings)
        first_unique_id = self._array_counter + 1
        self._array_counter += len(frames)
        self._last_frame = (settings, frames[-1], self._array_counter)
        capture = self._capture
        if capture is None:
            if self.FileWriteMode.value == "Single" and self.AutoSave.value == "Yes":
                for k, index in enumerate(frames):
                    await self._write_single(settings, index, first_unique_id + k)
        else:
            await self._capture_frames(capture, settings, frames, first_unique_id)
        await self._update_counters(capture)

    async def _update_counters(self, capture: _Capture | None, force: bool = False) -> None:
        if not self._counters.ready(force):
            return
        await self.ArrayCounter.write(self._array_counter, verify_value=False)
        await self.ArrayCounter_RBV.write(self._array_counter)
        if capture is not None:
            await self.NumCaptured_RBV.write(capture.count)

    async def flush_counters(self) -> None:
        """Send the throttled counters now."""
        await self._update_counters(self._capture, force=True)

    async def _capture_frames(self, capture: _Capture, settings: FrameSettings,
                              frames: range, first_unique_id: int) -> None:
        if capture.limit:
            frames = frames[: capture.limit - capture.count]
        try:
            async with self._lock:
                if capture is not self._capture or not frames:
                    return
                if capture.mode == "Stream":
                    pool = await self.ioc.pool(settings, self.filters())
                    if capture.writer is None:
                        await self._open_stream_file(capture, pool)
                    try:
                        await self._in_writer_thread(capture.writer.write, pool, frames,
                                                     first_unique_id)
                    finally:
                        capture.count = capture.writer.n_frames
                else:
                    capture.buffer.append((settings, frames, first_unique_id))
                    capture.count += len(frames)
        except (PathRefused, OSError) as err:
            await self.report_error(f"capture to {capture.path} failed: {err}")
            await self._end_capture(capture)
            return
        if capture.limit and capture.count >= capture.limit:
            await self._end_capture(capture)

    async def _open_stream_file(self, capture: _Capture, pool: FramePool) -> None:
        """Open the capture's file, named in ``FullFileName_RBV`` from then on."""
        capture.writer = await self._in_writer_thread(self._new_writer, capture.target, pool)
        await self.FullFileName_RBV.write(str(capture.path))
        await self.SWMRActive_RBV.write("Active" if self.SWMRMode.value == "On" else "Off")

    async def _in_writer_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ioc.writer_executor, func, *args)

    async def _write_single(self, settings: FrameSettings, index: int, unique_id: int) -> None:
        target = self._next_file()
        try:
            pool = await self.ioc.pool(settings, self.filters())

            def write() -> None:
                writer = self._new_writer(target, pool)
                try:
                    writer.write(pool, range(index, index + 1), unique_id)
                finally:
                    writer.close()

            async with self._lock:
                await self._in_writer_thread(write)
        finally:
            target.close()
        await self._file_done(target.master_path)
        await self.write_ok()

    # --- capture control --------------------------------------------------------------

    @Capture.putter
    @reported(fallback="Done")
    async def Capture(self, instance: Any, value: str) -> str:
        if value != "Capture":
            if self._capture is not None:
                await self._end_capture(self._capture)
            return "Done"
        if self._capture is not None:
            raise SimulatorError("Capture ignored: a capture is already running")
        mode = self.FileWriteMode.value
        if mode == "Single":
            raise SimulatorError(
                "ERROR, Capture needs FileWriteMode Capture or Stream (it is Single); "
                "set FileWriteMode, or use WriteFile/AutoSave for single files"
            )
        if self.EnableCallbacks.value != "Enable":
            raise SimulatorError(
                "Capture refused: EnableCallbacks is Disable, so no frame would reach the plugin "
                "and the capture would never end; set HDF1:EnableCallbacks to Enable"
            )
        lazy = self.LazyOpen.value == "Yes"
        if mode == "Stream" and not lazy and self._primed is None:
            raise SimulatorError(
                "ERROR, must collect an array to get dimensions first: the plugin is not "
                "primed; acquire one frame with EnableCallbacks Enable, or set LazyOpen to Yes"
            )
        capture = _Capture(mode, self.NumCapture.value, self._next_file())
        # NDPluginFile clears FullFileName at capture start and names the file once it opens:
        # here without LazyOpen, at the first frame with it (Capture mode: at the end).
        await self.FullFileName_RBV.write("")
        await self.write_ok()
        if mode == "Stream" and not lazy:
            pool = await self.ioc.pool(self._primed, self.filters())
            await self._open_stream_file(capture, pool)
        elif lazy:
            await self.WriteMessage.write("Lazy Open...")
        self._capture = capture
        await instance.write("Capture", verify_value=False)
        await self.Capture_RBV.write("Capturing")
        await self.NumCaptured_RBV.write(0)
        await capture.finished.wait()
        return "Done"

    async def _end_capture(self, capture: _Capture) -> None:
        """Finish a capture: close (Stream) or write out (Capture mode) what was captured."""
        async with self._lock:
            if capture is not self._capture:
                return
            self._capture = None
            try:
                if capture.mode == "Capture" and capture.buffer:
                    await self._write_buffer(capture)
                elif capture.writer is not None:
                    await self._in_writer_thread(capture.writer.close)
                if capture.writer is not None:
                    await self._file_done(capture.path)
            except (PathRefused, OSError) as err:
                await self.report_error(f"closing {capture.path} failed: {err}")
            finally:
                capture.target.close()
                await self.SWMRActive_RBV.write("Off")
                await self._update_counters(capture, force=True)
                await self.Capture_RBV.write("Done")
                await self.Capture.write("Done", verify_value=False)
                capture.finished.set()

    async def _write_buffer(self, capture: _Capture) -> None:
        first_settings = capture.buffer[0][0]
        pools = {s: await self.ioc.pool(s, self.filters()) for s, _, _ in capture.buffer}

        def write() -> NDFileWriter:
            writer = self._new_writer(capture.target, pools[first_settings])
            try:
                for settings, frames, first_unique_id in capture.buffer:
                    writer.write(pools[settings], frames, first_unique_id)
            finally:
                writer.close()
            return writer

        capture.writer = await self._in_writer_thread(write)

    @WriteFile.putter
    @reported(fallback="Done")
    async def WriteFile(self, instance: Any, value: str) -> str:
        if value != "Write":
            return "Done"
        if self._last_frame is None:
            raise SimulatorError("WriteFile: no frame has reached the plugin yet; acquire first")
        await self._write_single(*self._last_frame)
        return "Done"

    @FlushNow.putter
    @reported(fallback="Done")
    async def FlushNow(self, instance: Any, value: str) -> str:
        # Frames are flushed after every batch; nothing is held back to flush.
        return "Done"


class EigerIOC(PVGroup):
    """The whole simulated IOC: ``<prefix>cam1:``, ``<prefix>HDF1:``, the commonPlugins
    (``ROI1:``, ``Stats1:``, ``Stats2:``, ``image1:``, ``Pva1:``) and the fault surface
    ``<prefix>sim:``."""

    cam = SubGroup(CameraPVs, prefix="cam1:")
    hdf = SubGroup(FilePluginPVs, prefix="HDF1:")
    # commonPlugins, in start order (Stats2 listens to ROI1)
    roi1 = plugin_group("ROI1:", "ROI1", ROIPlugin)
    stats1 = plugin_group("Stats1:", "STATS1", StatsPlugin)
    stats2 = plugin_group("Stats2:", "STATS2", StatsPlugin)
    image1 = plugin_group("image1:", "Image1", StdArraysPlugin)
    pva1 = plugin_group("Pva1:", "PVA1", PvaPlugin)
    sim = SubGroup(FaultPVs, prefix="sim:")

    def __init__(self, *args: Any, model: DetectorModel, roots: DataRoots, dcu_root: Path,
                 seed: int = 0, arm_time: float = ARM_TIME, disarm_time: float = DISARM_TIME,
                 fw_settle_time: float = FW_SETTLE, paced: bool = True,
                 **kwargs: Any) -> None:
        self.model = model
        self.roots = roots
        self.dcu = DetectorControlUnit(self, dcu_root)
        self.arm_time = arm_time
        self.disarm_time = disarm_time
        self.fw_settle_time = fw_settle_time
        self.paced = paced  # False (--unpaced): frames as fast as they are written
        self.generator = FrameGenerator(model, seed)
        self.writer_executor = ThreadPoolExecutor(1, thread_name_prefix="hdf-writer")
        self.ports = Ports()  # the plugin groups register on it as they are made
        self.ports.add_driver(CAMERA_PORT)
        self.autosave: Autosave | None = None
        self._pools: OrderedDict[tuple[Any, ...], asyncio.Future[FramePool]] = OrderedDict()
        super().__init__(*args, **kwargs)

    def use_autosave(self, path: Path) -> None:
        """Keep the autosaved settings in ``path`` (restored by ``initialize``)."""
        self.autosave = Autosave(path, {"cam1:": self.cam, "HDF1:": self.hdf})

    def save_settings(self) -> None:
        """Autosave now (a file number just moved on: a crash must not reuse it)."""
        if self.autosave is not None:
            try:
                self.autosave.save()
            except OSError as err:
                log.warning("autosave to %s failed: %s", self.autosave.path, err)

    @property
    def plugins(self) -> tuple[Any, ...]:
        """The commonPlugins groups, in start order."""
        return (self.roi1, self.stats1, self.stats2, self.image1, self.pva1)

    @property
    def faults(self) -> Faults:
        """The faults armed through ``sim:`` (or ``--fault``)."""
        return self.sim.state

    async def pool(self, settings: FrameSettings, filters: dict[str, Any],
                   thresholds: int | None = None) -> FramePool:
        """The compressed frame pool for ``settings`` (built once, a few kept); ``thresholds``
        as ``build_pool`` takes them."""
        key = (settings, tuple(sorted(filters.items())), thresholds)
        future = self._pools.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(None, build_pool, self.generator, settings, filters,
                                          thresholds)
            self._pools[key] = future
            while len(self._pools) > POOL_CACHE_SIZE:
                self._pools.popitem(last=False)
        self._pools.move_to_end(key)
        try:
            return await future
        except Exception:
            self._pools.pop(key, None)
            raise

    async def set_file_path(self, group: CameraPVs | FilePluginPVs, value: str) -> str:
        """A ``FilePath`` put: kept as written (with a trailing separator) like a real IOC;
        created per CreateDirectory; ``FilePathExists_RBV`` and the message say if unusable."""
        path = value if value.endswith("/") or not value else f"{value}/"
        # The driver posts FilePathExists with FilePath_RBV: a client seeing one sees both.
        try:
            self.roots.prepare_directory(path, group.CreateDirectory.value)
        except PathRefused as err:
            await group.FilePathExists_RBV.write("No")
            await group.report_error(str(err))
        else:
            await group.FilePathExists_RBV.write("Yes")
            if isinstance(group, FilePluginPVs):
                await group.write_ok()
        await group.FilePath_RBV.write(path)
        return path

    async def initialize(self) -> None:
        """Values a real IOC reads from the detector at start-up."""
        model, cam, hdf = self.model, self.cam, self.hdf
        # The DCU's own default name, before the readbacks show it (an empty pattern would be
        # warned about as a pattern without $id).
        await cam.FWNamePattern.write("series_$id", verify_value=False)
        await sync_readbacks(cam, "cam1:")
        await sync_readbacks(hdf, "HDF1:")
        identity = {
            "Manufacturer_RBV": "Dectris",
            "Model_RBV": model.description.removeprefix("Dectris "),
            "SerialNumber_RBV": model.serial_number,
            "FirmwareVersion_RBV": model.firmware_version,
            "SDKVersion_RBV": "1.8.0",
            "DriverVersion_RBV": f"3.5.0 (id3c-eiger-sim {__version__})",
            "ADCoreVersion_RBV": "3.13.0",
        }
        for group in (cam, hdf, *self.plugins):
            for name, value in identity.items():
                await getattr(group, name).write(value)
        await cam.PortName_RBV.write(CAMERA_PORT)
        await hdf.PortName_RBV.write("FileHDF1")
        await hdf.PluginType_RBV.write("NDFileHDF5")
        await hdf.NDArrayPort.write(CAMERA_PORT, verify_value=False)
        await hdf.NDArrayPort_RBV.write(CAMERA_PORT)
        await hdf.FileFormat_RBV.write("HDF5")
        await hdf.SWMRSupported_RBV.write("Supported")
        await hdf.FileTemplate_RBV.write(hdf.FileTemplate.value)
        camera_values = {
            "Description_RBV": model.description,
            "SensorMaterial_RBV": model.sensor_material,
            "SensorThickness_RBV": model.sensor_thickness,
            "XPixelSize_RBV": model.pixel_size,
            "YPixelSize_RBV": model.pixel_size,
            "DeadTime_RBV": model.dead_time,
            "MaxSizeX_RBV": model.width,
            "MaxSizeY_RBV": model.height,
            "ArraySizeX_RBV": model.width,
            "ArraySizeY_RBV": model.height,
            "ArraySize0_RBV": model.width,
            "ArraySize1_RBV": model.height,
            "NDimensions_RBV": 2,
            "State_RBV": "idle",
            "HVState_RBV": "ready",
            "FWState_RBV": "ready",
            "StreamState_RBV": "disabled",
            "MonitorState_RBV": "normal",
            "DetectorState_RBV": "Idle",
            "NumTriggers_RBV": 1,
            "Temp0_RBV": 24.5,
            "Humid0_RBV": 2.1,
        }
        for name, value in camera_values.items():
            await getattr(cam, name).write(value)
        await cam.NumTriggers.write(1, verify_value=False)
        await cam.FWHDF5Format.write("v2024.2")
        await cam.FWHDF5Format_RBV.write("v2024.2")
        for name, value in (("BeamX", model.width / 2), ("BeamY", model.height / 2),
                            ("DetDist", 0.08)):
            await getattr(cam, name).write(value, verify_value=False)
            await getattr(cam, f"{name}_RBV").write(value)
        await cam.set_photon_energy(12000.0)
        await cam.apply_timing(cam.AcquireTime.value, cam.AcquirePeriod.value, keep="AcquireTime")
        await cam.StatusMessage_RBV.write("Idle")
        await apply_disabled_fields(cam, "cam1:")
        await apply_disabled_fields(hdf, "HDF1:")
        await self.dcu.start()
        for plugin in self.plugins:
            await sync_readbacks(plugin, plugin.prefix.removeprefix(self.prefix))
            await apply_disabled_fields(plugin, plugin.prefix.removeprefix(self.prefix))
            await plugin.start()
        if self.autosave is not None:
            restored = await self.autosave.restore()
            if restored:
                await cam.StatusMessage_RBV.write(f"Idle; {restored} settings restored by autosave")
            asyncio.get_running_loop().create_task(self.autosave.run())
