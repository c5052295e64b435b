"""A Tiled server adapter for HDF5 that reads one frame of a virtual dataset, not all of them.

Tiled 0.2.20's ``HDF5ArrayAdapter`` makes one dask block per HDF5 chunk (``ds.chunks or
ds.shape``). A virtual dataset has no chunks, so a v2024.2 master spanning several data files
becomes a single block, and ``images[0]`` reads the whole series on the server
(``benchmarks/bench_tiled_frame_read.py``). This adapter gives virtual datasets one block per
frame. It changes nothing for other datasets.

The embedded server uses it (``catalog.open_catalog``). A deployed server takes it from its
configuration::

    trees:
      - path: /
        tree: catalog
        args:
          adapters_by_mimetype:
            application/x-hdf5: id3c_eiger.tiled_adapter:FramewiseHDF5Adapter
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array
import h5py
import hdf5plugin  # noqa: F401  (the server decodes bitshuffle/LZ4 frames)
from tiled.adapters.hdf5 import SWMR_DEFAULT, HDF5Adapter, HDF5ArrayAdapter, h5open
from tiled.structures.core import StructureFamily

HDF5_MIMETYPE = "application/x-hdf5"


class _VirtualFrames:
    """A virtual dataset as dask sees an array: shape and dtype, read by slices on demand."""

    def __init__(self, path: str | Path, dataset: str | None, shape: tuple[int, ...],
                 dtype: Any, open_options: dict[str, Any]) -> None:
        self.path, self.dataset, self.open_options = path, dataset, open_options
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)

    @classmethod
    def of(cls, path: str | Path, dataset: str | None, **open_options: Any) -> _VirtualFrames | None:
        """The frames of ``dataset`` if it is a virtual dataset with frames, else None; one open."""
        with h5open(path, dataset, **open_options) as ds:
            if not (isinstance(ds, h5py.Dataset) and ds.is_virtual and ds.ndim and ds.shape[0]):
                return None
            return cls(path, dataset, ds.shape, ds.dtype, open_options)

    def __getitem__(self, index: Any) -> Any:
        with h5open(self.path, self.dataset, **self.open_options) as ds:
            return ds[index]


class FramewiseHDF5ArrayAdapter(HDF5ArrayAdapter):
    """Tiled's HDF5 array adapter, with virtual datasets split one frame (leading index) a block."""

    @staticmethod
    def lazy_load_hdf5_array(
        *file_paths: str | Path,
        dataset: str | None = None,
        swmr: bool = SWMR_DEFAULT,
        libver: str = "latest",
        locking: bool | str | None = None,
    ) -> dask.array.Array:
        options = {"swmr": swmr, "libver": libver, "locking": locking}
        arrays = []
        for path in file_paths:
            frames = _VirtualFrames.of(path, dataset, **options)
            if frames is not None:
                arrays.append(dask.array.from_array(frames, chunks=(1, *frames.shape[1:]),
                                                    asarray=True, lock=False))
            else:
                arrays.append(HDF5ArrayAdapter.lazy_load_hdf5_array(path, dataset=dataset,
                                                                    **options))
        return arrays[0] if len(arrays) == 1 else dask.array.concatenate(arrays, axis=0)


class FramewiseHDF5Adapter(HDF5Adapter):
    """Tiled's HDF5 adapter, serving arrays through ``FramewiseHDF5ArrayAdapter``."""

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, dataset: str | list[str] = "/",
                     **kwargs: Any) -> Any:
        if not isinstance(dataset, str):
            dataset = "/".join(dataset)
        if data_source.structure_family == StructureFamily.array:
            return FramewiseHDF5ArrayAdapter.from_catalog(data_source, node, dataset=dataset,
                                                          **kwargs)
        return HDF5Adapter.from_catalog(data_source, node, dataset=dataset, **kwargs)
