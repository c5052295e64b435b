"""The simulator's file writers: ``SeriesWriter`` for the DCU's DECTRIS series and
``NDFileWriter`` for the ``HDF1:`` plugin's single file (layouts in ``id3c_eiger.layout``).

A series goes to disk as the DCU writes it: the master at arm, for the frames the arm asks
(``nimages`` x ``ntrigger``, linking every data file they will fill), then data files by direct
chunk writes as frames arrive. A series that ends early leaves the master as written: its links
to data files never made dangle, as on the detector; readers count frames in the data files.

Frames arrive as indices into a ``FramePool`` of precompressed chunks, so writing costs no
compression. Data files are SWMR files flushed after every batch (a reader sees the frames so
far; a killed IOC leaves readable files) and never reopened once closed, so readers holding them
open cannot stop a capture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from id3c_eiger.layout import (
    MasterLayout,
    NDFile,
    SeriesMetadata,
    camera_attributes,
    create_data_file,
    data_file_name,
    plan_parts,
    record_frames,
    series_stem,
    write_master,
)

from .faults import Faults
from .frames import FramePool
from .roots import FileTarget, PathRefused


def compression_filters(name: str, zlib_level: int = 6) -> dict[str, Any]:
    """h5py dataset keywords for an ``HDF1:Compression`` choice the simulator supports."""
    if name == "None":
        return {}
    if name == "BSLZ4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if name == "LZ4":
        return dict(hdf5plugin.LZ4())
    if name == "zlib":
        return {"compression": "gzip", "compression_opts": min(max(zlib_level, 1), 9)}
    if name == "Blosc":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    raise PathRefused(
        f"Compression {name} is not supported by the simulator; choose None, BSLZ4, LZ4, zlib "
        "or Blosc"
    )


EPICS_EPOCH = 631152000.0  # s: 1990-01-01 UTC, where EPICS time stamps start


@dataclass
class _OpenDataFile:
    number: int
    path: Path
    file: h5py.File
    dataset: h5py.Dataset
    n_frames: int = 0


class SeriesWriter:
    """One master file, written at arm, and its data files, written as frames arrive (never
    over existing files)."""

    def __init__(
        self,
        target: FileTarget,
        pool: FramePool,
        frames_per_file: int,
        layout: MasterLayout,
        metadata: SeriesMetadata,
        faults: Faults | None = None,
        on_data_file_closed: Callable[[Path], None] | None = None,
    ) -> None:
        self.master_path = target.master_path
        self.data_dir = target.data_dir
        self._master_io = target.master_io  # writes go through the directories held open
        self._data_io = target.data_io
        self.pool = pool
        self.frame_shape = pool.frame_shape  # (H, W), or (thresholds, H, W) in v2024.2 files
        self.frames_per_file = max(1, frames_per_file)
        self.layout = layout
        self.metadata = replace(metadata, title=series_stem(self.master_path))
        self.faults = faults or Faults()
        self._on_data_file_closed = on_data_file_closed  # (the DCU makes it downloadable)
        self.n_frames = 0
        self._current: _OpenDataFile | None = None
        if self._master_io.exists():
            raise PathRefused(
                f"{self.master_path} exists and the IOC never overwrites a file; set another "
                "HDF1:FileName or FileNumber (AutoIncrement Yes moves it on)"
            )
        self._write_master()

    @property
    def dtype(self):
        """Data type of the series (fixed by the first pool)."""
        return self.pool.settings.dtype

    def _write_master(self) -> None:
        """The master for every frame the arm asks, linking the data files they will fill."""
        total = max(self.metadata.total_images, 1)
        parts = plan_parts(self.master_path, self.data_dir, total, self.frames_per_file)
        write_master(self._master_io, parts, self.frame_shape, self.dtype, self.layout,
                     self.metadata)

    def _open_data_file(self, number: int) -> _OpenDataFile:
        name = data_file_name(self.master_path, number)
        path = self._data_io / name
        first = (number - 1) * self.frames_per_file
        try:
            file, dataset = create_data_file(
                path, self.frame_shape, self.dtype, dict(self.pool.filters), first + 1
            )
        except FileExistsError:
            raise PathRefused(
                f"data file {self.data_dir / name} exists and the IOC never overwrites a file; set another "
                "HDF1:FileName or FileNumber"
            ) from None
        return _OpenDataFile(number, path, file, dataset)

    def _close_data_file(self) -> None:
        current = self._current
        if current is None:
            return
        self._current = None
        current.file.close()
        if self._on_data_file_closed is not None:
            self._on_data_file_closed(self.data_dir / current.path.name)

    def write(self, pool: FramePool, indices: range) -> None:
        """Append the frames ``indices`` of ``pool``; flushed before returning. A write fault
        (``OSError``) leaves the frames before it written, flushed and counted."""
        if (pool.settings.dtype != self.dtype or pool.filters != self.pool.filters
                or pool.frame_shape != self.frame_shape):
            raise PathRefused(
                f"frames changed from {self.dtype} to {pool.settings.dtype} (or compression "
                "changed, or the thresholds) during capture; stop the capture before changing "
                "AcquireTime, AcquirePeriod, Compression or Threshold2Enable"
            )
        remaining = indices
        while remaining:
            number = self.n_frames // self.frames_per_file + 1
            if self._current is None or self._current.number != number:
                self._close_data_file()
                self._current = self._open_data_file(number)
            current = self._current
            room = self.frames_per_file - current.n_frames
            batch, remaining = remaining[:room], remaining[room:]
            self._write_batch(current, pool, batch)
            if current.n_frames >= self.frames_per_file:
                self._close_data_file()  # full: closed now, so it is available at once

    def _write_batch(self, current: _OpenDataFile, pool: FramePool, batch: range) -> None:
        faults = self.faults
        if faults.write_delay:
            time.sleep(faults.write_delay * len(batch))
        start = current.n_frames
        dataset = current.dataset
        inner = (0,) * len(self.frame_shape)
        dataset.resize((start + len(batch), *self.frame_shape))
        written = 0
        try:
            for index in batch:
                chunk = pool.chunk(index)
                faults.before_write(len(chunk))
                dataset.id.write_direct_chunk((start + written, *inner), chunk, pool.filter_mask)
                written += 1
        finally:
            if written < len(batch):
                dataset.resize((start + written, *self.frame_shape))
            current.n_frames += written
            self.n_frames += written
            record_frames(dataset)
            dataset.flush()

    def close(self) -> int:
        """Close the last data file (the master was written at arm); returns the frames."""
        self._close_data_file()
        return self.n_frames


class NDFileWriter:
    """One ``HDF1:`` capture file in NDFileHDF5's default layout, written as frames arrive: no
    links, NDAttributes with each frame (``StoreAttr``), readable while written with SWMR on."""

    def __init__(self, target: FileTarget, pool: FramePool, metadata: SeriesMetadata,
                 store_attributes: bool, swmr: bool, faults: Faults | None = None) -> None:
        self.path = target.master_path  # the one file, as FullFileName_RBV names it
        self.pool = pool
        self.faults = faults or Faults()
        self._camera = camera_attributes(metadata)
        try:
            self._file = NDFile(target.master_io, pool.frame_shape, pool.settings.dtype,
                                dict(pool.filters), store_attributes, swmr)
        except FileExistsError:
            raise PathRefused(
                f"{self.path} exists and NDFileHDF5 never overwrites a file here; set "
                "another HDF1:FileName or FileNumber (AutoIncrement Yes moves it on)"
            ) from None

    @property
    def n_frames(self) -> int:
        """Frames in the file."""
        return self._file.n_frames

    def write(self, pool: FramePool, indices: range, first_unique_id: int = 1) -> None:
        """Append the frames ``indices`` of ``pool`` (NDArray unique ids from
        ``first_unique_id``); flushed before returning. A write fault (``OSError``) leaves the
        frames before it written, flushed and counted."""
        if (pool.settings.dtype != self.pool.settings.dtype or pool.filters != self.pool.filters
                or pool.frame_shape != self.pool.frame_shape):
            raise PathRefused(
                f"frames changed from {self.pool.settings.dtype} to {pool.settings.dtype} (or "
                "compression changed) during capture; stop the capture before changing "
                "AcquireTime, AcquirePeriod or Compression"
            )
        faults = self.faults
        if faults.write_delay:
            time.sleep(faults.write_delay * len(indices))
        n, now = len(indices), time.time()
        attributes = {name: [value] * n for name, value in self._camera.items()}
        attributes |= {"NDArrayUniqueId": np.arange(first_unique_id, first_unique_id + n),
                       "NDArrayTimeStamp": [now - EPICS_EPOCH] * n,
                       "NDArrayEpicsTSSec": [int(now - EPICS_EPOCH)] * n,
                       "NDArrayEpicsTSnSec": [int(now % 1 * 1e9)] * n, "ColorMode": [0] * n}

        def chunk(k: int) -> bytes:
            data = pool.chunk(indices[k])
            faults.before_write(len(data))
            return data

        self._file.append(n, chunk, pool.filter_mask, attributes)

    def close(self) -> int:
        """Close the file; returns its frames (the settings travel with each frame, as
        NDAttributes, so nothing is rewritten at the end)."""
        n_frames = self.n_frames
        self._file.close()
        return n_frames
