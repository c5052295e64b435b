"""The detector's FileWriter path: 10,000 frames at 2.2 kHz written by the simulated DCU and
downloaded by the IOC (SaveFiles), alone and with every commonPlugin enabled.

Prints, for each case: the time from Acquire to Acquire Done, which ADEiger (and the simulator)
reports only once every file of the series is in cam1:FilePath, against the ideal: the
acquisition time, plus one data file's download (measured in the same run as the copy of one
data file), plus ADEiger's fixed 0.5 s wait after the FileWriter leaves "acquire"; frames in the
downloaded data files; each plugin's arrays taken and dropped; the
IOC's peak RSS after 100 frames and after 10,000.

Run with ``make benchmark`` (or ``python benchmarks/bench_file_writer.py --frames N``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import h5py
from bench_simulator import peak_rss_mb
from common import Sim, simulator_with_dcu

from id3c_eiger.geometry import EIGER2_500K
from id3c_eiger.layout import DATA_DATASET
from id3c_eiger_sim.dcu import FW_SETTLE

PLUGINS = ("ROI1:", "Stats1:", "Stats2:", "image1:", "Pva1:")
PER_FILE = 1000


def series(sim: Sim, downloads: Path, n_frames: int, name: str) -> tuple[float, int]:
    """One internal series through the FileWriter; (seconds to Acquire Done, every file
    downloaded; frames in the downloaded data files)."""
    sim.put("cam1:FWNamePattern", f"{name}_$id")
    sim.put("cam1:NumImages", n_frames)
    start = time.perf_counter()
    sim.put("cam1:Acquire", "Acquire", timeout=600)
    elapsed = time.perf_counter() - start
    stem = f"{name}_{sim.get('cam1:SequenceId')}"
    frames = 0
    for data_file in downloads.glob(f"{stem}_data_*.h5"):
        with h5py.File(data_file, "r") as f:
            frames += f[DATA_DATASET].shape[0]
    return elapsed, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    n = parser.parse_args().frames
    period = EIGER2_500K.min_period_16bit
    with simulator_with_dcu("bench") as (root, sim, ioc):
        downloads = root / "downloads"
        downloads.mkdir()
        for key, value in {"FilePath": str(downloads), "FWEnable": "Enable",
                           "SaveFiles": "Enable", "FWAutoRemove": "Enable",
                           "FWNImagesPerFile": PER_FILE, "AcquirePeriod": period,
                           "AcquireTime": period - EIGER2_500K.dead_time}.items():
            sim.put(f"cam1:{key}", value)
        series(sim, downloads, 100, "warm")  # frame pool built, as at any first arm
        rss_100 = peak_rss_mb(ioc.process.pid)
        plain = series(sim, downloads, n, "plain")
        rss_n = peak_rss_mb(ioc.process.pid)
        for plugin in PLUGINS:
            sim.put(f"{plugin}EnableCallbacks", "Enable")
        sim.put("cam1:WaitForPlugins", "No")
        plugged = series(sim, downloads, n, "plugins")
        counts = {p: (sim.get(f"{p}ArrayCounter_RBV"), sim.get(f"{p}DroppedArrays_RBV"))
                  for p in PLUGINS}
        one_file = next(downloads.glob("plain_*_data_000001.h5"))
        start = time.perf_counter()
        shutil.copyfile(one_file, root / "copy.h5")
        copy_one = time.perf_counter() - start
    ideal = n * period + copy_one + FW_SETTLE
    print(f"{n} frames at {1 / period:.0f} Hz through the DCU FileWriter, {PER_FILE} per data "
          f"file, SaveFiles + FWAutoRemove; ideal {n * period:.3f} s + one file's download "
          f"{copy_one:.3f} s + ADEiger's {FW_SETTLE:g} s = {ideal:.3f} s")
    for label, (seconds, frames) in (("alone", plain), ("with ROI1, Stats1, Stats2, image1, "
                                                       "Pva1", plugged)):
        print(f"  {label}: Acquire Done, every file downloaded, after {seconds:.3f} s = "
              f"{seconds / ideal:.3f} x ideal"
              f" [goal <= 1.1]; {frames}/{n} frames in the downloaded files")
    for plugin, (taken, dropped) in counts.items():
        print(f"    {plugin:8s} took {taken:6d} arrays, dropped {dropped:6d} (non-blocking, queue 20)")
    print(f"IOC peak RSS: {rss_100:.1f} MB after 100 frames, {rss_n:.1f} MB after {n} "
          f"(+{rss_n - rss_100:.1f} MB) [goal <= +50 MB]")


if __name__ == "__main__":
    main()
