"""Simulator speed and memory, against this machine's raw write limit measured in the same run.

Prints:
* raw ``write_direct_chunk`` frames/s into an SWMR data file (the ceiling);
* a 10,000-frame HDF1 Stream capture at the fastest 16-bit period: wall time / ideal time, frames/s, and that
  rate as a fraction of the raw limit;
* the same unpaced (a second simulator, ``--unpaced``): the simulator's own ceiling, as a fraction
  of the raw limit;
* the IOC's peak RSS after 100 frames and after 10,000.

Run with ``make benchmark`` (or ``python benchmarks/bench_simulator.py --frames N``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
from common import PORT, Sim, start_simulator

from id3c_eiger.geometry import EIGER2_500K
from id3c_eiger.layout import DATA_DATASET, create_data_file
from id3c_eiger_sim.frames import FrameGenerator, FrameSettings, build_pool


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def raw_limit(directory: Path, n_frames: int, period: float) -> float:
    """Frames/s of bare direct chunk writes of the same pool, batched as the simulator does."""
    count_time = period - EIGER2_500K.dead_time
    bits = EIGER2_500K.bit_depth(count_time, period)
    settings = FrameSettings(count_time, bits, 514.0, 256.0, 0.08, 1.0332)
    filters = dict(hdf5plugin.Bitshuffle(cname="lz4"))
    pool = build_pool(FrameGenerator(EIGER2_500K), settings, filters)
    path = directory / "raw_data_000001.h5"
    start = time.perf_counter()
    file, dataset = create_data_file(path, EIGER2_500K.shape, settings.dtype, filters, 1)
    with file:
        batch = 25
        for first in range(0, n_frames, batch):
            last = min(first + batch, n_frames)
            dataset.resize((last, *EIGER2_500K.shape))
            for index in range(first, last):
                dataset.id.write_direct_chunk((index, 0, 0), pool.chunk(index), pool.filter_mask)
            dataset.flush()
    elapsed = time.perf_counter() - start
    path.unlink()
    return n_frames / elapsed


def run_series(sim: Sim, name: str, period: float, n_frames: int) -> tuple[float, int]:
    """One Stream series at ``period``, pool built beforehand; (seconds, frames written)."""
    sim.put("cam1:AcquirePeriod", period)
    sim.put("cam1:AcquireTime", period - EIGER2_500K.dead_time)
    sim.put("HDF1:FileName", f"{name}-warmup")  # (deleted with the series' file)
    sim.stream(100)  # builds the frame pool for these settings, as any first arm does
    sim.put("HDF1:FileName", name)
    sim.put("cam1:ArrayCounter", 0)
    sim.put("cam1:NumImages", n_frames)
    sim.start_capture()
    start = time.perf_counter()
    sim.put("cam1:Acquire", "Acquire", timeout=600)
    sim.put("HDF1:Capture", "Done")
    elapsed = time.perf_counter() - start
    path = Path(sim.text("HDF1:FullFileName_RBV"))
    with h5py.File(path, "r") as f:
        written = f[DATA_DATASET].shape[0]
    for done in path.parent.glob(f"{name}*.h5"):  # as the raw limit's: each series starts
        done.unlink()  # with the same free memory (GBs of written files slow this VM 3-4 x)
    return elapsed, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    args = parser.parse_args()
    n = args.frames
    period_16 = EIGER2_500K.min_period_16bit
    period_8 = EIGER2_500K.min_period
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        root = Path(tmp)
        raw_16 = raw_limit(root, n, period_16)
        raw_8 = raw_limit(root, n, period_8)
        ioc = start_simulator("BENCH:", PORT, [root])
        try:
            sim = Sim("BENCH:")
            sim.reset(root, "bench")
            sim.put("cam1:NumImages", 100)
            sim.stream(100)
            rss_100 = peak_rss_mb(ioc.process.pid)
            t16, written_16 = run_series(sim, "bench16", period_16, n)
            rss_16 = peak_rss_mb(ioc.process.pid)
            t8, written_8 = run_series(sim, "bench8", period_8, n)
        finally:
            ioc.stop()
        ioc = start_simulator("BENCH:", PORT, [root], extra=("--unpaced", "--no-autosave"))
        try:
            sim = Sim("BENCH:")
            sim.reset(root, "unpaced")
            u16, unpaced_16 = run_series(sim, "unpaced16", period_16, n)
            u8, unpaced_8 = run_series(sim, "unpaced8", period_8, n)
        finally:
            ioc.stop()
    print(f"{n} frames, EIGER2 500K, BSLZ4, HDF1's single file, {os.cpu_count()} cores")
    print(f"16-bit @ {period_16 * 1e3:.3f} ms (2.2 kHz): {t16:.3f} s, ideal {n * period_16:.3f} s"
          f" -> {t16 / (n * period_16):.3f} x ideal [goal <= 1.1]; {written_16}/{n} frames in files")
    print(f"   simulator {n / t16:7.0f} frames/s, raw write_direct_chunk limit {raw_16:7.0f}"
          f" frames/s (paced by the detector: at most {1 / period_16:.0f})")
    print(f" 8-bit @ {period_8 * 1e3:.3f} ms (4.5 kHz): {t8:.3f} s, ideal {n * period_8:.3f} s"
          f" -> {t8 / (n * period_8):.3f} x ideal; {written_8}/{n} frames in files")
    print(f"   simulator {n / t8:7.0f} frames/s = {n / t8 / raw_8:.2f} x the raw limit "
          f"{raw_8:.0f} frames/s (paced by the detector: at most {1 / period_8:.0f})")
    print(f"unpaced (--unpaced), the simulator's ceiling: 16-bit {n / u16:7.0f} frames/s = "
          f"{n / u16 / raw_16:.2f} x raw; 8-bit {n / u8:7.0f} frames/s = {n / u8 / raw_8:.2f} x "
          f"raw [goal >= 0.5]; {unpaced_16}/{n} and {unpaced_8}/{n} frames in files")
    print(f"IOC peak RSS: {rss_100:.1f} MB after 100 frames, {rss_16:.1f} MB after {n} "
          f"(+{rss_16 - rss_100:.1f} MB) [goal <= +50 MB]")


if __name__ == "__main__":
    main()
