"""The DECTRIS master/data pair (the detector's FileWriter), defined once for writers and readers.

A series is one master file plus data files named ``<stem>_data_000001.h5``, ... beside it (or in
another directory). Each data file holds ``/entry/data/data``, one frame per chunk, with
``image_nr_low``/``image_nr_high`` (1-based frame numbers): (n, H, W) in Legacy files, (n,
thresholds, H, W) in v2024.2 files from the detector's FileWriter (``frame_images`` reads the first
threshold of either; ``FIRST_THRESHOLD`` is that selection as a Tiled slice). The master holds
the NXmx metadata (definition, times, instrument, source, beam, sample with its goniometer,
detector with its module and transformations) and reaches every frame exactly once:

* ``v2024.2``: ``/entry/data/data`` is an external link (one data file) or a virtual dataset over
  all data files;
* ``Legacy``: one external link ``/entry/data/data_NNNNNN`` per data file.

Types are DECTRIS's: ``NX_class``/``units`` and other attributes fixed-length ASCII (h5py reads
bytes), strings fixed-length, integers int32, floats float32. ``detectorSpecific/nimages`` is
images per trigger and ``ntrigger`` the triggers; ``total_images`` is their product.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..path_map import PathMap
from ..records import records_for

DATA_GROUP = "/entry/data"
DATA_DATASET = "/entry/data/data"  # in every data file; in a v2024.2 master
DETECTOR = "/entry/instrument/detector"
DETECTOR_SPECIFIC = f"{DETECTOR}/detectorSpecific"
MASTER_SUFFIX = "_master"  # a series' master file is <stem>_master.h5
DATA_FILE_INFIX = "_data_"  # and its data files <stem>_data_NNNNNN.h5
FIRST_THRESHOLD = ":,0"  # every frame's first-threshold image of 4-D data, as a Tiled slice

_NX_CLASSES = {
    "/entry": "NXentry",
    DATA_GROUP: "NXdata",
    "/entry/instrument": "NXinstrument",
    DETECTOR: "NXdetector",
    DETECTOR_SPECIFIC: "NXcollection",
    "/entry/instrument/beam": "NXbeam",
    "/entry/sample": "NXsample",
    "/entry/sample/beam": "NXbeam",
    "/entry/sample/goniometer": "NXtransformations",
    "/entry/source": "NXsource",
    f"{DETECTOR}/transformations": "NXtransformations",
    f"{DETECTOR}/module": "NXdetector_module",
}


def check_compression(compression: str) -> str:
    """``compression`` if the HDF5 plugin offers it (``HDF1:Compression``), else ValueError."""
    choices = records_for("HDF1:")["Compression"].choices
    if compression not in choices:
        raise ValueError(
            f"compression {compression!r} is not an HDF1:Compression choice; use one of: "
            f"{', '.join(choices)} (BSLZ4 is what DECTRIS writes)"
        )
    return compression


class MasterLayout(StrEnum):
    """How the master reaches the frames; values are the ``cam1:FWHDF5Format`` enum strings."""

    LEGACY = "Legacy"
    V2024_2 = "v2024.2"


def series_stem(master_path: str | os.PathLike[str]) -> str:
    """The series name of a master file: its name without ``.h5`` and without ``_master``."""
    name = Path(master_path).name
    name = name.removesuffix(".h5").removesuffix(".hdf5")
    return name.removesuffix(MASTER_SUFFIX)


def data_file_name(master_path: str | os.PathLike[str], number: int) -> str:
    """File name of data file ``number`` (1-based) of the series of ``master_path``."""
    return f"{series_stem(master_path)}{DATA_FILE_INFIX}{number:06d}.h5"


def legacy_link_name(number: int) -> str:
    """Name of the Legacy master's link to data file ``number``: ``data_NNNNNN``."""
    return f"data_{number:06d}"


def data_members(master: h5py.File) -> list[str]:
    """Members of ``/entry/data`` a DECTRIS reader takes as frame data (names starting "data")."""
    group = master.get(DATA_GROUP)
    if group is None:
        return []
    return sorted(name for name in group if name.startswith("data"))


def frame_images(data: Any, index: int | slice) -> np.ndarray:
    """Frame(s) ``index`` of a series' data as (H, W) images, of the first threshold where the
    data have a threshold axis (v2024.2: n, thresholds, H, W)."""
    return data[index, 0] if data.ndim == 4 else data[index]


@dataclass(frozen=True)
class DataFilePart:
    """One data file of a series, as the master links to it."""

    number: int  # 1-based data file number
    link_target: str  # file name as written in the link: relative (same dir) or absolute
    first_frame: int  # 0-based index of its first frame in the series
    n_frames: int


def plan_parts(
    master_path: Path, data_dir: Path, n_frames: int, frames_per_file: int
) -> list[DataFilePart]:
    """Data files for ``n_frames`` frames: relative links beside the master, absolute elsewhere."""
    relative = data_dir.resolve() == master_path.parent.resolve()
    parts = []
    for index, first in enumerate(range(0, n_frames, frames_per_file)):
        name = data_file_name(master_path, index + 1)
        target = name if relative else str(data_dir / name)
        parts.append(DataFilePart(index + 1, target, first, min(frames_per_file, n_frames - first)))
    return parts


INSTRUMENT_NAME = ("APS 3-ID-C", "3-ID-C")  # NXmx /entry/instrument/name and its short_name
SOURCE_NAME = ("Advanced Photon Source", "APS")


@dataclass
class SeriesMetadata:
    """The NXmx metadata a DECTRIS master carries, in SI units, eV, Angstrom and pixels.

    ``nimages`` is images per trigger and ``ntrigger`` the triggers, as DECTRIS counts them;
    ``start_time`` is ISO 8601 with its time zone.
    """

    description: str
    detector_number: str
    bit_depth_image: int
    sensor_material: str
    sensor_thickness: float
    x_pixel_size: float
    y_pixel_size: float
    beam_center_x: float
    beam_center_y: float
    count_time: float
    frame_time: float
    detector_distance: float
    incident_wavelength: float
    photon_energy: float
    threshold_energy: float
    nimages: int
    ntrigger: int
    x_pixels_in_detector: int
    y_pixels_in_detector: int
    saturation_value: int
    countrate_correction_count_cutoff: int
    software_version: str
    eiger_fw_version: str
    dead_time: float
    pixel_mask: np.ndarray = field(repr=False)
    start_time: str = "1970-01-01T00:00:00+00:00"
    title: str = ""
    sample_name: str = ""

    @property
    def total_images(self) -> int:
        """Frames of the series: images per trigger times triggers."""
        return self.nimages * self.ntrigger


def total_images(metadata: dict[str, Any]) -> int:
    """Frames a master's metadata (from ``read_metadata``) describes: nimages x ntrigger."""
    return int(metadata["nimages"]) * int(metadata.get("ntrigger", 1))


# Where each metadata field lives, old and new paths both written; readers take the first found.
_METADATA_PATHS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "description": ((f"{DETECTOR}/description",), None),
    "detector_number": ((f"{DETECTOR}/detector_number",), None),
    "bit_depth_image": ((f"{DETECTOR}/bit_depth_image",), None),
    "sensor_material": ((f"{DETECTOR}/sensor_material",), None),
    "sensor_thickness": ((f"{DETECTOR}/sensor_thickness",), "m"),
    "x_pixel_size": ((f"{DETECTOR}/x_pixel_size",), "m"),
    "y_pixel_size": ((f"{DETECTOR}/y_pixel_size",), "m"),
    "beam_center_x": ((f"{DETECTOR}/beam_center_x",), "pixel"),
    "beam_center_y": ((f"{DETECTOR}/beam_center_y",), "pixel"),
    "count_time": ((f"{DETECTOR}/count_time",), "s"),
    "frame_time": ((f"{DETECTOR}/frame_time",), "s"),
    "detector_distance": ((f"{DETECTOR}/detector_distance", f"{DETECTOR}/distance"), "m"),
    "incident_wavelength": (
        ("/entry/instrument/beam/incident_wavelength", "/entry/sample/beam/incident_wavelength"),
        "angstrom",
    ),
    "photon_energy": ((f"{DETECTOR_SPECIFIC}/photon_energy",), "eV"),
    "threshold_energy": ((f"{DETECTOR}/threshold_energy",), "eV"),
    "nimages": ((f"{DETECTOR_SPECIFIC}/nimages",), None),
    "ntrigger": ((f"{DETECTOR_SPECIFIC}/ntrigger",), None),
    "x_pixels_in_detector": ((f"{DETECTOR_SPECIFIC}/x_pixels_in_detector",), None),
    "y_pixels_in_detector": ((f"{DETECTOR_SPECIFIC}/y_pixels_in_detector",), None),
    "saturation_value": ((f"{DETECTOR_SPECIFIC}/saturation_value",), None),
    "countrate_correction_count_cutoff": (
        (f"{DETECTOR_SPECIFIC}/countrate_correction_count_cutoff",),
        None,
    ),
    "software_version": ((f"{DETECTOR_SPECIFIC}/software_version",), None),
    "eiger_fw_version": ((f"{DETECTOR_SPECIFIC}/eiger_fw_version",), None),
    "dead_time": ((f"{DETECTOR}/detector_readout_time",), "s"),
    "pixel_mask": ((f"{DETECTOR_SPECIFIC}/pixel_mask",), None),
}


def ascii_attr(obj: h5py.HLObject, name: str, value: str | list[str]) -> None:
    """An attribute as DECTRIS writes text: fixed-length, null-terminated ASCII (read as bytes,
    so a reader comparing with ``b"NXentry"`` matches)."""
    encoded = np.bytes_(value.encode("ascii")) if isinstance(value, str) else np.array(
        [v.encode("ascii") for v in value])
    obj.attrs.create(name, encoded, dtype=h5py.string_dtype("ascii", encoded.itemsize + 1))


def _dectris_value(value: Any) -> Any:
    """A scalar as DECTRIS stores it: text fixed-length ASCII, int32, float32."""
    if isinstance(value, str):
        return np.bytes_(value.encode("ascii"))
    if isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, (int, np.integer)):
        return np.int32(value)
    if isinstance(value, (float, np.floating)):
        return np.float32(value)
    return value


def _ensure_group(f: h5py.File, path: str) -> h5py.Group:
    group = f.require_group(path)
    for parent in [path, *(str(p) for p in Path(path).parents if str(p) != "/")]:
        nx_class = _NX_CLASSES.get(parent)
        if nx_class and "NX_class" not in f[parent].attrs:
            ascii_attr(f[parent], "NX_class", nx_class)
    return group


def _field(f: h5py.File, path: str, value: Any, units: str | None = None,
           **attrs: Any) -> h5py.Dataset:
    """A dataset of DECTRIS types, with ``units`` and text or vector attributes."""
    parent, _, leaf = path.rpartition("/")
    dataset = _ensure_group(f, parent).create_dataset(leaf, data=_dectris_value(value))
    if units:
        ascii_attr(dataset, "units", units)
    for name, attr in attrs.items():
        if isinstance(attr, str):
            ascii_attr(dataset, name, attr)
        else:
            dataset.attrs.create(name, np.asarray(attr, dtype=np.float64))
    return dataset


def _axis(f: h5py.File, path: str, value: Any, units: str, kind: str, vector: tuple,
          depends_on: str, offset: tuple = (0.0, 0.0, 0.0)) -> None:
    """An NXtransformations axis: a translation or rotation along ``vector``."""
    _field(f, path, value, units, transformation_type=kind, vector=vector, offset=offset,
           depends_on=depends_on)


def _write_nxmx(f: h5py.File, metadata: SeriesMetadata, n_frames: int) -> None:
    """What NXmx asks beyond the DECTRIS fields: definition and times, instrument and source
    names, the sample and its goniometer, the detector's position and its module's pixels.

    Lab frame as NXmx/McStas: z along the beam, the detector at ``detector_distance``; the module
    lies so that the beam hits pixel (``beam_center_x``, ``beam_center_y``), fast axis along -x,
    slow axis along -y.
    """
    start = np.datetime64(metadata.start_time[:26])
    seconds = metadata.total_images * metadata.frame_time
    end = start + np.timedelta64(int(seconds * 1e6), "us")
    zone = metadata.start_time[26:] if len(metadata.start_time) > 26 else "+00:00"
    _field(f, "/entry/definition", "NXmx", version="1.0")
    _field(f, "/entry/title", metadata.title)
    _field(f, "/entry/start_time", metadata.start_time)
    _field(f, "/entry/end_time_estimated", f"{end}{zone}")
    name, short = INSTRUMENT_NAME
    _field(f, "/entry/instrument/name", name, short_name=short)
    name, short = SOURCE_NAME
    _field(f, "/entry/source/name", name, short_name=short)
    _field(f, "/entry/sample/name", metadata.sample_name)
    omega = "/entry/sample/goniometer/omega"
    _field(f, "/entry/sample/depends_on", omega)
    _axis(f, omega, np.zeros(max(n_frames, 1), np.float32), "deg", "rotation", (-1.0, 0.0, 0.0),
          ".")
    _field(f, "/entry/sample/goniometer/omega_increment", 0.0, "deg")
    translation = f"{DETECTOR}/transformations/translation"
    _field(f, f"{DETECTOR}/depends_on", translation)
    _axis(f, translation, metadata.detector_distance, "m", "translation", (0.0, 0.0, 1.0), ".")
    module = f"{DETECTOR}/module"
    _field(f, f"{module}/data_origin", np.array([0, 0], np.int32))
    _field(f, f"{module}/data_size",
           np.array([metadata.y_pixels_in_detector, metadata.x_pixels_in_detector], np.int32))
    _field(f, f"{module}/data_stride", np.array([1, 1], np.int32))
    beam = np.array([metadata.beam_center_x * metadata.x_pixel_size,
                     metadata.beam_center_y * metadata.y_pixel_size, 0.0])
    norm = float(np.linalg.norm(beam))
    _axis(f, f"{module}/module_offset", norm, "m", "translation",
          tuple(beam / norm) if norm else (1.0, 0.0, 0.0), translation)
    _axis(f, f"{module}/fast_pixel_direction", metadata.x_pixel_size, "m", "translation",
          (-1.0, 0.0, 0.0), f"{module}/module_offset")
    _axis(f, f"{module}/slow_pixel_direction", metadata.y_pixel_size, "m", "translation",
          (0.0, -1.0, 0.0), f"{module}/module_offset")


_compressed_array: list[tuple[np.ndarray, int, bytes]] = []  # the last array, gzip-compressed


def _write_compressed(group: h5py.Group, leaf: str, value: np.ndarray) -> h5py.Dataset:
    """``value`` as one gzip chunk, compressed once per array: the master is rewritten many
    times in a capture and the pixel mask alone would cost ~20 ms each time."""
    if not _compressed_array or _compressed_array[0][0] is not value:
        with h5py.File(io.BytesIO(), "w") as scratch:
            ds = scratch.create_dataset("a", data=value, chunks=value.shape, compression="gzip")
            mask, chunk = ds.id.read_direct_chunk((0,) * value.ndim)
        _compressed_array[:] = [(value, mask, bytes(chunk))]
    _, mask, chunk = _compressed_array[0]
    dataset = group.create_dataset(leaf, shape=value.shape, dtype=value.dtype, chunks=value.shape,
                                   compression="gzip")
    dataset.id.write_direct_chunk((0,) * value.ndim, chunk, mask)
    return dataset


def _write_metadata(f: h5py.File, metadata: SeriesMetadata, n_frames: int) -> None:
    for name, (paths, units) in _METADATA_PATHS.items():
        value = getattr(metadata, name)
        for path in paths:
            if isinstance(value, np.ndarray):
                parent, _, leaf = path.rpartition("/")
                _write_compressed(_ensure_group(f, parent), leaf, value)
            else:
                _field(f, path, value, units)
    _write_nxmx(f, metadata, n_frames)


def read_metadata(master: h5py.File) -> dict[str, Any]:
    """The metadata of a master file by field name; fields the file lacks are left out."""
    values: dict[str, Any] = {}
    for name, (paths, _units) in _METADATA_PATHS.items():
        for path in paths:
            if path in master:
                value = master[path][()]
                values[name] = value.decode() if isinstance(value, bytes) else value
                break
    return values


def write_master(
    path: Path,
    parts: list[DataFilePart],
    frame_shape: tuple[int, ...],
    dtype: np.dtype,
    layout: MasterLayout,
    metadata: SeriesMetadata,
) -> None:
    """Write the master file for ``parts``; replaces an existing one atomically.

    Readers holding the old master keep reading it; a new open sees the new one whole.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover of a crash (never followed: unlink takes the link)
    try:
        with h5py.File(tmp, "w-") as f:  # exclusive: a symlink planted there is not followed
            _write_metadata(f, metadata, sum(p.n_frames for p in parts))
            group = _ensure_group(f, DATA_GROUP)
            if layout is MasterLayout.LEGACY:
                for part in parts:
                    group[legacy_link_name(part.number)] = h5py.ExternalLink(
                        part.link_target, DATA_DATASET
                    )
            elif len(parts) == 1:
                group["data"] = h5py.ExternalLink(parts[0].link_target, DATA_DATASET)
            else:
                total = sum(p.n_frames for p in parts)
                vds = h5py.VirtualLayout(shape=(total, *frame_shape), dtype=dtype)
                for part in parts:
                    source = h5py.VirtualSource(
                        part.link_target, DATA_DATASET, shape=(part.n_frames, *frame_shape)
                    )
                    vds[part.first_frame : part.first_frame + part.n_frames] = source
                group.create_virtual_dataset("data", vds, fillvalue=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def create_data_file(
    path: Path,
    frame_shape: tuple[int, ...],
    dtype: np.dtype,
    filters: dict[str, Any],
    first_image_nr: int,
) -> tuple[h5py.File, h5py.Dataset]:
    """Create a new data file open for SWMR writing, empty and growable, one frame per chunk.

    ``filters`` are h5py dataset keywords (e.g. from ``hdf5plugin.Bitshuffle``). Readers may open
    it with ``swmr=True`` while frames arrive; ``record_frames`` keeps ``image_nr_high`` true as
    they do. Refuses (FileExistsError) to replace an existing file.
    """
    f = h5py.File(path, "w-", libver="latest")
    try:
        _ensure_group(f, DATA_GROUP)
        dataset = f.create_dataset(
            DATA_DATASET,
            shape=(0, *frame_shape),
            maxshape=(None, *frame_shape),
            chunks=(1, *frame_shape),
            dtype=dtype,
            **filters,
        )
        dataset.attrs["image_nr_low"] = np.uint64(first_image_nr)
        dataset.attrs["image_nr_high"] = np.uint64(first_image_nr - 1)  # no frame yet
        f.swmr_mode = True
    except BaseException:
        f.close()
        raise
    return f, dataset


def record_frames(dataset: h5py.Dataset) -> None:
    """Set ``image_nr_high`` of an open data file to the frames it holds (in place: allowed under
    SWMR, so the file is never reopened for writing and readers holding it open are no bar)."""
    low = int(dataset.attrs["image_nr_low"])
    dataset.attrs.modify("image_nr_high", np.uint64(low + dataset.shape[0] - 1))


@dataclass(frozen=True)
class LinkProblem:
    """One link of a master file that does not lead to frames on this host."""

    link: str  # the member of the master: /entry/data/data, /entry/data/data_000001, ...
    target: str  # the target file as written in the master
    problem: str  # what is wrong, e.g. "file does not exist: /abs/path"

    def __str__(self) -> str:
        return f"link {self.link} -> {self.target!r}: {self.problem}"


PREFIX_VARIABLES = {"external link": "HDF5_EXT_PREFIX", "virtual source": "HDF5_VDS_PREFIX"}


def resolve_target(master_path: str | os.PathLike[str], target: str,
                   kind: str = "external link", path_map: PathMap | None = None) -> Path:
    """Where a link or VDS source ``target`` of ``master_path`` is read here, in libhdf5's order
    with ``open_dataset``'s prefix: as written if absolute and present; else the target (an
    absolute one by its file name) under each directory of ``HDF5_EXT_PREFIX`` (links) or
    ``HDF5_VDS_PREFIX`` (sources), ``${ORIGIN}`` standing for the master's directory; else where
    ``path_map`` (default ``$ID3C_EIGER_PATH_MAP``) puts an absolute target; else beside the
    master. If no candidate exists, where it would be (mapped, as written, or beside the
    master)."""
    path = Path(target)
    origin = Path(master_path).parent
    mapped = _mapped(path, path_map)
    default = mapped or (path if path.is_absolute() else origin / path)
    if path.is_absolute() and path.exists():
        return path
    name = Path(path.name) if path.is_absolute() else path
    prefixes = os.environ.get(PREFIX_VARIABLES[kind], "")
    candidates = [Path(prefix.replace("${ORIGIN}", str(origin))) / name
                  for prefix in prefixes.split(":") if prefix]
    candidates += [mapped] if mapped else []
    candidates.append(origin / name)
    return next((candidate for candidate in candidates if candidate.exists()), default)


def _mapped(target: Path, path_map: PathMap | None) -> Path | None:
    if not target.is_absolute():
        return None
    return (PathMap.from_environment() if path_map is None else path_map).map(target)


def open_dataset(file: h5py.File, name: str, path_map: PathMap | None = None) -> h5py.Dataset:
    """``file[name]``, with the targets of an external link or virtual dataset also looked for
    where ``path_map`` (default ``$ID3C_EIGER_PATH_MAP``) puts them. libhdf5 joins a prefix
    with a target's file name, so the prefix is the mapped targets' one directory (a series'
    data files lie together); given per open, it leaves the process's environment alone."""
    path_map = PathMap.from_environment() if path_map is None else path_map
    if not path_map:  # nothing to map: no link to look at (a VDS lists its sources slowly)
        return file[name]
    link = file.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        targets = [link.filename]
    elif isinstance(link, h5py.HardLink) and getattr(file.get(name), "is_virtual", False):
        targets = [source.file_name for source in file[name].virtual_sources()]
    else:
        return file[name]
    directories = {mapped.parent for target in targets
                   if Path(target).is_absolute() and (mapped := path_map.map(target)) is not None}
    if len(directories) != 1:
        return file[name]
    prefix = str(directories.pop()).encode()
    if isinstance(link, h5py.ExternalLink):
        access = h5py.h5p.create(h5py.h5p.LINK_ACCESS)
        access.set_elink_prefix(prefix)
        return h5py.Dataset(h5py.h5o.open(file.id, name.encode(), lapl=access))
    access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    access.set_virtual_prefix(prefix)
    return h5py.Dataset(h5py.h5d.open(file.id, name.encode(), dapl=access))


@dataclass(frozen=True)
class LinkTarget:
    """One place the master's frame data lives outside the master: an external link or a
    virtual-dataset source."""

    link: str  # the member of the master: /entry/data/data, /entry/data/data_000001, ...
    kind: str  # "external link" or "virtual source"
    target: str  # the target file as written in the master
    dataset: str  # the dataset in the target file
    first_frame: int = 0  # a virtual source's first frame in the master's dataset


def link_targets(master: h5py.File) -> list[LinkTarget]:
    """Every external link and VDS source of the master's ``/entry/data/data*`` members."""
    targets = []
    for name in data_members(master):
        link_path = f"{DATA_GROUP}/{name}"
        link = master.get(link_path, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            targets.append(LinkTarget(link_path, "external link", link.filename, link.path))
        elif isinstance(link, h5py.HardLink) and master[link_path].is_virtual:
            targets += [
                LinkTarget(link_path, "virtual source", source.file_name, source.dset_name,
                           int(source.vspace.get_select_bounds()[0][0]))
                for source in master[link_path].virtual_sources()
                if source.file_name != "."  # a source in the master itself
            ]
    return targets


def missing_filters(dataset: h5py.Dataset) -> list[str]:
    """The compression filters ``dataset`` needs that this process cannot decode."""
    plist = dataset.id.get_create_plist()
    missing = []
    for index in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(index)
        if not h5py.h5z.filter_avail(code):
            missing.append(f"{code} ({name.decode(errors='replace') or 'unnamed'})")
    return missing


class UnreadableFile(OSError):
    """A file no reader should open or read: not a regular file, or cut short."""


_FILE_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
               (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))


def check_file(path: str | os.PathLike[str]) -> None:
    """Refuse, before the open or read that would hang: a FIFO, device or socket (an open
    blocks) and an HDF5 file cut short (libhdf5 reading it with ``swmr=True`` retries forever).
    ``FileNotFoundError`` if it is missing."""
    mode = os.stat(path).st_mode
    for test, kind in _FILE_KINDS:
        if test(mode):
            raise UnreadableFile(f"{path} is a {kind}, not a regular file, and reading it would "
                                 "block or fail; point at (or restore) the real HDF5 file")
    try:
        with h5py.File(path, "r", locking=False):
            pass
    except OSError as err:  # a file being written (SWMR) may refuse this open: that is fine
        if "truncated file" in str(err):
            raise UnreadableFile(
                f"{path} is cut short ({os.stat(path).st_size} bytes; HDF5 says: "
                f"{' '.join(str(err).split())}): a copy that did not finish or a full disk. "
                "Copy it again from where the IOC wrote it") from None


def check_target(master_path: str | os.PathLike[str], target: LinkTarget,
                 path_map: PathMap | None = None) -> tuple[str, str]:
    """(status, detail) of one link target here: status is OK, missing file, not readable,
    missing dataset, filter unavailable or cannot open; detail says where and why."""
    resolved = resolve_target(master_path, target.target, target.kind, path_map)
    if not resolved.exists():
        return "missing file", f"file does not exist: {resolved}"
    try:
        check_file(resolved)
    except UnreadableFile as err:
        return "not readable", str(err)
    try:
        with h5py.File(resolved, "r", swmr=True) as f:
            if target.dataset not in f:
                return "missing dataset", f"{resolved} has no dataset {target.dataset}"
            missing = missing_filters(f[target.dataset])
    except OSError as err:
        return "cannot open", f"cannot open {resolved}: {err}"
    if missing:
        return "filter unavailable", (
            f"{resolved}:{target.dataset} needs compression filter(s) {', '.join(missing)}, not "
            "available here; install hdf5plugin and import it (or set HDF5_PLUGIN_PATH)"
        )
    return "OK", str(resolved)


def unresolved_links(master_path: str | os.PathLike[str], dataset: str = DATA_DATASET,
                     path_map: PathMap | None = None) -> list[LinkProblem]:
    """Every link (external link or VDS source) of the master's frame data that does not
    resolve here; empty when all frames are reachable. Raises OSError if the master won't open."""
    with h5py.File(master_path, "r", swmr=True) as master:
        if not data_members(master):
            return [LinkProblem(dataset, "", f"{master_path} has no {DATA_GROUP}/data* member")]
        targets = link_targets(master)
    problems = []
    for target in targets:
        status, detail = check_target(master_path, target, path_map)
        if status != "OK":
            problems.append(LinkProblem(target.link, target.target, detail))
    return problems
