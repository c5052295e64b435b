"""Test support: talk to simulator processes over real Channel Access, and what they wrote."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters for h5py)
import httpx
import numpy as np
import yaml

from id3c_eiger.config import load_devices
from id3c_eiger.deploy import API_KEY_VARIABLE
from id3c_eiger.geometry import EIGER2_500K
from id3c_eiger.health import RECONNECT_TIMEOUT
from id3c_eiger.layout import DATA_DATASET, frame_images, read_metadata
from id3c_eiger_sim.faults import FAULTS
from id3c_eiger_sim.frames import FrameGenerator, FrameSettings
from id3c_eiger_sim.process import free_port

SEED = 0
PLUGINS = {"ROI1:": "EIG", "Stats1:": "EIG", "Stats2:": "ROI1", "image1:": "EIG", "Pva1:": "EIG"}
CLASSIC = "id3c_eiger.devices.Eiger2Detector"
ASYNC = "id3c_eiger.async_devices.Eiger2Detector"


class CATimeout(Exception):
    """A Channel Access operation got no answer in time."""


class Sim:
    """A client of one simulator: put/get by PV suffix, over pyepics (libca)."""

    def __init__(self, prefix: str) -> None:
        import epics

        self._epics = epics
        self.prefix = prefix

    def pv(self, suffix: str):
        """The (cached) pyepics PV, connected."""
        # A restarted IOC is found again within CA's search back-off (seen: up to 20 s).
        pv = self._epics.get_pv(self.prefix + suffix, connect=True, timeout=RECONNECT_TIMEOUT)
        if not pv.connected:
            raise CATimeout(f"{self.prefix}{suffix} did not connect within {RECONNECT_TIMEOUT} s")
        return pv

    def put(self, suffix: str, value: Any, wait: bool = True, timeout: float = 30.0) -> None:
        """Put ``value``; with ``wait``, until the IOC's put-completion (or CATimeout)."""
        result = self.pv(suffix).put(value, wait=wait, timeout=timeout)
        if wait and result != 1:
            raise CATimeout(f"put {self.prefix}{suffix}={value!r}: no completion in {timeout}s")

    def get(self, suffix: str, as_string: bool = False) -> Any:
        """The current value (enum strings and CHAR waveforms as text with ``as_string``)."""
        pv = self.pv(suffix)
        # Ask for every element: pyepics otherwise reuses the length of an earlier, shorter
        # CHAR waveform value and cuts the text.
        value = pv.get(as_string=as_string, use_monitor=False, timeout=5.0, count=pv.nelm)
        if value is None:
            raise CATimeout(f"get {self.prefix}{suffix}: no answer in 5 s")
        return value

    def text(self, suffix: str) -> str:
        """Value as text (enum string, CHAR waveform)."""
        return self.get(suffix, as_string=True)

    def wait_for(self, suffix: str, expected: Any, timeout: float = 20.0) -> None:
        """Poll until the value (as text) equals ``expected``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text(suffix) == str(expected):
                return
            time.sleep(0.02)
        raise CATimeout(f"{self.prefix}{suffix} stayed {self.text(suffix)!r}, not {expected!r}")

    def wait_for_at_least(self, suffix: str, count: int, timeout: float = 20.0) -> None:
        """Poll until a counter reaches ``count``."""
        deadline = time.monotonic() + timeout
        while self.get(suffix) < count:
            if time.monotonic() > deadline:
                raise CATimeout(f"{self.prefix}{suffix} stayed at {self.get(suffix)}, not {count}")
            time.sleep(0.02)

    def reset(self, directory: Path, name: str) -> None:
        """Known settings for a test: fast internal series into ``directory``, Stream/BSLZ4.

        An acquisition or capture left running by an earlier (failed) test is stopped first, so
        its frames do not land in this test's files."""
        self.directory = directory
        self.put("cam1:Acquire", "Done")
        self.put("HDF1:Capture", "Done")
        self.wait_for("cam1:Acquire_RBV", "Done")
        cam = {
            "TriggerMode": "Internal Series", "ManualTrigger": "Disable", "NumImages": 1,
            "NumTriggers": 1, "AcquireTime": 0.001, "AcquirePeriod": 0.002, "ArrayCounter": 0,
            "SaveFiles": "Disable", "FWHDF5Format": "v2024.2", "FWNImagesPerFile": 1000,
            "CreateDirectory": 0, "PhotonEnergy": 12000.0, "FWEnable": "Disable",
            "FWNamePattern": "series_$id", "FWAutoRemove": "Disable", "FWCompression": "Enable",
            "CompressionAlgo": "BS LZ4", "FilePerms": 644, "DataSource": "Stream",
            "Threshold2Enable": "Disable",
        }
        hdf = {
            "EnableCallbacks": "Enable", "FileWriteMode": "Stream", "LazyOpen": "Yes",
            "Compression": "BSLZ4", "NumCapture": 0, "AutoIncrement": "Yes", "AutoSave": "No",
            "FileNumber": 1, "CreateDirectory": 0, "FileTemplate": "%s%s_%6.6d.h5",
            "FileName": name, "FilePath": str(directory), "StoreAttr": "Yes", "SWMRMode": "On",
        }
        for key, value in cam.items():
            self.put(f"cam1:{key}", value)
        for key, value in hdf.items():
            self.put(f"HDF1:{key}", value)
        for fault in FAULTS:
            self.put(f"sim:{fault.name}", 0)
        # The plugins' settings need no order: sent without waiting for each completion (each
        # would cost a round trip), then one waited put behind them on the same circuit.
        for key in ("MinX", "MinY", "BinX", "BinY", "SizeX", "SizeY"):  # the whole frame
            self.put(f"ROI1:{key}", 1000000 if key.startswith("Size") else int(
                key.startswith("Bin")), wait=False)
        for plugin, source in PLUGINS.items():
            for key, value in {"EnableCallbacks": "Disable", "BlockingCallbacks": "No",
                               "QueueSize": 20, "DroppedArrays": 0, "ArrayCounter": 0,
                               "MinCallbackTime": 0, "NDArrayPort": source}.items():
                self.put(f"{plugin}{key}", value, wait=False)
        self.put("Pva1:NDArrayPort", PLUGINS["Pva1:"])
        for plugin in PLUGINS:
            self.wait_for(f"{plugin}EnableCallbacks_RBV", "Disable")

    def start_capture(self) -> None:
        """Start a capture without waiting for its end; returns once it is capturing."""
        self.put("HDF1:Capture", "Capture", wait=False)
        self.wait_for("HDF1:Capture_RBV", "Capturing")

    def capture_file(self, timeout: float = 20.0) -> Path:
        """The file of the running capture once it is open: at its first frame with LazyOpen
        (``FullFileName_RBV`` is empty until then, as in NDPluginFile)."""
        deadline = time.monotonic() + timeout
        while not (name := self.text("HDF1:FullFileName_RBV")):
            if time.monotonic() > deadline:
                raise CATimeout(f"{self.prefix}HDF1: opened no file in {timeout} s")
            time.sleep(0.01)
        return Path(name)

    def stream(self, n_images: int, **cam: Any) -> Path:
        """Capture one Stream series of ``n_images`` frames; returns the master path."""
        for key, value in {"NumImages": n_images, **cam}.items():
            self.put(f"cam1:{key}", value)
        self.start_capture()
        self.put("cam1:Acquire", "Acquire", timeout=120)
        self.put("HDF1:Capture", "Done")
        return Path(self.text("HDF1:FullFileName_RBV"))

    def series(self, n_images: int, **cam: Any) -> Path:
        """One FileWriter series of ``n_images`` frames per trigger: the DCU writes it, the IOC
        downloads it into this test's directory; returns the downloaded master. As with ADEiger,
        ``Acquire`` is Done only once every file is downloaded."""
        prefix = self.text("HDF1:FileName")[:40]
        for key, value in {"FilePath": str(self.directory), "FWEnable": "Enable",
                           "SaveFiles": "Enable", "FWNamePattern": f"{prefix}_$id",
                           "NumImages": n_images, **cam}.items():
            self.put(f"cam1:{key}", value)
        self.put("cam1:Acquire", "Acquire", timeout=120)
        master = self.directory / f"{prefix}_{self.get('cam1:SequenceId')}_master.h5"
        assert master.exists(), f"Acquire is Done but {master} was not downloaded"
        return master


def frame_settings(master: Path) -> FrameSettings:
    """The settings the simulator used for a series, from its file's metadata (the master's
    DECTRIS fields, or an HDF1 file's NDAttributes), readable while still written."""
    with h5py.File(master, "r", swmr=True) as f:
        md = read_metadata(f)
    return FrameSettings(
        count_time=float(md["count_time"]),
        bit_depth=int(md["bit_depth_image"]),
        beam_center_x=float(md["beam_center_x"]),
        beam_center_y=float(md["beam_center_y"]),
        distance=float(md["detector_distance"]),
        wavelength=float(md["incident_wavelength"]),
    )


def expected_frames(master: Path, indices: range) -> np.ndarray:
    """The frames the simulator's generator gives for ``indices`` of that series."""
    generator = FrameGenerator(EIGER2_500K, SEED)
    settings = frame_settings(master)
    return np.stack([generator.frame(i, settings) for i in indices])


def load_eiger2(flavour: str, tmp_path: Path, sim: Sim, write: str, read: str | None = None,
                **extra: Any) -> Any:
    """The ``eiger2`` of a devices file written as configs/devices.yml is (class ``flavour``),
    loaded and connected by guarneri."""
    entry = {"name": "eiger2", "prefix": sim.prefix, "write_path_template": write, **extra}
    if read is not None:
        entry["read_path_template"] = read
    path = tmp_path / "devices.yml"
    path.write_text(yaml.safe_dump({flavour: [entry]}))
    return load_devices(path).devices["eiger2"]


IOC_VIEW = Path("/mnt/ioc-host/detector/eiger")  # the share as the IOC host mounts it (ioc_host)
FASTEST_16BIT = EIGER2_500K.min_period_16bit - EIGER2_500K.dead_time  # livetime at 2222 Hz


def fly_through_file_writer(tmp_path: Path, sim: Sim, RE: Any, write: str, frames: int) -> str:
    """An ophyd-async fly scan of ``frames`` at 2.2 kHz through the FileWriter: one series, one
    master, 1000 frames per data file (more than 1000: a virtual dataset); the run's uid."""
    from ophyd_async.core import TriggerInfo

    from id3c_eiger.plans import fly_frames

    eiger2 = load_eiger2(ASYNC, tmp_path, sim, write, file_source="file_writer")
    (uid,) = RE(fly_frames(eiger2, TriggerInfo(number_of_events=frames, livetime=FASTEST_16BIT)))
    return uid


def master_frames(master: Path) -> np.ndarray:
    """Every frame a master file reaches, read with h5py: (n, H, W), of the first threshold
    where the data have a threshold axis (what the devices record)."""
    with h5py.File(master, "r", swmr=True) as f:
        return frame_images(f[DATA_DATASET], slice(None))


TILED_START_TIMEOUT = 60.0  # s for a tiled serve process to answer


def start_tiled(arguments: list[str], uri: str, log: Path,
                env: dict[str, str] | None = None) -> subprocess.Popen:
    """``tiled <arguments>`` (a serve command) with its output appended to ``log``; returns once
    ``uri`` answers, else RuntimeError with the log's end."""
    tiled = str(Path(sys.executable).with_name("tiled"))
    with open(log, "a") as output:
        process = subprocess.Popen([tiled, *arguments], stdout=output, stderr=subprocess.STDOUT,
                                   env=env)
    deadline = time.monotonic() + TILED_START_TIMEOUT
    while True:
        try:
            httpx.get(f"{uri}/api/v1/", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tiled {arguments[0]} did not answer on {uri}: "
                                   f"{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


API_KEY = "deploy3idc"  # the deployed servers' single-user key (alphanumeric, as Tiled wants)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed; `make test` installs it (apt-get "
                           "install postgresql) before the suite")
    return Path(found[-1]).parent


class PostgresServer:
    """A PostgreSQL cluster of the test's own on loopback, in a directory of its own under /tmp
    (run as ``postgres`` when the suite runs as root, as the server refuses root; pytest's
    directories are closed to other users)."""

    def __init__(self) -> None:
        self.port, self.bin = free_port(), _postgres_bin()
        self.directory = Path(tempfile.mkdtemp(prefix="id3c-eiger-postgres-"))
        self.data = self.directory / "data"
        self.uri = f"postgresql://tiled@127.0.0.1:{self.port}/tiled"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "tiled")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}")

    def remove(self) -> None:
        """Stop the server if it runs and remove its directory."""
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.directory / "log"), "-o",
                  f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def create_database(self) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tiled", "tiled")


class TiledService:
    """``tiled serve config`` with the generated configuration, as the systemd unit runs it."""

    def __init__(self, config: Path) -> None:
        self.config = config
        content = yaml.safe_load(config.read_text())
        self.uri = f"http://127.0.0.1:{content['uvicorn']['port']}"
        self.environment = {**os.environ, API_KEY_VARIABLE: API_KEY}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_tiled(["serve", "config", str(self.config)], self.uri,
                                   self.config.with_name("server.log"), self.environment)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
