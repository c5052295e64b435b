"""Reliability: faults tried and survived, the time to the named error, frames lost; IOC memory
with NumCapture at its maximum; a 20,000-frame fly scan at 2.2 kHz with two readers attached.

A fault is survived when the plan ends with a named exception (never "success"), the frames on
disk, in the master and in Tiled agree (frames lost = 0), and the next plan in the same session
succeeds. Everything runs against the simulator process and one embedded Tiled server.
Run with ``python benchmarks/bench_reliability.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import bluesky.plans as bp
import h5py
import hdf5plugin  # noqa: F401
import psutil
from bluesky import RunEngine
from common import PREFIX, Sim, simulator_and_catalog
from ophyd_async.core import TriggerInfo, init_devices
from ophyd_async.plan_stubs import ensure_connected

from id3c_eiger.async_devices import Eiger2Detector as AsyncEiger2
from id3c_eiger.catalog import master_files
from id3c_eiger.devices import Eiger2Detector as ClassicEiger2
from id3c_eiger.geometry import EIGER2_500K
from id3c_eiger.layout import DATA_DATASET, read_metadata, total_images
from id3c_eiger.plans import fly_frames

FRAME_BYTES = 512 * 1028 * 2  # uncompressed 16-bit
FAULTS = {  # name: (sim: PV, value)
    "disk full after 3.5 frames": ("DiskFullAfterBytes", int(3.5 * FRAME_BYTES)),
    "file writer fails after 3 frames": ("FailWriterAfterFrames", 3),
    "2 frames dropped": ("DropFrames", 2),
    "detector stalls after 3 frames": ("StallAfterFrames", 3),
}
FLY_FRAMES = 20_000
PERIOD = EIGER2_500K.min_period_16bit
READER = textwrap.dedent("""
    import sys, time, glob, h5py, hdf5plugin
    directory, held = sys.argv[1], []
    while True:  # hold every file open from its first sight, read the newest frame
        for path in sorted(glob.glob(directory + "/*.h5")):
            if path not in [f.filename for f in held]:
                try:
                    held.append(h5py.File(path, "r", swmr=True))
                except OSError:
                    pass
        for f in held:
            if "/entry/data/data" in f:
                try:
                    d = f["/entry/data/data"]; d.refresh(); d[d.shape[0] - 1] if d.shape[0] else None
                except (OSError, KeyError, ValueError):
                    pass
        time.sleep(0.05)
""")


def kept(catalog: object, uid: str) -> tuple[int, int, int]:
    """(frames on disk, master nimages, frames in Tiled) of a run."""
    run = catalog.runs[uid]
    if "primary" not in run or "eiger2_image" not in run["primary"]:
        return 0, 0, 0
    images = run["primary"]["eiger2_image"]
    (master,) = master_files(images)
    with h5py.File(master, "r", swmr=True) as f:
        return f[DATA_DATASET].shape[0], total_images(read_metadata(f)), images.shape[0]


def try_fault(RE: RunEngine, sim: Sim, catalog: object, detector: object, pv: str | None,
              value: float, then: object = None) -> tuple[bool, str, float, int]:
    """(survived, error name, seconds to it, frames lost) for one fault armed before a count;
    then a count with ``then`` (default: the same detector) must succeed."""
    if pv:
        sim.put(f"sim:{pv}", value)
    start = time.perf_counter()
    error = "none"
    try:
        RE(bp.count([detector], num=8))
    except Exception as err:  # the RunEngine wraps the device's exception
        error = type(err.__cause__ or err).__name__
    elapsed = time.perf_counter() - start
    uid = catalog.runs[-1].metadata["start"]["uid"]
    on_disk, nimages, in_tiled = kept(catalog, uid)
    lost = abs(on_disk - in_tiled) + abs(on_disk - nimages)
    failed_run = catalog.runs[uid].metadata["stop"]["exit_status"] != "success"
    if pv:
        sim.put(f"sim:{pv}", 0)
    sim.put("cam1:Acquire", "Done")
    try:
        RE(bp.count([then or detector], num=2))
        next_ok = catalog.runs[-1].metadata["stop"]["exit_status"] == "success"
    except Exception:
        next_ok = False
    return failed_run and error != "none" and lost == 0 and next_ok, error, elapsed, lost


def faults(RE: RunEngine, sim: Sim, catalog: object, root: Path) -> None:
    with init_devices():
        modern = AsyncEiger2(PREFIX, name="eiger2", write_path_template=str(root / "a"),
                             compression="None")
    classic = ClassicEiger2(PREFIX, name="eiger2", write_path_template=str(root / "c"),
                            compression="None")
    classic.wait_for_connection(timeout=10)
    rows = []
    for flavour, detector in (("classic", classic), ("ophyd-async", modern)):
        for name, (pv, value) in FAULTS.items():
            rows.append((flavour, name, *try_fault(RE, sim, catalog, detector, pv, value)))
        # The simulator refuses JPEG as a real plugin without the codec does: every frame fails.
        cls = AsyncEiger2 if flavour == "ophyd-async" else ClassicEiger2
        refused = cls(PREFIX, name="eiger2", write_path_template=str(root / "j"),
                      compression="JPEG")
        if flavour == "classic":
            refused.wait_for_connection(timeout=10)
        else:
            RE(ensure_connected(refused))
        survived, error, elapsed, lost = try_fault(RE, sim, catalog, refused, None, 0, detector)
        rows.append((flavour, "a refused setting (JPEG)", survived, error, elapsed, lost))
    print("faults (bp.count num=8, fault armed through the simulator's sim: PVs):")
    print(f"  {'device':<12} {'fault':<34} {'survived':<9} {'error':<22} {'s to error':>10} "
          f"{'frames lost':>11}")
    for flavour, name, survived, error, elapsed, lost in rows:
        print(f"  {flavour:<12} {name:<34} {'yes' if survived else 'NO':<9} {error:<22} "
              f"{elapsed:>10.1f} {lost:>11}")
    print(f"  survived {sum(r[2] for r in rows)} of {len(rows)}   (goal: all, 0 frames lost)")


def memory(sim: Sim, pid: int) -> None:
    sim.put("HDF1:FileWriteMode", "Stream")
    sim.put("HDF1:Compression", "BSLZ4")
    sizes = {}
    for limit in (100, 2**31 - 1):
        sim.put("HDF1:NumCapture", limit)
        sim.put("HDF1:FileName", f"memory_{limit}")
        sim.stream(100)
        sizes[limit] = psutil.Process(pid).memory_info().rss / 1e6
    grown = sizes[2**31 - 1] - sizes[100]
    print(f"IOC RSS after 100 frames: NumCapture 100 {sizes[100]:.1f} MB, NumCapture 2**31-1 "
          f"{sizes[2**31 - 1]:.1f} MB, difference {grown:+.1f} MB   (goal: within 10 MB)")


def fly_with_readers(RE: RunEngine, sim: Sim, catalog: object, root: Path) -> None:
    directory = root / "fly-read"
    directory.mkdir()
    sim.put("cam1:FWNImagesPerFile", 1000)
    with init_devices():
        eiger2 = AsyncEiger2(PREFIX, name="eiger2", write_path_template=str(directory))
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(directory)])
               for _ in range(2)]
    try:
        start = time.perf_counter()
        RE(fly_frames(eiger2, TriggerInfo(number_of_events=FLY_FRAMES,
                                          livetime=PERIOD - EIGER2_500K.dead_time)))
        wall = time.perf_counter() - start
    finally:
        for reader in readers:
            reader.kill()
    status = sim.text("HDF1:WriteStatus")
    on_disk, nimages, in_tiled = kept(catalog, catalog.runs[-1].metadata["start"]["uid"])
    ideal = FLY_FRAMES * PERIOD
    print(f"fly scan, {FLY_FRAMES} frames at {1 / PERIOD:.0f} Hz with two reader processes "
          f"holding every file open: {wall:.2f} s, ideal {ideal:.2f} s, ratio "
          f"{wall / ideal:.3f}   (goal <= 1.2)")
    print(f"  WriteStatus {status!r}; frames on disk {on_disk}, master {nimages}, Tiled "
          f"{in_tiled}   (goal: Write OK, all {FLY_FRAMES})")


def main() -> None:
    with simulator_and_catalog() as (root, sim, catalog, RE):
        pid = next(p.pid for p in psutil.process_iter(["cmdline"])
                   if p.info["cmdline"] and "id3c_eiger_sim" in p.info["cmdline"]
                   and PREFIX in p.info["cmdline"])
        sim.put("cam1:AcquireTime", 0.001)
        sim.put("cam1:AcquirePeriod", 0.002)
        faults(RE, sim, catalog, root)
        memory(sim, pid)
        fly_with_readers(RE, sim, catalog, root)


if __name__ == "__main__":
    main()
