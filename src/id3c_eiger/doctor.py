"""The doctor: walks the chain hop by hop and names the first that fails, with the fix.

This part checks a master file with no IOC and no Tiled: it opens, it is a master, every link
resolves here, and a frame decodes. The IOC and Tiled hops are not written yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import h5py

from .inspection import MasterFileError, inspect_master, open_master
from .layout import DATA_DATASET


@dataclass(frozen=True)
class Hop:
    """One hop of the chain: PASS with what was seen, or FAIL with the fix."""

    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.detail}"


def check_master_file(path: str | os.PathLike[str]) -> Iterator[Hop]:
    """The file hops of one master file; stops at the first failure."""
    try:
        report = inspect_master(path)
    except MasterFileError as err:
        yield Hop("master file", False, str(err))
        return
    frames = report.metadata.get("nimages", "?")
    yield Hop("master file", True, f"{path} is an EIGER master ({frames} images per trigger)")
    broken = [link for link in report.links if link.status != "OK"]
    if broken:
        for link in broken:
            target = link.target
            hint = ""
            if link.status == "missing file" and os.path.isabs(target.target):
                hint = (" The link holds an absolute path, as the writing host saw it: mount the "
                        "data there, or set HDF5_EXT_PREFIX / HDF5_VDS_PREFIX to where it is here.")
            yield Hop("links", False,
                      f"{target.link} ({target.kind}) -> {target.target!r}: {link.status}: "
                      f"{link.detail}.{hint}")
        return
    yield Hop("links", True, f"{len(report.links)} link(s) resolve and their filters are here")
    try:
        with open_master(path) as master:
            shape = master[DATA_DATASET][0].shape
    except (OSError, ValueError, IndexError) as err:
        yield Hop("frame decodes", False,
                  f"frame 0 of {path} cannot be read: {err}. Fix: install hdf5plugin and import "
                  "it before reading (it registers the bitshuffle/LZ4 filters)")
        return
    yield Hop("frame decodes", True, f"frame 0 reads as {shape} with h5py {h5py.__version__}")
