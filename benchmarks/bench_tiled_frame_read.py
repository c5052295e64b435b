"""Why ``images[0]`` through Tiled can cost a whole series, and what the framewise adapter does.

The same fly scan (FRAMES frames, 16-bit, BSLZ4) twice, through the same embedded Tiled server:
* as HDF1 writes it (``file_source: hdf5_plugin``): one NDFileHDF5 file, its dataset chunked one
  frame per chunk;
* as the DCU writes it (``file_source: file_writer``, 1000 frames per data file in a fly scan):
  the master's ``/entry/data/data`` is a virtual dataset over the data files, which has no
  chunks.
Prints, for each, frame 0 through Tiled against h5py reading the same frame (the baseline), with
Tiled reading HDF5 through its stock adapter and through ``tiled_adapter.FramewiseHDF5Adapter``.
Tiled 0.2.20's stock adapter makes one dask block per chunk (``ds.chunks or ds.shape``), so a
virtual dataset is one block and any slice of it reads every frame. Last, the framewise adapter
once more with Tiled's default ``Accept-Encoding`` (the server compresses each frame, blosc2)
instead of the ``identity`` that ``open_catalog`` asks of a server on this host.

Run with ``python benchmarks/bench_tiled_frame_read.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
from bluesky import RunEngine
from common import PREFIX, REPEATS, Sim, interleaved_medians, median_seconds, simulator_and_catalog
from ophyd_async.core import TriggerInfo, init_devices
from tiled.adapters.hdf5 import HDF5Adapter
from tiled.client.decoders import SUPPORTED_DECODERS

from id3c_eiger.async_devices import Eiger2Detector
from id3c_eiger.catalog import Catalog, master_files
from id3c_eiger.geometry import EIGER2_500K
from id3c_eiger.layout import DATA_DATASET
from id3c_eiger.plans import fly_frames
from id3c_eiger.tiled_adapter import HDF5_MIMETYPE

FRAMES = 2000  # each read of the virtual layout moves FRAMES x 1 MB through the server
PERIOD = EIGER2_500K.min_period_16bit
# tiled.client.context's own Accept-Encoding: every decoder it has
TILED_DEFAULT = ", ".join(key for key in SUPPORTED_DECODERS if key != "identity")
SLOW_REPEATS = 3  # the stock adapter's reads of the virtual layout take seconds each


def one_layout(RE: RunEngine, sim: Sim, catalog: Catalog, root: Path, file_source: str) -> None:
    with init_devices():
        eiger2 = Eiger2Detector(PREFIX, name="eiger2", file_source=file_source,
                                write_path_template=str(root / file_source))
    RE(fly_frames(eiger2, TriggerInfo(number_of_events=FRAMES,
                                      livetime=PERIOD - EIGER2_500K.dead_time)))
    images = catalog.runs[-1].primary["eiger2_image"]
    (master,) = master_files(images)
    with h5py.File(master, "r", swmr=True) as f:
        virtual = f[DATA_DATASET].is_virtual

    def h5py_read() -> None:
        with h5py.File(master, "r", swmr=True) as f:
            f[DATA_DATASET][0]

    t_h5 = median_seconds(h5py_read)
    layout = (f"{file_source}: virtual dataset" if virtual
              else f"{file_source}: one chunked dataset")
    adapters = catalog.server.catalog.context.adapters_by_mimetype
    # The embedded server's own: FramewiseHDF5Adapter confined to its readable storage (the
    # bare class knows no storage and reads nothing).
    framewise = adapters[HDF5_MIMETYPE]
    headers = images.context.http_client.headers
    ours = headers["accept-encoding"]  # open_catalog's: identity, the server being on this host

    def read_with(encoding: str) -> Callable[[], object]:
        def read() -> object:
            headers["accept-encoding"] = encoding
            return images[0]
        return read

    def show(label: str, seconds: float) -> None:
        print(f"  {layout:34s} {label:21s}: Tiled {seconds * 1e3:9.1f} ms, "
              f"h5py {t_h5 * 1e3:5.2f} ms, ratio {seconds / t_h5:8.1f}")

    adapters[HDF5_MIMETYPE] = HDF5Adapter
    show("stock", median_seconds(read_with(ours),
                                 SLOW_REPEATS if virtual else REPEATS))
    adapters[HDF5_MIMETYPE] = framewise
    # Taken in turns: the machine's drift between two series is larger than the difference.
    medians = interleaved_medians({"framewise": read_with(ours),
                                   "framewise, compressed": read_with(TILED_DEFAULT)})
    for label, seconds in medians.items():
        show(label, seconds)
    headers["accept-encoding"] = ours


def main() -> None:
    with simulator_and_catalog() as (root, sim, catalog, RE):
        print(f"frame 0 of a {FRAMES}-frame fly scan (16-bit, BSLZ4) through Tiled:")
        one_layout(RE, sim, catalog, root, "hdf5_plugin")
        one_layout(RE, sim, catalog, root, "file_writer")


if __name__ == "__main__":
    main()
