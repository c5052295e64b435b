"""A recorded file as a reader sees it: its tree, where each link leads here, and its metadata.
A DECTRIS master reaches its frames by links; an ``HDF1:`` NDFileHDF5 file holds them (no links).

``inspect_master(path)`` is ``f.visit(print)`` made useful: each dataset's shape, dtype and
compression; each external link or virtual-dataset source with its target as written, the path it
resolves to here, and OK / missing file / missing dataset / filter unavailable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters a DECTRIS file uses)
import numpy as np

from .layout import (
    DATA_GROUP,
    LinkTarget,
    UnreadableFile,
    check_file,
    check_target,
    data_members,
    is_ndfile,
    link_targets,
    read_metadata,
)
from .path_map import PathMap

KEY_METADATA = ("description", "nimages", "ntrigger", "count_time", "frame_time", "photon_energy",
                "beam_center_x", "beam_center_y", "detector_distance", "bit_depth_image")


class MasterFileError(ValueError):
    """A path that is neither a readable EIGER master file nor an HDF1 file; the message says
    what it is instead."""


@dataclass(frozen=True)
class DatasetInfo:
    path: str
    shape: tuple[int, ...]
    dtype: str
    compression: str
    value: str | None = None  # a scalar (or up to SHOWN_ELEMENTS values), as text
    units: str = ""  # the dataset's ``units`` attribute


SHOWN_ELEMENTS = 3  # datasets this small show their values, larger ones their shape


def _text(value: Any) -> str:
    """A dataset's or attribute's value as a person reads it: text decoded, floats short."""
    if isinstance(value, bytes):
        return value.decode(errors="replace").strip() or '""'  # an empty text shows as such
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(_text(v) for v in value.tolist()) + "]"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value.item() if isinstance(value, np.generic) else value)


def _info(path: str, node: h5py.Dataset) -> DatasetInfo:
    value = _text(node[()]) if node.size <= SHOWN_ELEMENTS and node.dtype.kind != "V" else None
    units = node.attrs.get("units", "")
    dtype = node.dtype
    kind = (f"ascii[{dtype.itemsize}]" if dtype.kind == "S"
            else "utf-8" if h5py.check_string_dtype(dtype) else str(dtype))
    return DatasetInfo(path, node.shape, kind, _compression(node), value,
                       _text(units) if units is not None else "")


@dataclass(frozen=True)
class LinkReport:
    target: LinkTarget
    status: str  # OK, missing file, missing dataset, filter unavailable, cannot open
    detail: str  # where it resolves here, or why not


@dataclass
class MasterReport:
    path: Path
    datasets: list[DatasetInfo] = field(default_factory=list)
    links: list[LinkReport] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    single_file: bool = False  # an HDF1 (NDFileHDF5) file: the frames are in it, no links

    @property
    def ok(self) -> bool:
        """Every link resolves and decodes here."""
        return all(link.status == "OK" for link in self.links)


def open_master(path: str | os.PathLike[str]) -> h5py.File:
    """Open ``path`` as an EIGER master file or an HDF1 (NDFileHDF5) file, or raise
    ``MasterFileError`` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise MasterFileError(f"{path} does not exist; give the path of a *_master.h5 file")
    if not path.is_file():
        raise MasterFileError(f"{path} is not a file; give the path of a *_master.h5 file")
    try:
        check_file(path)
    except UnreadableFile as err:
        raise MasterFileError(str(err)) from None
    if not h5py.is_hdf5(path):
        raise MasterFileError(f"{path} is not an HDF5 file; give the path of a *_master.h5 file")
    master = h5py.File(path, "r", swmr=True)
    problem = None
    if not data_members(master):
        problem = f"it has no {DATA_GROUP}/data* member"
    elif not link_targets(master) and not is_ndfile(master):
        problem = f"its {DATA_GROUP}/data* hold frames themselves (a data file), not links"
    if problem:
        master.close()
        raise MasterFileError(
            f"{path} is an HDF5 file but not an EIGER master: {problem}; give the *_master.h5 "
            "file of the series (or the HDF1 plugin's file)"
        )
    return master


def check_frames_readable(path: str | os.PathLike[str], master: h5py.File) -> None:
    """Before reading frames: every link target is a whole regular file (reading a FIFO or a
    file cut short would hang), else ``MasterFileError`` naming it."""
    for target in link_targets(master):
        status, detail = check_target(path, target)
        if status == "not readable":
            raise MasterFileError(f"frames of {path} cannot be read: {target.link} -> {detail}")


def _compression(dataset: h5py.Dataset) -> str:
    plist = dataset.id.get_create_plist()
    names = [plist.get_filter(i)[3].decode(errors="replace") or str(plist.get_filter(i)[0])
             for i in range(plist.get_nfilters())]
    return "+".join(names) or "none"


def inspect_master(path: str | os.PathLike[str], path_map: PathMap | None = None) -> MasterReport:
    """The report of one master file (raises ``MasterFileError`` if it is not one); absolute
    link targets are also looked for through ``path_map`` (default ``$ID3C_EIGER_PATH_MAP``)."""
    report = MasterReport(Path(path))
    with open_master(path) as master:
        def visit(name: str) -> None:
            link = master.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                return  # listed with its status below
            node = master.get(name)
            if isinstance(node, h5py.Dataset):
                report.datasets.append(_info("/" + name, node))

        master.visit_links(visit)
        report.metadata = {k: v for k, v in read_metadata(master).items() if k in KEY_METADATA}
        report.single_file = is_ndfile(master)
        targets = link_targets(master)
    report.links = [LinkReport(t, *check_target(path, t, path_map)) for t in targets]
    return report


def format_report(report: MasterReport) -> str:
    """The report as text for a terminal: datasets under their group, in aligned columns (value
    and units for scalars, shape for arrays), the links with where they resolve, the metadata."""
    lines = [f"{report.path}"]
    groups: dict[str, list[DatasetInfo]] = {}
    for info in report.datasets:
        groups.setdefault(info.path.rpartition("/")[0] or "/", []).append(info)
    width = max((len(d.path.rpartition("/")[2]) for d in report.datasets), default=0)
    for group, infos in groups.items():
        lines.append(f"  {group}")
        for d in infos:
            shown = (f"{d.value} {d.units}".strip() if d.value is not None
                     else f"{d.shape} {d.units}".strip())
            compression = "" if d.compression == "none" else f"  {d.compression}"
            row = f"    {d.path.rpartition('/')[2]:<{width}}  {shown:<24} {d.dtype}{compression}"
            lines.append(row.rstrip())
    lines.append("links:" if report.links else "links: none (the frames are in this file)")
    for link in report.links:
        t = link.target
        lines.append(f"  {t.link} ({t.kind}) -> {t.target}:{t.dataset}")
        lines.append(f"      {link.status}: {link.detail}")
    lines.append("metadata:")
    keys = [key for key in KEY_METADATA if key in report.metadata]
    key_width = max(map(len, keys), default=0)
    lines += [f"  {key:<{key_width}}  {_text(report.metadata[key])}" for key in keys]
    return "\n".join(lines)
