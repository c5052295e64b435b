"""The embedded Tiled server's HDF5 adapter: a multi-file master (virtual dataset) is served
frame by frame, with every frame equal to the files', and a slice reads only its frames."""

from __future__ import annotations

import bluesky.plans as bp
import h5py
import numpy as np

from helpers import CLASSIC, expected_frames, load_eiger2, master_frames
from id3c_eiger import tiled_adapter
from id3c_eiger.catalog import master_files
from id3c_eiger.layout import DATA_DATASET


def test_frames_across_data_files_through_tiled_equal_the_files(tmp_path, sim, RE, catalog,
                                                                monkeypatch) -> None:
    sim.put("cam1:FWNImagesPerFile", 2)  # five frames: three data files, a virtual dataset
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/vds/")
    (uid,) = RE(bp.count([eiger2], num=5))
    images = catalog.runs[uid].primary["eiger2_image"]
    (master,) = master_files(images)
    with h5py.File(master, "r") as f:
        assert f[DATA_DATASET].is_virtual
    on_disk = master_frames(master)
    np.testing.assert_array_equal(images[0:5], on_disk)
    np.testing.assert_array_equal(images[3], expected_frames(master, range(3, 4))[0])
    # The adapter reads the frames a slice asks for, not the series.
    reads = []
    original = tiled_adapter._VirtualFrames.__getitem__

    def spy(self, index):
        reads.append(index)
        return original(self, index)

    monkeypatch.setattr(tiled_adapter._VirtualFrames, "__getitem__", spy)
    array = tiled_adapter.FramewiseHDF5ArrayAdapter.lazy_load_hdf5_array(
        master, dataset=DATA_DATASET, swmr=True)
    assert array.numblocks[0] == 5
    np.testing.assert_array_equal(array[3].compute(), on_disk[3])
    frames_read = set()
    for index in reads:  # dask also probes with an empty slice for the dtype
        first = index[0]
        frames_read |= {first} if isinstance(first, int) else set(range(*first.indices(5)))
    assert frames_read == {3}


def test_a_deployed_server_names_the_adapter_in_its_configuration(tmp_path) -> None:
    """The README's config form: tiled's catalog imports the adapter from its dotted name."""
    from tiled.catalog import from_uri

    catalog = from_uri(f"sqlite:///{tmp_path / 'catalog.db'}", init_if_not_exists=True,
                       readable_storage=[str(tmp_path)],
                       adapters_by_mimetype={tiled_adapter.HDF5_MIMETYPE:
                                             "id3c_eiger.tiled_adapter:FramewiseHDF5Adapter"})
    adapter = catalog.context.adapters_by_mimetype[tiled_adapter.HDF5_MIMETYPE]
    assert adapter is tiled_adapter.FramewiseHDF5Adapter
