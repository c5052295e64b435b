"""What every benchmark shares: a loopback CA port set before anything reads the EPICS
environment, the simulator helpers, and the timing and comparison helpers.

Import this first in a benchmark: ``from common import PORT, ...``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import Sim
from id3c_eiger_sim.process import free_port, start_simulator

PORT = free_port()
os.environ["EPICS_CA_ADDR_LIST"] = f"127.0.0.1:{PORT}"
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
os.environ.setdefault("EPICS_CA_MAX_ARRAY_BYTES", "10000000")

import ophyd  # noqa: E402, F401  (before any pyepics PV)

EXPOSURE = 0.001  # s, the step-scan exposure of the per-point overhead measure
POINTS = 100
REPEATS = 15

PREFIX = "BENCH:"

__all__ = [
    "PORT",
    "PREFIX",
    "Sim",
    "blob_detector",
    "interleaved_medians",
    "marginal_per_point",
    "median_seconds",
    "per_point_overhead",
    "simulator_and_catalog",
    "simulator_with_dcu",
    "start_simulator",
]


def per_point_overhead(RE: object, detector: object) -> float:
    """Seconds per point beyond the exposure for count(num=POINTS), staging included, after a
    one-point count (a new device's first stage connects its lazy signals: once a session)."""
    import bluesky.plans as bp

    RE(bp.count([detector], num=1))
    start = time.perf_counter()
    RE(bp.count([detector], num=POINTS))
    return (time.perf_counter() - start) / POINTS - EXPOSURE


def marginal_per_point(RE: object, detector: object) -> float:
    """Seconds a point adds beyond the exposure, stage, run and TiledWriter's end left out:
    (t(count(POINTS + 1)) - t(count(1))) / POINTS."""
    import bluesky.plans as bp

    def wall(points: int) -> float:
        start = time.perf_counter()
        RE(bp.count([detector], num=points))
        return time.perf_counter() - start

    return (wall(POINTS + 1) - wall(1)) / POINTS - EXPOSURE


def median_seconds(read: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``read`` over ``repeats`` calls, after one warm-up call."""
    read()  # warm: connections, file handles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(reads: dict[str, Callable[[], object]],
                        rounds: int = 4 * REPEATS) -> dict[str, float]:
    """Median wall time of each read, the reads taken in turns ``rounds`` times after one warm-up
    each: a difference smaller than the machine's drift between two series still shows."""
    for read in reads.values():
        read()
    times: dict[str, list[float]] = {label: [] for label in reads}
    for _ in range(rounds):
        for label, read in reads.items():
            start = time.perf_counter()
            read()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(taken) for label, taken in times.items()}


@contextmanager
def simulator_and_catalog() -> Iterator[tuple[Path, Sim, Any, Any]]:
    """A temporary data root, the simulator (PREFIX) writing there, an embedded Tiled reading it
    and a RunEngine subscribed to it: (root, sim, catalog, RE). Everything stops on exit."""
    from bluesky import RunEngine

    from id3c_eiger.catalog import open_catalog

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ioc = start_simulator(PREFIX, PORT, [root])
        try:
            with open_catalog(readable_storage=[root]) as catalog:
                RE = RunEngine({})
                catalog.subscribe(RE, spool_directory=root / ".spool")
                yield root, Sim(PREFIX), catalog, RE
        finally:
            ioc.stop()


@contextmanager
def simulator_with_dcu(name: str) -> Iterator[tuple[Path, Sim, Any]]:
    """A temporary data root and DCU disk, the simulator (PREFIX) on them, reset for ``name``:
    (root, sim, simulator process). It stops on exit; the directories go with it."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        root, dcu = Path(tmp) / "data", Path(tmp) / "dcu"
        root.mkdir()
        dcu.mkdir()
        ioc = start_simulator(PREFIX, PORT, [root], dcu_root=dcu)
        try:
            sim = Sim(PREFIX)
            sim.reset(root, name)
            yield root, sim, ioc
        finally:
            ioc.stop()


def blob_detector(directory: Path) -> object:
    """ophyd-async's SimBlobDetector writing HDF5 into ``directory``, connected."""
    from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
    from ophyd_async.sim import SimBlobDetector

    directory.mkdir(parents=True, exist_ok=True)
    provider = StaticPathProvider(UUIDFilenameProvider(), directory)
    with init_devices():
        blob = SimBlobDetector(provider, name="blob")
    return blob
