"""The classic EIGER2 device through Tiled: per-point overhead and the cost of reading frame 0.

Prints, all measured in this run against the simulator process and one embedded Tiled server:
* ``bp.count(num=100)`` with 1 ms exposures: wall time / 100 minus the exposure, for the classic
  device and for ophyd-async's ``SimBlobDetector`` writing through the same TiledWriter;
* frame 0 read through Tiled from a 10,000-frame run and from a 10-frame run, and an h5py read of
  the same chunk (median of repeats), with the two ratios the goals are set on.

Run with ``python benchmarks/bench_classic_device.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

import bluesky.plans as bp
import h5py
import hdf5plugin  # noqa: F401
from common import (
    EXPOSURE,
    POINTS,
    PREFIX,
    REPEATS,
    blob_detector,
    median_seconds,
    per_point_overhead,
    simulator_and_catalog,
)

from id3c_eiger.catalog import master_files
from id3c_eiger.devices import Eiger2Detector
from id3c_eiger.layout import DATA_DATASET


def main() -> None:
    with simulator_and_catalog() as (root, sim, catalog, RE):
        sim.put("cam1:AcquireTime", EXPOSURE)
        sim.put("cam1:AcquirePeriod", EXPOSURE + 0.0001)
        sim.put("HDF1:Compression", "BSLZ4")
        bare = Eiger2Detector(PREFIX, name="eiger2", write_path_template=str(root / "b"))
        bare.read_attrs = ["hdf1"]  # as before the plugins' numbers: frames only
        for plugin in (bare.roi1, bare.stats1, bare.stats2):
            plugin.stage_sigs.clear()
        without_stats = per_point_overhead(RE, bare)
        eiger2 = Eiger2Detector(PREFIX, name="eiger2", write_path_template=str(root / "c"))
        eiger2.wait_for_connection(timeout=10)
        blob = blob_detector(root / "blob")
        classic = per_point_overhead(RE, eiger2)
        blob_overhead = per_point_overhead(RE, blob)
        print(f"count(num={POINTS}), {EXPOSURE * 1e3:.0f} ms exposures, per-point overhead:")
        print(f"  classic EIGER2 device : {classic * 1e3:7.1f} ms   (goal < 20 ms), reading "
              f"Stats1 total and ROI1/Stats2 net")
        print(f"    the same, frames only: {without_stats * 1e3:7.1f} ms   (with / without the "
              f"plugins' numbers = {classic / without_stats:.2f}, goal <= 1)")
        print(f"  ophyd-async SimBlob   : {blob_overhead * 1e3:7.1f} ms   "
              f"(classic / SimBlob = {classic / blob_overhead:.2f}, goal < 1)")

        RE(bp.count([eiger2], num=10))
        small = catalog.runs[-1].primary["eiger2_image"]
        sim.put("cam1:AcquirePeriod", 0.00045)
        big_device = Eiger2Detector(PREFIX, name="eiger2", images_per_point=1000,
                                    write_path_template=str(root / "big"))
        big_device.wait_for_connection(timeout=10)
        RE(bp.count([big_device], num=10))
        big = catalog.runs[-1].primary["eiger2_image"]
        assert big.shape == (10, 1000, 512, 1028), big.shape
        (master,) = master_files(big)
        with h5py.File(master, "r", swmr=True) as f:
            n_frames = f[DATA_DATASET].shape[0]

        def h5py_read() -> None:
            with h5py.File(master, "r", swmr=True) as f:
                f[DATA_DATASET][0]

        t_small = median_seconds(lambda: small[0])
        t_big = median_seconds(lambda: big[0, 0])
        t_h5 = median_seconds(h5py_read)
        print(f"frame 0, median of {REPEATS} reads:")
        print(f"  Tiled, 10-frame run     : {t_small * 1e3:7.2f} ms")
        print(f"  Tiled, {n_frames}-frame run : {t_big * 1e3:7.2f} ms   "
              f"(/ 10-frame = {t_big / t_small:.2f}, goal <= 1.5)")
        print(f"  h5py, same chunk        : {t_h5 * 1e3:7.2f} ms   "
              f"(Tiled 10,000 / h5py = {t_big / t_h5:.2f}, goal <= 5)")


if __name__ == "__main__":
    main()
