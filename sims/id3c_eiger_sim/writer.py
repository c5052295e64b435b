"""Writes one series to disk: data files by direct chunk writes and the master that reaches them.

Frames arrive as indices into a ``FramePool`` of precompressed chunks, so writing costs no
compression. Data files are SWMR files flushed after every batch (a reader opening the master with
``swmr=True`` sees the frames so far; a killed IOC leaves readable files). The master is written
at open for the frames planned and rewritten atomically at every new data file and at close, when
it records the real frame count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin

from id3c_eiger.layout import (
    MasterLayout,
    SeriesMetadata,
    create_data_file,
    data_file_name,
    finish_data_file,
    plan_parts,
    write_master,
)

from .frames import FramePool
from .roots import PathRefused


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


@dataclass
class _OpenDataFile:
    number: int
    path: Path
    first_frame: int
    file: h5py.File
    dataset: h5py.Dataset
    n_frames: int = 0


class SeriesWriter:
    """One master file and its data files, written as frames arrive."""

    def __init__(
        self,
        master_path: Path,
        data_dir: Path,
        pool: FramePool,
        frame_shape: tuple[int, int],
        frames_per_file: int,
        layout: MasterLayout,
        planned_frames: int,
        metadata: SeriesMetadata,
    ) -> None:
        self.master_path = master_path
        self.data_dir = data_dir
        self.pool = pool
        self.frame_shape = frame_shape
        self.frames_per_file = max(1, frames_per_file)
        self.layout = layout
        self.metadata = metadata
        self.n_frames = 0
        self._planned = max(1, planned_frames)
        self._current: _OpenDataFile | None = None
        self._write_master(self._planned)

    @property
    def dtype(self):
        """Data type of the series (fixed by the first pool)."""
        return self.pool.settings.dtype

    def _write_master(self, n_frames: int) -> None:
        parts = plan_parts(self.master_path, self.data_dir, max(n_frames, 1), self.frames_per_file)
        if n_frames == 0:
            parts = [replace(parts[0], n_frames=0)]
        metadata = replace(self.metadata, nimages=n_frames)
        write_master(self.master_path, parts, self.frame_shape, self.dtype, self.layout, metadata)

    def _open_data_file(self, number: int) -> _OpenDataFile:
        path = self.data_dir / data_file_name(self.master_path, number)
        first = (number - 1) * self.frames_per_file
        planned = min(self.frames_per_file, max(self._planned - first, 1))
        file, dataset = create_data_file(
            path, self.frame_shape, self.dtype, dict(self.pool.filters), first + 1, planned
        )
        return _OpenDataFile(number, path, first, file, dataset)

    def _close_data_file(self) -> None:
        current = self._current
        if current is None:
            return
        current.file.close()
        finish_data_file(current.path, current.first_frame + 1, current.n_frames)
        self._current = None

    def write(self, pool: FramePool, indices: range) -> None:
        """Append the frames ``indices`` of ``pool``; flushed before returning."""
        if pool.settings.dtype != self.dtype or pool.filters != self.pool.filters:
            raise PathRefused(
                f"frames changed from {self.dtype} to {pool.settings.dtype} (or compression "
                "changed) during capture; stop the capture before changing AcquireTime, "
                "AcquirePeriod or Compression"
            )
        remaining = list(indices)
        while remaining:
            number = self.n_frames // self.frames_per_file + 1
            if self._current is None or self._current.number != number:
                self._close_data_file()
                if self.n_frames >= self._planned:
                    self._planned = self.n_frames + self.frames_per_file
                    self._write_master(self._planned)
                self._current = self._open_data_file(number)
            current = self._current
            room = self.frames_per_file - current.n_frames
            batch, remaining = remaining[:room], remaining[room:]
            start = current.n_frames
            current.dataset.resize((start + len(batch), *self.frame_shape))
            for offset, index in enumerate(batch):
                current.dataset.id.write_direct_chunk(
                    (start + offset, 0, 0), pool.chunk(index), pool.filter_mask
                )
            current.dataset.flush()
            current.n_frames += len(batch)
            self.n_frames += len(batch)

    def close(self, metadata: SeriesMetadata | None = None) -> int:
        """Close the data files and rewrite the master for the frames written; returns their count."""
        self._close_data_file()
        if metadata is not None:
            self.metadata = metadata
        self._planned = self.n_frames
        self._write_master(self.n_frames)
        return self.n_frames
