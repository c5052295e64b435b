"""The main job on one machine: simulator + embedded Tiled + ``bp.count([eiger2], num=10)`` + a
picture + the doctor, in a directory of its own.

It uses the same pieces a beamline uses: ``configs/devices.yml`` loaded by guarneri (with the
data directory pointed into the demo directory), the RunEngine, TiledWriter, and the reader path
``cat[-1].primary["eiger2_image"]``. The simulator runs as its own process on a free loopback
port and is stopped on exit, on an error and on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import check_devices_file, device_entry, find_devices_file
from .doctor import STREAM, Hop, check_chain
from .geometry import EIGER2_500K

DEMO_POINTS = 10
DEMO_EXPOSURE = 0.1  # s a frame: the demo's ten points take about a second
SET_TIMEOUT = 10.0  # s for the IOC to confirm a setting


class DemoError(RuntimeError):
    """The demo cannot run in this process or with this devices file; the message says why."""


@dataclass
class DemoResult:
    """What the demo made: the run, its frames' shape, the files, the picture, the doctor's hops."""

    directory: Path
    uid: str
    shape: tuple[int, ...]
    masters: list[Path]
    picture: Path
    hops: list[Hop] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every hop passed."""
        return all(hop.passed for hop in self.hops)


def demo_devices_file(source: Path, data_root: Path, destination: Path) -> Path:
    """``source`` (a checked devices file) with every device's write and read templates under
    ``data_root`` (same ``%Y/%m/%d/`` layout), written to ``destination``."""
    content = yaml.safe_load(source.read_text())  # anchors and << merges are expanded here
    for entries in content.values():
        for entry in entries:
            if "write_path_template" in entry:
                entry["write_path_template"] = f"{data_root}/%Y/%m/%d/"
                entry["read_path_template"] = f"{data_root}/%Y/%m/%d/"
    destination.write_text(yaml.safe_dump(content, sort_keys=False))
    return destination


def _check_fresh_channel_access() -> None:
    """libca reads its address list when the first channel is made; a process that already made
    one cannot reach the simulator's private port."""
    epics = sys.modules.get("epics")
    if epics is not None and epics.ca._chid_cache:  # pyepics' record of channels made so far
        raise DemoError("Channel Access channels already exist in this process, made with "
                        "another address list; run the demo in a fresh process: id3c-eiger demo")


class _DropRecord(logging.Filter):
    """Drops log records with one exact message."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


def _exposure_signals(detector: Any) -> tuple[Any, Any]:
    """AcquireTime and AcquirePeriod of either flavour (classic ``cam``, ophyd-async ``driver``)."""
    driver = getattr(detector, "cam", None) or detector.driver
    return driver.acquire_time, driver.acquire_period


@dataclass
class SimulatedBeamline:
    """A one-machine beamline: the simulator process, the RunEngine, the devices of the devices
    file (data under ``directory/data``) and an embedded Tiled catalog subscribed to the RunEngine.

    ``cat`` is the catalog of runs, so ``cat[-1]`` is the latest run, as at the beamline.
    ``close()`` (or leaving a ``with`` block) stops the server and the simulator.
    """

    directory: Path
    devices_file: Path
    RE: Any
    devices: Any  # guarneri's devices: devices["eiger2"]
    catalog: Any  # id3c_eiger.catalog.Catalog
    simulator: Any  # id3c_eiger_sim.process.SimulatorProcess

    @property
    def cat(self) -> Any:
        return self.catalog.runs

    @classmethod
    def start(cls, directory: str | os.PathLike[str] | None = None, *,
              devices_file: str | os.PathLike[str] | None = None,
              detector: str = "eiger2", echo: Callable[[str], None] = print) -> SimulatedBeamline:
        """Start everything in ``directory`` (a new temporary one by default, kept after)."""
        _check_fresh_channel_access()
        devices_file = find_devices_file(devices_file)
        check_devices_file(devices_file)  # before making anything
        from id3c_eiger_sim.process import client_environment, free_port, start_simulator

        directory = Path(directory or tempfile.mkdtemp(prefix="id3c-eiger-demo-")).resolve()
        data_root = directory / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        devices = demo_devices_file(Path(devices_file), data_root, directory / "devices.yml")
        _class_path, entry = device_entry(devices, detector)
        port = free_port()
        os.environ.update(client_environment(port))
        echo(f"starting the simulated EIGER2 IOC ({entry['prefix']}, loopback port {port}) ...")
        simulator = start_simulator(entry["prefix"], port, [data_root])
        try:
            import ophyd  # noqa: F401  (installs its PV class into pyepics before any PV exists)
            from bluesky import RunEngine

            from .ca_client import route_exceptions_to_logging
            from .catalog import open_catalog
            from .config import load_devices

            route_exceptions_to_logging()  # the IOC stopped at the end prints no libca block
            RE = RunEngine({}, call_returns_result=False)  # first: ophyd-async connects in its loop
            loaded = load_devices(devices).devices
            catalog = open_catalog(readable_storage=[data_root], directory=directory / "tiled")
        except BaseException:
            simulator.stop()
            raise
        catalog.subscribe(RE, spool_directory=directory / "spool")
        echo(f"embedded Tiled at {catalog.address}")
        return cls(directory, devices, RE, loaded, catalog, simulator)

    def close(self) -> None:
        """Stop the Tiled server and the simulator; the files stay."""
        try:
            self.catalog.close()
        finally:
            self.simulator.stop()

    def __enter__(self) -> SimulatedBeamline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_demo(
    directory: str | os.PathLike[str] | None = None,
    *,
    points: int = DEMO_POINTS,
    exposure: float = DEMO_EXPOSURE,
    devices_file: str | os.PathLike[str] | None = None,
    detector: str = "eiger2",
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo in ``directory`` (a new temporary one by default, kept for a look after).

    Data go to ``directory/data``, the Tiled catalog to ``directory/tiled``, the picture of frame
    0 to ``directory/<detector>_frame0.png``.
    """
    beamline = SimulatedBeamline.start(directory, devices_file=devices_file, detector=detector,
                                       echo=echo)
    try:
        result = _count_and_look(beamline, detector, points, exposure, echo)
    finally:
        beamline.close()
        echo("Tiled and simulator stopped")
    echo(f"files kept in {result.directory}; look again with: id3c-eiger inspect "
         f"{result.masters[0]}")
    return result


def _count_and_look(beamline: SimulatedBeamline, detector: str, points: int, exposure: float,
                    echo: Callable[[str], None]) -> DemoResult:
    """``bp.count`` into the embedded Tiled, frame 0 from ``cat[-1]`` drawn, and the doctor."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.utils import RunEngineInterrupted

    from .catalog import master_files
    from .plotting import frame_from_run, plot_frame
    from .progress import show_point_progress

    RE, eiger2, directory = beamline.RE, beamline.devices[detector], beamline.directory
    show_point_progress(RE)
    echo(f"running bp.count([{detector}], num={points}) ...")
    acquire_time, acquire_period = _exposure_signals(eiger2)
    try:
        # Period first (exposure + dead time), then exposure: neither put makes the IOC
        # adjust the other, so each readback equals its setpoint.
        period = exposure + EIGER2_500K.dead_time
        RE(bps.abs_set(acquire_period, period, wait=True, timeout=SET_TIMEOUT))
        RE(bps.abs_set(acquire_time, exposure, wait=True, timeout=SET_TIMEOUT))
        (uid,) = RE(bp.count([eiger2], num=points))
    except RunEngineInterrupted:
        # Ctrl-C paused the run: end it as aborted. The RunEngine would also log the abort
        # with a traceback; the user asked for it, so one line says it instead.
        logger = RE.log.logger
        quiet = _DropRecord("Run aborted")
        logger.addFilter(quiet)
        try:
            RE.abort("interrupted from the keyboard")
        finally:
            logger.removeFilter(quiet)
        echo("run aborted; what it wrote so far stays in the files and in Tiled")
        raise KeyboardInterrupt from None
    run = beamline.cat[-1]
    images = run[STREAM][f"{detector}_image"]
    masters = master_files(images)
    echo(f'cat[-1].primary["{detector}_image"]: shape {images.shape}, {images.dtype}')
    if len(masters) == 1:
        echo(f"  master file: {masters[0]}")
    elif masters:  # a series per arm: each point of a step scan through the FileWriter
        echo(f"  {len(masters)} master files, one per point: {masters[0]} ... "
             f"{masters[-1].name}")
    picture = directory / f"{detector}_frame0.png"
    plot_frame(frame_from_run(run, detector, 0, STREAM), output=picture)
    echo(f"frame 0 drawn: {picture}")
    echo("doctor:")
    hops = []
    for hop in check_chain(beamline.devices_file, detector=detector, catalog=beamline.catalog,
                           run=uid):
        echo(f"  {hop}")
        hops.append(hop)
    return DemoResult(directory, uid, tuple(images.shape), masters, picture, hops)
