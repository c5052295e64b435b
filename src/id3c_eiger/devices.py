"""The EIGER2 500K as a classic ophyd area detector: an EIGER2 camera, an HDF5 plugin, and the
numbers of each point from the commonPlugins (Stats1 on the frame, Stats2 on ROI1).

Each stage writes in the directory the write path template names (``file_source``
``hdf5_plugin``: HDF1's single file ``<uid>_000000.h5`` per stage; ``file_writer``: the DCU's
master and data file per point, downloaded); a Resource records each file (each master) by its
*read* path, so Tiled and Bluesky open it where they mount the same directory. Stage refuses, before any
exposure, a write path the IOC cannot use and a read path this host cannot read. Every point and
unstage check the IOC's own account (``health``): a point whose frames did not all reach the file
fails with the IOC's message, a dead IOC within the trigger timeout, and unstage always leaves the
device unstaged, so the next plan works once the IOC is back.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from apstools.devices import SingleTrigger_V34
from ophyd import ADComponent as ADCpt
from ophyd import Component as Cpt
from ophyd import DetectorBase, Device, EpicsSignal, EpicsSignalRO, Staged
from ophyd.areadetector import EigerDetectorCam
from ophyd.areadetector.base import EpicsSignalWithRBV as SignalWithRBV
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite, FileStoreIterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin, HDF5Plugin_V34, ROIPlugin_V34, StatsPlugin_V34
from ophyd.areadetector.trigger_mixins import ADTriggerStatus
from ophyd.status import DeviceStatus
from ophyd.utils.errors import DisconnectedError, InvalidState, UnprimedPlugin

from .file_writer import (
    DOWNLOAD_TIMEOUT,
    DownloadedSeries,
    FileSource,
    check_file_source,
    unique_name_pattern,
)
from .geometry import DATA_TYPE_BY_BITS, EIGER2_500K, Roi, check_images_per_point, check_roi
from .health import (
    HEALTH_TIMEOUT,
    RECONNECT_TIMEOUT,
    DetectorError,
    HealthReading,
    arm_ended,
    arm_refused,
    check,
    check_errors,
    not_responding,
)
from .layout import DATA_DATASET, FIRST_THRESHOLD, check_compression
from .paths import READ_PATH_GRACE, ExpandedPaths, PathTemplates, ReadPathError, WritePathError
from .point_counters import ARMED_TRIGGERS, CounterTargets
from .watchdog import PointWatchdog

FILE_TEMPLATE = "%s%s_%6.6d.h5"  # (path, name, number): ADCore's default FileTemplate
SIGNAL_TIMEOUT = 10.0  # s: every put-and-readback of a stage or unstage
TRIGGER_MARGIN = 10.0  # s: a trigger may take this long beyond NumImages x AcquirePeriod
ARM_TIMEOUT = 10.0  # s: from Acquire to Armed

logger = logging.getLogger(__name__)


def _part(device: Device, dotted: str) -> Any:
    """``device.<dotted>``, creating lazy parts on the way without ophyd's wait of 1 s for each
    (a busy host misses it); the caller waits for them all with its own timeout."""
    part: Any = device
    for attr in dotted.split("."):
        if isinstance(part, Device):
            part.lazy_wait_for_connection = False
        part = getattr(part, attr)
    return part


# Lazy parts used after stage besides the staged ones (stage waits for their channels too),
# by every device and by each file source.
USED_PARTS = (
    "cam.acquire", "cam.acquire_busy", "cam.acquire_period", "cam.detector_state",
    "cam.status_message", "cam.array_size.array_size_x", "cam.array_size.array_size_y",
)
USED_PARTS_BY_SOURCE = {
    FileSource.HDF5_PLUGIN: ("hdf1.capture", "hdf1.full_file_name", "hdf1.file_path_exists",
                             "hdf1.data_type", "hdf1.array_size.width",
                             "hdf1.array_size.height", "cam.armed", "cam.special_trigger_button",
                             "stats1.enable", "stats1.array_counter", "stats2.enable",
                             "stats2.array_counter"),
    FileSource.FILE_WRITER: ("file_writer.file_path_exists", "file_writer.sequence_id",
                             "file_writer.bit_depth", "file_writer.state",
                             "file_writer.create_directory"),
}


class Eiger2Cam(EigerDetectorCam):
    """``cam1:`` of an ADEiger IOC for an EIGER2: ophyd's Eiger camera without the records an
    EIGER2 IOC does not serve, plus ``AcquireBusy`` and ``WaitForPlugins`` (ADCore 3.4)."""

    _cam_release = "3.4"  # tells apstools' SingleTrigger_V34 to wait on AcquireBusy
    # Lazy parts connect when first used, with the patience stage gives them, not ophyd's 1 s.
    lazy_wait_for_connection = False

    link_0 = link_1 = link_2 = link_3 = None  # EIGER1 only
    dcu_buff_free = fw_clear = None  # EIGER1 only
    file_number_sync = file_number_write = pool_max_buffers = None  # pre-ADCore-3 records

    acquire_busy = ADCpt(EpicsSignalRO, "AcquireBusy")
    armed = ADCpt(EpicsSignalRO, "Armed", string=True, auto_monitor=True)
    wait_for_plugins = ADCpt(EpicsSignal, "WaitForPlugins", string=True, kind="config")
    # Enum records staged by name: read back as strings so put-and-compare matches.
    trigger_mode = ADCpt(SignalWithRBV, "TriggerMode", string=True)
    manual_trigger = ADCpt(SignalWithRBV, "ManualTrigger", string=True)
    save_files = ADCpt(SignalWithRBV, "SaveFiles", string=True)
    fw_enable = ADCpt(SignalWithRBV, "FWEnable", string=True)
    data_source = ADCpt(SignalWithRBV, "DataSource", string=True)
    array_callbacks = ADCpt(SignalWithRBV, "ArrayCallbacks", string=True)
    # Health, read at every point: monitored, so a healthy point costs no round trip.
    detector_state = ADCpt(EpicsSignalRO, "DetectorState_RBV", string=True, auto_monitor=True)
    status_message = ADCpt(EpicsSignalRO, "StatusMessage_RBV", string=True, auto_monitor=True)


class _FrameStore:
    """What both file sources share: the directory of a stage, checked on both sides of the share
    before any frame; the Resource of the file by its read path; the image's data key.

    The host class has ``create_directory``, ``file_path``, ``file_path_exists`` and an
    ``in_use`` flag: the store of the other file source stays idle (its settings only).
    """

    in_use = True
    tiled_slice: str | None = None  # what Tiled serves of the dataset, if not all of it
    _write_path_template: str
    _read_path_template: str | None

    @property
    def templates(self) -> PathTemplates:
        """The write (IOC) and read (Bluesky/Tiled) path templates, validated."""
        return PathTemplates(self._write_path_template, self._read_path_template)

    def _open_directory(self, message: EpicsSignalRO) -> ExpandedPaths:
        """Expand both templates once, have the IOC create and take the write directory, and
        check this host reads it; ``message`` is where the IOC says why it refused."""
        paths = self.templates.expand()
        self.paths = paths
        # CreateDirectory acts when FilePath is written, so it goes first.
        self.create_directory.set(self.create_directory_depth, timeout=SIGNAL_TIMEOUT).wait(
            SIGNAL_TIMEOUT)
        self.file_path.set(paths.write, timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)
        if not self.file_path_exists.get(use_monitor=False):
            said = message.get(as_string=True, use_monitor=False)
            raise WritePathError.refused(paths, self.templates.write, said)
        paths.check_readable()
        return paths

    @property
    def recorded_read_path(self) -> Path:
        """The file the Resource records (the HDF1 file, or the FileWriter's master), where this
        host and Tiled read it."""
        if self._fn is None:
            raise RuntimeError(f"{self.name} is not staged: no file yet")
        return Path(self._fn)

    def _resource(self, frames_per_point: int) -> None:
        kwargs: dict[str, Any] = {"dataset": DATA_DATASET}
        if self.tiled_slice is not None:
            kwargs["slice"] = self.tiled_slice
        if frames_per_point > 1:
            # TiledWriter adds a per-point axis for frame_per_point, even for 1: only for > 1.
            kwargs["frame_per_point"] = frames_per_point
        FileStoreIterativeWrite._generate_resource(self, kwargs)

    def point_shape(self) -> tuple[int, ...]:
        """One event's image: (H, W) for one frame per point, (n, H, W) for n."""
        cam = self.parent.cam
        height = cam.array_size.array_size_y.get()
        width = cam.array_size.array_size_x.get()
        frames = self.parent.images_per_point
        return (height, width) if frames == 1 else (frames, height, width)

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        for key in self._datum_uids:
            description[key]["shape"] = list(self.point_shape())
            description[key]["dtype_numpy"] = self.dtype_numpy()
        return description


class _LazyOpenHDF5Plugin(HDF5Plugin_V34):
    """HDF5Plugin_V34 without its stage-time 'unprimed' check, which reads ``ArraySize`` before
    ``LazyOpen`` is staged; ``Eiger2HDF5Plugin.stage`` checks priming once the settings are in."""

    def stage(self) -> list[object]:
        return super(HDF5Plugin, self).stage()


class Eiger2HDF5Plugin(_FrameStore, FileStoreHDF5IterativeWrite, _LazyOpenHDF5Plugin):
    """``HDF1:`` writing one NDFileHDF5 file per stage, recorded by its read path (the
    ``hdf5_plugin`` file source), with the camera's NDAttributes and SWMR on.

    ``LazyOpen`` makes the plugin take frame size and type from the first frame, so it needs no
    priming; if the IOC does not honour it and the plugin was never primed, stage says so.
    """

    # Lazy parts connect when first used, with the patience stage gives them, not ophyd's 1 s.
    lazy_wait_for_connection = False

    create_directory = Cpt(SignalWithRBV, "CreateDirectory", kind="config")
    # Health, read at every point: monitored, so a healthy point costs no round trip.
    write_status = Cpt(EpicsSignalRO, "WriteStatus", string=True, auto_monitor=True,
                       kind="omitted")
    write_message = Cpt(EpicsSignalRO, "WriteMessage", string=True, auto_monitor=True,
                        kind="omitted")
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", auto_monitor=True, kind="omitted")
    dropped = Cpt(EpicsSignalRO, "DroppedArrays_RBV", auto_monitor=True, kind="omitted")

    def __init__(self, *args: Any, create_directory_depth: int = -3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.create_directory_depth = create_directory_depth
        self.paths: ExpandedPaths | None = None
        del self.stage_sigs["capture"]  # started in stage() once every check has passed
        self.stage_sigs.pop("create_directory", None)  # put before FilePath, in make_filename()
        self.stage_sigs.update(
            [
                ("enable", "Enable"),
                ("lazy_open", "Yes"),
                ("auto_increment", "No"),  # the name is unique per stage; the number stays 0
                ("file_template", FILE_TEMPLATE),
                ("store_attr", "Yes"),  # the camera's NDAttributes with each frame
                ("swmr_mode", "On"),  # readable (by Tiled, by the doctor) while written
            ]
        )

    def make_filename(self) -> tuple[str, str, str]:
        """Expand both templates once and check both views of the directory before any frame."""
        name, _, _ = super().make_filename()
        if self.file_write_mode.get(as_string=True) != "Single":
            self.capture.set(0, timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)
        paths = self._open_directory(self.write_message)
        return name, paths.read, paths.write

    def wait_for_file(self, timeout: float = READ_PATH_GRACE) -> Path:
        """Wait until the file the IOC writes shows at the read path; else ``ReadPathError``.

        A read path that exists but is a different directory from the write path passes the
        stage checks; this catches it after the first frames, before the scan goes on.
        """
        path = self.recorded_read_path
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                written = self.full_file_name.get(as_string=True, use_monitor=False)
                raise ReadPathError.not_shown(written, path, self.paths.read, self.paths.write,
                                              timeout)
            time.sleep(0.05)
        return path

    # --- staging ---------------------------------------------------------------------------

    def stage(self) -> list[object]:
        if not self.in_use:  # the FileWriter source: only EnableCallbacks Disable
            return Device.stage(self)
        staged = super().stage()
        try:
            self._check_primed()
            self.capture.set(1, timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)
        except Exception:
            self.unstage()
            raise
        return staged

    def unstage(self) -> list[object]:
        if not self.in_use:
            return Device.unstage(self)
        # Ending the capture closes the file.
        self.capture.set(0, timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)
        return super().unstage()

    def _check_primed(self) -> None:
        """With LazyOpen the first frame sizes the file; without it the plugin must be primed."""
        if self.lazy_open.get(as_string=True, use_monitor=False) == "Yes":
            return
        if sum(self.array_size.get(use_monitor=False)) > 0:
            return
        raise UnprimedPlugin(
            f"{self.name} ({self.prefix}) has never seen a frame and its LazyOpen is not 'Yes', "
            "so it cannot size the file. Fix: let the IOC accept LazyOpen=Yes (the device sets "
            "it), or acquire one frame with the plugin enabled before the scan."
        )

    def _generate_resource(self, resource_kwargs: dict[str, Any]) -> None:
        # ophyd names the file with FileNumber - 1 (AutoIncrement moves it at file open); ours
        # stays put, and with LazyOpen the file opens only at the first frame.
        self._fn = self.file_template.get() % (self._fp, self.file_name.get(), self.file_number.get())
        self._resource(resource_kwargs.get("frame_per_point", 1))

    def dtype_numpy(self) -> str:
        """The frames' numpy dtype from this plugin's ``DataType_RBV`` (the camera's record is
        disabled on EIGER2 IOCs, and the type follows the timing: UInt8/16/32)."""
        return np.dtype(self.data_type.get(as_string=True, use_monitor=False).lower()).str


class Eiger2FileWriter(_FrameStore, FileStoreIterativeWrite, Device):
    """The detector's own FileWriter (its records on ``cam1:``), downloaded by the IOC into
    ``cam1:FilePath`` (the ``file_writer`` file source): a series per point, named by a unique
    ``FWNamePattern`` and the arm's sequence id, v2024.2 (``/entry/data/data`` in the master,
    (n, thresholds, y, x), of which Tiled serves the first threshold), one data file each; each
    point recorded as a resource of its own, by its master's read path."""

    filestore_spec = "AD_HDF5"
    tiled_slice = FIRST_THRESHOLD  # v2024.2 data are (n, thresholds, y, x): the first threshold
    lazy_wait_for_connection = False

    enable = Cpt(SignalWithRBV, "FWEnable", string=True, kind="config")
    file_path = Cpt(SignalWithRBV, "FilePath", string=True, kind="config")
    file_path_exists = Cpt(EpicsSignalRO, "FilePathExists_RBV", kind="omitted")
    create_directory = Cpt(SignalWithRBV, "CreateDirectory", kind="config")
    name_pattern = Cpt(SignalWithRBV, "FWNamePattern", string=True, kind="config")
    images_per_file = Cpt(SignalWithRBV, "FWNImagesPerFile", kind="config")
    hdf5_format = Cpt(SignalWithRBV, "FWHDF5Format", string=True, kind="config")
    compression = Cpt(SignalWithRBV, "FWCompression", string=True, kind="config")
    save_files = Cpt(SignalWithRBV, "SaveFiles", string=True, kind="config")
    sequence_id = Cpt(EpicsSignalRO, "SequenceId", kind="omitted")
    bit_depth = Cpt(EpicsSignalRO, "BitDepthImage_RBV", kind="omitted")
    # Health, read while a point waits for its file: monitored, no round trip.
    state = Cpt(EpicsSignalRO, "FWState_RBV", string=True, auto_monitor=True, kind="omitted")
    free = Cpt(EpicsSignalRO, "FWFree_RBV", kind="omitted")

    def __init__(self, *args: Any, write_path_template: str = "/",
                 create_directory_depth: int = -3, **kwargs: Any) -> None:
        super().__init__(*args, write_path_template=write_path_template, **kwargs)
        self.create_directory_depth = create_directory_depth
        self.paths: ExpandedPaths | None = None
        self.series: DownloadedSeries | None = None
        self._pattern = ""
        self.stage_sigs.update([
            ("enable", "Enable"), ("hdf5_format", "v2024.2"), ("compression", "Enable"),
        ])

    def stage(self) -> list[object]:
        if not self.in_use:  # the HDF5 plugin source: only FWEnable and SaveFiles Disable
            return Device.stage(self)
        self.series = None
        self.stage_sigs["images_per_file"] = self.parent.images_per_point
        staged = super().stage()
        try:
            # Not restored at unstage: the IOC must go on downloading the series' last files.
            self.save_files.set("Enable", timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)
            self._open_directory(self.parent.cam.status_message)
            self._pattern = unique_name_pattern()
            self.name_pattern.set(self._pattern, timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)
        except Exception:
            self.unstage()
            raise
        return staged

    def unstage(self) -> list[object]:
        if not self.in_use:
            return Device.unstage(self)
        return super().unstage()

    def record_point(self, timeout: float) -> DownloadedSeries:
        """Once the point's acquisition ended (the IOC has downloaded its series): wait until
        its files show at the read path, then record its master as a new Resource, whose first
        frames are the point's."""
        frames = self.parent.images_per_point
        series = self.series = DownloadedSeries.armed(
            self.paths.read, self._pattern, int(self.sequence_id.get(use_monitor=False)), frames)
        series.wait_for_files(frames, timeout)
        self._fn = str(series.master)
        self._point_counter = itertools.count()  # the datum's index, in this master
        self._resource(frames)
        return series

    def dtype_numpy(self) -> str:
        """The frames' numpy dtype from ``BitDepthImage_RBV`` (UInt8/16/32 by the timing)."""
        bits = int(self.bit_depth.get(use_monitor=False))
        return np.dtype(DATA_TYPE_BY_BITS.get(bits, "UInt32").lower()).str


class Eiger2ROIPlugin(ROIPlugin_V34):
    """``ROI1:`` (NDPluginROI): the region Stats2 sums."""

    lazy_wait_for_connection = False


class Eiger2StatsPlugin(StatsPlugin_V34):
    """``Stats1:``/``Stats2:`` (NDPluginStats), read at each point: from monitors, so a point
    costs no round trip (the IOC posts them before AcquireBusy, on the same circuit)."""

    lazy_wait_for_connection = False
    total = ADCpt(EpicsSignalRO, "Total_RBV", auto_monitor=True)
    net = ADCpt(EpicsSignalRO, "Net_RBV", auto_monitor=True)


class Eiger2Detector(SingleTrigger_V34, DetectorBase):
    """The EIGER2 500K: ``cam1:``, its files, and the Stats numbers; data key ``<name>_image``.

    Each point takes ``images_per_point`` frames (Internal Series). ``file_source`` picks who
    writes them. ``hdf5_plugin``: ``hdf1`` (``HDF1:``) captures one file per stage, stored with
    ``compression`` (an ``HDF1:Compression`` choice); the detector is armed once per stage
    (``ManualTrigger``) and each point is a ``cam1:Trigger``, done when HDF1 and the enabled
    Stats plugins have its frames. ``file_writer``: ``file_writer`` (the DCU's FileWriter) writes
    a series per arm, so each point arms, and the IOC downloads the series before ``AcquireBusy``
    is Done (at least ADEiger's 0.5 s per arm); the point is done when its files show at the
    read path.
    """

    # Lazy parts connect when first used, with the patience stage gives them, not ophyd's 1 s.
    lazy_wait_for_connection = False

    cam = Cpt(Eiger2Cam, "cam1:")
    hdf1 = Cpt(Eiger2HDF5Plugin, "HDF1:", write_path_template="/", kind="normal")
    file_writer = Cpt(Eiger2FileWriter, "cam1:", kind="normal")
    roi1 = Cpt(Eiger2ROIPlugin, "ROI1:", kind="config")
    stats1 = Cpt(Eiger2StatsPlugin, "Stats1:", kind="normal")  # total: <name>_stats1_total
    stats2 = Cpt(Eiger2StatsPlugin, "Stats2:", kind="normal")  # net: <name>_stats2_net
    _default_read_attrs = ("hdf1", "stats1", "stats2")  # areaDetector devices read nothing

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
        compression: str = "BSLZ4",
        roi: list[int] | None = None,
        file_source: str = FileSource.HDF5_PLUGIN.value,
    ) -> None:
        check_images_per_point(images_per_point)
        region = None if roi is None else check_roi(roi, EIGER2_500K)
        self.file_source = check_file_source(file_source)
        super().__init__(prefix, name=name, labels=labels or ["detectors"])
        PathTemplates(write_path_template, read_path_template)  # refuse bad templates now
        check_compression(compression)
        self.images_per_point = images_per_point
        for store in (self.hdf1, self.file_writer):
            store.write_path_template = write_path_template
            store.read_path_template = read_path_template
            store.create_directory_depth = create_directory_depth
        by_file_writer = self.file_source is FileSource.FILE_WRITER
        self.store: Eiger2HDF5Plugin | Eiger2FileWriter = (
            self.file_writer if by_file_writer else self.hdf1)
        # The HDF5 plugin source arms once per stage: each point is then one manual trigger,
        # not an arm (tens of ms on the detector). A FileWriter series per point needs an arm.
        self.arms_per_stage = not by_file_writer
        self.cam.stage_sigs.update(
            [
                ("trigger_mode", "Internal Series"),
                ("manual_trigger", "Enable" if self.arms_per_stage else "Disable"),
                ("num_triggers", ARMED_TRIGGERS if self.arms_per_stage else 1),
                ("num_images", images_per_point),
                ("wait_for_plugins", "Yes"),
                ("array_callbacks", "Enable"),
                ("data_source", "Stream"),  # frames reach HDF1 and Stats as taken
            ]
        )
        if by_file_writer:  # HDF1 idle; the DCU writes, the IOC downloads (SaveFiles)
            self.hdf1.in_use = False
            self.hdf1.stage_sigs.clear()
            self.hdf1.stage_sigs["enable"] = "Disable"
        else:  # the DCU idle: its disk would fill for nobody; HDF1 writes the one file
            self.file_writer.in_use = False
            self.file_writer.stage_sigs.clear()
            self.file_writer.stage_sigs.update([("enable", "Disable"), ("save_files", "Disable")])
            self.hdf1.stage_sigs["compression"] = compression
        self.read_attrs = [self.store.attr_name, "stats1", "stats2"]
        self.stats1.read_attrs = ["total"]
        self.stats1.total.kind = "hinted"
        self.stats2.read_attrs = ["total", "net"]
        self.stats2.net.kind = "hinted"
        self.roi: Roi | None = None
        if region is not None:
            self.set_roi(*region)
        self._file_checked = False
        self._trigger_timeout = TRIGGER_MARGIN
        self.download_timeout = DOWNLOAD_TIMEOUT  # s: a full file reaches the read path
        self._frames_taken = 0  # frames the points so far asked for
        self._frames_confirmed = 0  # frames the IOC confirmed in the file
        self._dropped_at_stage = 0
        self._failure: Exception | None = None  # the first cause, once a point failed
        self._point: DeviceStatus | None = None  # the point in flight
        self._watchdog = PointWatchdog(self.name)  # the point's deadline: a thread a stage
        self._counters = CounterTargets(self._point_reached)  # with arms_per_stage
        self._armed = False  # armed for this stage's manual triggers
        self._triggers_sent = 0  # of this arm
        self._frames_before_arm = 0  # frames of the stage taken by its earlier arms

    def generate_datum(self, key: str, timestamp: float, datum_kwargs: dict | None = None) -> None:
        """The point's datum, from the store in use only: ophyd's dispatch would ask every file
        plugin's ``enable`` over Channel Access at each point (and an enum string is always
        truthy)."""
        self.store.generate_datum(key, timestamp, datum_kwargs or {})

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        """The region ROI1 cuts for Stats2 (detector pixels), from the next stage on; ValueError
        if it is not inside the frame."""
        region = check_roi((x, y, width, height), EIGER2_500K)
        self.roi1.stage_sigs.update([
            ("roi_enable.x", "Enable"), ("roi_enable.y", "Enable"),
            ("min_xyz.min_x", region.x), ("min_xyz.min_y", region.y),
            ("size.x", region.width), ("size.y", region.height), ("bin_.x", 1), ("bin_.y", 1),
        ])
        self.roi = region

    def stage(self) -> list[object]:
        self.store.templates.check_read_mount(self.store.create_directory_depth)
        self._file_checked = False
        self._frames_taken = self._frames_confirmed = 0
        self._failure = None
        # Every channel the device uses, made now and waited for with 30 s of patience: a
        # restarted IOC's channels come back one by one in CA's search back-off, and a busy host
        # may take more than ophyd's 1 s to connect one (a lazy part then failed the stage).
        for device in (self, self.cam, self.hdf1, self.file_writer, self.roi1, self.stats1,
                       self.stats2):
            for attr in device.stage_sigs:
                signal = _part(device, attr)
                # ophyd waits forever for a staged value's readback unless told otherwise.
                if getattr(signal, "_write_timeout", SIGNAL_TIMEOUT) is None:
                    signal._write_timeout = SIGNAL_TIMEOUT
        for name in (*USED_PARTS, *USED_PARTS_BY_SOURCE[self.file_source]):
            _part(self, name)
        try:
            self.wait_for_connection(timeout=RECONNECT_TIMEOUT)  # every channel made so far
        except TimeoutError as err:
            raise self._not_responding(RECONNECT_TIMEOUT) from err
        staged = super().stage()
        # Read once here, not at every point: the exposure settings do not change mid-scan.
        period = max(self.cam.acquire_period.get(), 0.0)
        self._trigger_timeout = self.images_per_point * period + TRIGGER_MARGIN
        self._dropped_at_stage = (0 if self.file_source is FileSource.FILE_WRITER
                                  else int(self.hdf1.dropped.get()))
        self.cam.acquire_busy.subscribe(self._on_connection, event_type="meta", run=False)
        if self.arms_per_stage:
            try:
                self._start_counting()
                self._arm()
            except Exception as err:
                self._remember(err)
                self.unstage()  # with the cause remembered, a cleanup error is only logged
                raise
        return staged

    def _start_counting(self) -> None:
        """Follow HDF1's captured frames and each enabled Stats plugin's arrays (Stats2 takes
        ROI1's), so a point is done when all of them have its frames."""
        self._counters.clear()
        self._counters.watch(self.hdf1.num_captured)
        for plugin in (self.stats1, self.stats2):
            if plugin.enable.get(use_monitor=False) == "Enable":
                self._counters.watch(plugin.array_counter)
        self.cam.acquire_busy.subscribe(self._on_acquire_busy, run=False)

    def _arm(self) -> None:
        """Arm for ``ARMED_TRIGGERS`` manual triggers; returns once the IOC says Armed, or
        raises the detector's own reason for refusing (or ``DetectorNotResponding``)."""
        outcome: list[str] = []
        ready = threading.Event()
        began = threading.Event()  # a state other than Error since Acquire (a fresh refusal)

        def on_armed(value: str, **kwargs: Any) -> None:
            if value == "Armed":
                outcome.append(value)
                ready.set()

        def on_state(value: str, **kwargs: Any) -> None:
            if value != "Error":
                began.set()
            elif began.is_set():
                outcome.append(value)
                ready.set()

        self._triggers_sent = 0
        self._frames_before_arm = self._frames_taken  # the counters count from this arm
        self.cam.armed.subscribe(on_armed, run=False)
        self.cam.detector_state.subscribe(on_state, run=False)
        try:
            self.cam.acquire.put(1, wait=False)
            deadline = time.monotonic() + ARM_TIMEOUT
            while not ready.wait(0.1):  # the monitor, or (should an update be missed) its value
                if self.cam.armed.get() == "Armed":
                    outcome.append("Armed")
                    break
                if time.monotonic() > deadline:
                    raise self._not_responding(ARM_TIMEOUT)
        finally:
            self.cam.armed.clear_sub(on_armed)
            self.cam.detector_state.clear_sub(on_state)
        if outcome[0] != "Armed":
            message = self.cam.status_message.get(as_string=True, use_monitor=False)
            raise arm_refused(f"{self.name} ({self.prefix})", message)
        self._armed = True

    def _disarm(self) -> None:
        """End the stage's arm (``Acquire`` Done); returns once the IOC is no longer busy."""
        self._armed = False
        self.cam.acquire_busy.clear_sub(self._on_acquire_busy)
        self._counters.clear()
        self.cam.acquire.set(0, timeout=SIGNAL_TIMEOUT).wait(SIGNAL_TIMEOUT)

    def _on_acquire_busy(self, *, value: int, **kwargs: Any) -> None:
        """The stage's arm ended without unstage (its triggers used up, a stop from a panel, an
        error): the next point arms again if the triggers ran out, else fails naming why."""
        if value or not self._armed:
            return
        self._armed = False
        point = self._point
        if self._triggers_sent < ARMED_TRIGGERS and point is not None and not point.done:
            self._fail(point, self._arm_ended_error())

    def _arm_ended_error(self) -> DetectorError:
        return arm_ended(self.name, self.prefix, self.cam.detector_state.get(),
                         self._frames_confirmed, self.hdf1._fn or "",
                         self.cam.status_message.get())

    def unstage(self) -> list[object]:
        """End the capture (the IOC then closes the file) and check every confirmed frame is in
        it. Always leaves the device unstaged; after a failed point, cleanup errors are logged,
        not raised, so the point's error stays the one the plan ends with."""
        self._watchdog.stop()
        self.cam.acquire_busy.clear_sub(self._on_connection)
        try:
            if not self._ioc_connected():
                raise self._not_responding(0)
            if self.arms_per_stage:
                self._disarm()
            unstaged = super().unstage()
            if self.store is self.hdf1 and self._failure is None and self._frames_confirmed:
                check(self._health(use_monitor=False, expected=self._frames_confirmed))
            return unstaged
        except Exception as err:
            self._force_unstaged()
            if self._failure is not None:
                logger.warning("%s: unstage after %r also failed: %s", self.name, self._failure, err)
                return [self]
            raise

    def _force_unstaged(self) -> None:
        """Mark the device and its parts unstaged whatever the IOC did, so the next plan can
        stage again (instead of RedundantStaging) once the IOC answers."""
        self._armed = False
        self.cam.acquire_busy.clear_sub(self._on_acquire_busy)
        self._counters.clear()
        for device in (*(sub for _, sub in self.walk_subdevices(include_lazy=True)), self):
            device._staged = Staged.no
            device._original_vals.clear()
        store = self.store  # what FileStoreBase/IterativeWrite.unstage reset, short of CA
        store._locked_key_list = False
        store._resource_uid = None
        store._asset_docs_cache.clear()
        store._point_counter = None

    def _not_responding(self, waited: float) -> Exception:
        return not_responding(self.name, self.prefix, waited, self.store._fn or "",
                              self._frames_confirmed)

    def _on_connection(self, *, connected: bool = True, **kwargs: Any) -> None:
        """A point in flight fails the moment the IOC's connection closes, not at its timeout."""
        point = self._point
        if not connected and point is not None and not point.done:
            self._fail(point, self._not_responding(0))

    def _ioc_connected(self) -> bool:
        return self.cam.acquire.connected and self.cam.acquire_busy.connected

    def _health(self, use_monitor: bool = True, expected: int | None = None) -> HealthReading:
        """The IOC's account of the capture; ``DetectorNotResponding`` if it does not answer.
        With the FileWriter source, captured frames are those of the points done and those of
        the point's series at the read path."""
        hdf1, cam = self.hdf1, self.cam
        expected = self._frames_taken if expected is None else expected
        try:
            if self.file_source is FileSource.FILE_WRITER:
                writer = self.file_writer
                series, done = writer.series, self._frames_confirmed
                # The DCU posts FWState_RBV "error" before the detector's Error: read the
                # detector first, so a monitor arriving between the reads cannot hide the cause.
                detector_state = cam.detector_state.get(use_monitor=use_monitor)
                message = cam.status_message.get(use_monitor=use_monitor)
                fw_state = writer.state.get(use_monitor=use_monitor)
                return HealthReading(
                    name=self.name, prefix=self.prefix, file=str(writer._fn or ""),
                    expected=expected,
                    captured=done + (series.frames_downloaded(expected - done) if series else 0),
                    write_status="Write error" if fw_state == "error" else "Write OK",
                    write_message=message, detector_state=detector_state,
                    status_message=message, writer_pv="cam1:FWState_RBV",
                )
            return HealthReading(
                name=self.name, prefix=self.prefix, file=hdf1._fn or "", expected=expected,
                captured=int(hdf1.num_captured.get(use_monitor=use_monitor)),
                write_status=hdf1.write_status.get(use_monitor=use_monitor),
                write_message=hdf1.write_message.get(use_monitor=use_monitor),
                detector_state=cam.detector_state.get(use_monitor=use_monitor),
                status_message=cam.status_message.get(use_monitor=use_monitor),
                dropped=int(hdf1.dropped.get(use_monitor=use_monitor)) - self._dropped_at_stage,
            )
        except (TimeoutError, DisconnectedError) as err:
            raise self._not_responding(SIGNAL_TIMEOUT) from err

    def _ioc_answers(self) -> bool:
        """The IOC answers a read of the camera's state within ``HEALTH_TIMEOUT`` (a frozen IOC
        keeps its connections open, so being connected does not say it answers)."""
        try:
            self.cam.detector_state.get(use_monitor=False, timeout=HEALTH_TIMEOUT)
        except (TimeoutError, DisconnectedError):
            return False
        return True

    def _point_timeout_error(self) -> Exception:
        """Why a point did not finish in time: a silent IOC, its own error, or a stall."""
        if not self._ioc_connected() or not self._ioc_answers():
            return self._not_responding(self._trigger_timeout)
        reading = self._health()
        try:
            check_errors(reading)
            if reading.dropped:  # frames that never reached the writer: that is the cause
                check(reading)
        except DetectorError as err:
            return err
        short = "; ".join(self._counters.shortfalls()) if self.arms_per_stage else ""
        return DetectorError(
            f"{self.name}: the point did not finish in {self._trigger_timeout:.1f} s (NumImages x "
            f"AcquirePeriod + {TRIGGER_MARGIN:g} s): detector {reading.detector_state!r}, "
            f"{reading.captured} of {reading.expected} frames in {reading.file}"
            f"{f' ({short})' if short else ''}; it says "
            f"{reading.status_message!r} ({self.prefix}cam1:StatusMessage_RBV). Fix: check the "
            "IOC (a stalled detector: put cam1:Acquire=Done), then run again."
        )

    def _remember(self, error: Exception) -> Exception:
        """``error``, remembered as the cause if it is the stage's first failure."""
        self._failure = self._failure or error
        return error

    def _fail(self, status: DeviceStatus, error: Exception) -> None:
        """End the point with ``error``; the first failure of a stage is remembered as the cause."""
        self._remember(error)
        with contextlib.suppress(InvalidState):  # the point ended already (a racing timeout)
            status.set_exception(error)

    def read(self) -> OrderedDict[str, dict[str, Any]]:
        """The point's readings; at the stage's first point first the check that the HDF1 file
        shows at the read path, so a ``ReadPathError`` reaches the plan itself, before a second
        point is taken (the FileWriter source's points wait for their downloads there)."""
        if self.store is self.hdf1 and not self._file_checked:
            self.hdf1.wait_for_file()
            self._file_checked = True
        if self.arms_per_stage:
            # A plugin posts ArrayCounter_RBV (which ended the point) before its numbers: ask.
            for name in ("stats1.total", "stats2.total", "stats2.net"):
                if name in self.read_attrs:
                    _part(self, name).get(use_monitor=False)
        return super().read()

    def trigger(self) -> DeviceStatus:
        """Start one point; done when the frames are in the file (the IOC confirms HDF1's; the
        FileWriter's show at the read path) and the Stats plugins have them; failed with the
        IOC's own message, or after the trigger timeout."""
        if self._staged != Staged.yes:
            raise RuntimeError(f"{self.name} is not staged: stage it (a plan does) before trigger")
        if not self._ioc_connected():
            raise self._remember(self._not_responding(0))
        if self.arms_per_stage:
            return self._trigger_armed()
        by_file_writer = self.store is self.file_writer
        # As SingleTrigger.trigger, but keeping our own reference: a fast acquisition can end
        # (and clear self._status) before SingleTrigger.trigger returns it.
        try:
            status = self._status = self._status_type(self)  # reads ArrayCounter
            self.file_writer.series = None  # the point's series is known once it is over
            self._acquisition_signal.put(1, wait=False)
        except (TimeoutError, DisconnectedError) as err:
            raise self._remember(self._not_responding(SIGNAL_TIMEOUT)) from err
        self._frames_taken += self.images_per_point
        if not by_file_writer:  # the FileWriter's datum names its series: recorded at the end
            self.generate_datum(self._image_name, time.time(), {})
        watched = self._start_point()

        def finish(done: ADTriggerStatus) -> None:
            self._watchdog.cancel()
            error = done.exception()
            if error is not None:
                self._fail(watched, error)
            elif not by_file_writer and self._health().healthy:
                self._frames_confirmed = self._frames_taken
                watched.set_finished()
            else:
                threading.Thread(target=self._confirm, args=(watched,), daemon=True).start()

        status.add_callback(finish)
        return watched

    def _trigger_armed(self) -> DeviceStatus:
        """A point of the stage's arm: one ``cam1:Trigger`` (arming again once an arm's
        triggers are used up); done when every counter holds its frames."""
        if self._triggers_sent >= ARMED_TRIGGERS:  # whether or not its end was seen yet
            self._disarm()
            self._start_counting()
            self._arm()
        elif not self._armed:
            raise self._remember(self._arm_ended_error())
        self._frames_taken += self.images_per_point
        self.generate_datum(self._image_name, time.time(), {})
        watched = self._start_point()
        self._triggers_sent += 1
        try:
            self.cam.special_trigger_button.put(1, wait=False)
        except (TimeoutError, DisconnectedError) as err:
            self._watchdog.cancel()
            raise self._remember(self._not_responding(SIGNAL_TIMEOUT)) from err
        self._counters.expect(self._frames_taken - self._frames_before_arm)
        return watched

    def _start_point(self) -> DeviceStatus:
        """The point's status, failed by the watchdog after the trigger timeout."""
        watched = self._point = DeviceStatus(self)
        self._watchdog.start(self._trigger_timeout,
                             lambda: self._fail(watched, self._point_timeout_error()))
        return watched

    def _point_reached(self) -> None:
        """(Channel Access' callback thread) every counter holds the point's frames."""
        point = self._point
        if point is None or point.done:
            return
        self._watchdog.cancel()
        if self._health().healthy:  # from monitors
            self._frames_confirmed = self._frames_taken
            point.set_finished()
        else:
            threading.Thread(target=self._confirm, args=(point,), daemon=True).start()

    def _confirm(self, point: DeviceStatus) -> None:
        """Off the CA callback thread: the FileWriter's files awaited at the read path, and the
        IOC asked when its monitors did not yet show a healthy point."""
        try:
            if self.store is self.file_writer:
                self.file_writer.record_point(self.download_timeout)
                self.generate_datum(self._image_name, time.time(), {})
            reading = self._health()
            if not reading.healthy:  # monitors may trail the counters: ask
                reading = self._health(use_monitor=False)
            check(reading)
        except Exception as err:
            self._fail(point, err)
            return
        self._frames_confirmed = reading.expected
        point.set_finished()
