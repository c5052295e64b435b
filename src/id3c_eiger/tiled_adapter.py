"""A Tiled server adapter for HDF5 that reads one frame of a virtual dataset, not all of them.

Tiled 0.2.20's ``HDF5ArrayAdapter`` makes one dask block per HDF5 chunk (``ds.chunks or
ds.shape``). A virtual dataset has no chunks, so a v2024.2 master spanning several data files
becomes a single block, and ``images[0]`` reads the whole series on the server
(``benchmarks/bench_tiled_frame_read.py``). This adapter gives virtual datasets one block per
frame. It changes nothing for other datasets.

It also confines what a registered master can make the server read. Tiled 0.2.20 checks only the
registered file's path, without resolving ``..`` or symlinks, and libhdf5 follows external links
and virtual-dataset sources anywhere. This adapter refuses any master, link target or VDS source
whose real path lies outside the readable storage, naming the path and the rule.

Each request is cheap however many files a run has: the server keeps each registered file's
check and frame geometry while every path the check visited is unchanged (``signature``), and
reads a frame from its own file only.

The embedded server uses it (``catalog.open_catalog``). A deployed server names
``framewise_catalog`` as its tree (what ``id3c-eiger tiled-config`` writes), which gives the
adapter the server's readable storage and path map from the configuration::

    trees:
      - path: /
        tree: id3c_eiger.tiled_adapter:framewise_catalog
        args:
          uri: postgresql://tiled@dbhost/tiled
          readable_storage: [/gdata/3idc/eiger]
          path_map: {/detector/eiger2: /gdata/3idc/eiger}

With Tiled's own ``tree: catalog`` and ``adapters_by_mimetype`` naming
``id3c_eiger.tiled_adapter:FramewiseHDF5Adapter``, the adapter takes them from
``ID3C_EIGER_READABLE_STORAGE`` (directories separated by ``:``) and ``ID3C_EIGER_PATH_MAP``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array
import h5py
import hdf5plugin  # noqa: F401  (the server decodes bitshuffle/LZ4 frames)
import numpy as np
from starlette.exceptions import HTTPException
from starlette.status import HTTP_403_FORBIDDEN, HTTP_404_NOT_FOUND, HTTP_422_UNPROCESSABLE_CONTENT
from tiled.adapters.hdf5 import SWMR_DEFAULT, HDF5Adapter, HDF5ArrayAdapter
from tiled.ndslice import NDSlice
from tiled.structures.core import StructureFamily
from tiled.utils import BrokenLink, path_from_uri

from .layout import (
    LinkTarget,
    UnreadableFile,
    check_file,
    link_targets,
    missing_filters,
    open_dataset,
    resolve_target,
)
from .path_map import PATH_MAP_VARIABLE, PathMap
from .tiled_server_speed import reuse_dependency_graphs

HDF5_MIMETYPE = "application/x-hdf5"
READABLE_STORAGE_VARIABLE = "ID3C_EIGER_READABLE_STORAGE"
builtins_slice = slice  # the adapter's methods take a parameter named slice, as Tiled's do
LINK_DEPTH = 3  # files followed through links: master -> data file -> (no further in DECTRIS files)


class OutsideReadableStorage(PermissionError):
    """A file the server was asked to read (or a link target) lies outside its readable storage."""


class FilterUnavailable(OSError):
    """Frames the server was asked to read need a compression filter it cannot decode."""


@dataclass(frozen=True)
class MissingTarget:
    """A link target or virtual source of a master that does not exist on this server."""

    target: LinkTarget
    resolved: Path  # where libhdf5 looks for it here (HDF5_EXT_PREFIX/HDF5_VDS_PREFIX applied)

    def __str__(self) -> str:
        zeros = ": its frames would read as zeros" if self.target.kind == "virtual source" else ""
        fix = ("mount the data files on the Tiled host where the master says they are, or "
               "set HDF5_EXT_PREFIX / HDF5_VDS_PREFIX in the server's environment to where they "
               "are")
        if Path(self.target.target).is_absolute():
            fix = ("map the writing host's root of that path to where the share is on the "
                   "Tiled host: path_map {WRITE_ROOT: READ_ROOT} in the server's configuration "
                   "(id3c-eiger tiled-config writes it from the devices file), or "
                   f"{PATH_MAP_VARIABLE}=WRITE_ROOT=READ_ROOT in its environment for a server "
                   "configured with tree: catalog; or " + fix)
        return (f"{self.target.kind} {self.target.link} -> {self.target.target!r} (as written) "
                f"resolves on this server to {self.resolved}, which does not exist{zeros}. "
                f"Fix: {fix}")


Signature = tuple[Any, ...]


def signature(path: Path) -> Signature:
    """What ``path`` is now: its real path and, if a file is there, that file's device, inode,
    type, size and modification and change times. A check of a file stands while every path it
    visited has the same signature: a target swapped for a symlink, replaced or rewritten
    changes it."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return (real,)
    return (real, st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_confined(master: str | Path, roots: Iterable[str | Path],
                   path_map: PathMap | None = None, dataset: str | None = None,
                   visited: dict[Path, Signature] | None = None) -> list[MissingTarget]:
    """Refuse (``OutsideReadableStorage``) a master, or any external-link target or virtual
    source it reaches (absolute ones through ``path_map``), whose real path (``..`` and symlinks
    resolved) is outside ``roots``, or which is not a regular file (a FIFO or device would block
    the server); refuse (``FilterUnavailable``) frames (the master's ``dataset``, or a target's)
    stored with a filter this server cannot decode, and (``UnreadableFile``) a file cut short or
    that the server's user may not read. Returns the targets that do not exist here; ``visited``
    gets each path checked with its ``signature`` as it was before the check read it."""
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    shown = ", ".join(f"{root}/" for root in real_roots) or "(none)"
    seen: set[Path] = set()
    missing: list[MissingTarget] = []

    def check(path: Path, what: str, depth: int, target: LinkTarget | None = None) -> None:
        if visited is not None:
            visited[path] = signature(path)
        real = Path(os.path.realpath(path))
        if real in seen:
            return
        seen.add(real)
        if target is not None and not real.exists():  # nothing there to leak: missing
            missing.append(MissingTarget(target, path))
            return
        if not any(real == root or real.is_relative_to(root) for root in real_roots):
            raise OutsideReadableStorage(
                f"refusing to read {what} {path}" + (f" (really {real})" if real != path else "")
                + f": outside this server's readable storage ({shown}). Fix: register files "
                "that lie, with every link target, inside readable_storage, or add their real "
                "directory to it (in the server's configuration; for tree: catalog also to $"
                + READABLE_STORAGE_VARIABLE + ")")
        try:
            mode = real.stat().st_mode
        except FileNotFoundError:  # the master, gone since registered: Tiled names it
            return
        if not stat.S_ISREG(mode):
            raise OutsideReadableStorage(f"refusing to read {what} {path}: not a regular file")
        if depth >= LINK_DEPTH:
            return
        try:
            check_file(real)  # one cut short would keep the SWMR open below retrying for ever
            with h5py.File(real, "r", swmr=True) as f:
                _check_filters(f, target.dataset if target is not None else dataset, path)
                targets = link_targets(f)
        except OSError as err:
            if isinstance(err, UnreadableFile) or "ermission denied" not in str(err):
                raise
            raise UnreadableFile(
                f"this Tiled server's user cannot read {what} {path}. Fix: make the files "
                "readable by the user or group the server runs as (the IOC's FilePerms and "
                "FileOwnerGrp, or the share's permissions)") from err
        for target in targets:
            check(resolve_target(path, target.target, target.kind, path_map),
                  f"{target.kind} {target.link} of {path}", depth + 1, target)

    check(Path(master), "master file", 1)
    return missing


def _check_filters(file: h5py.File, name: str | None, path: Path) -> None:
    """Refuse frames stored in ``file`` itself at ``name`` that need a filter not here (a link
    or virtual dataset holds none: its targets are checked in their own files)."""
    if not name or not isinstance(file.get(name, getlink=True), h5py.HardLink):
        return
    node = file[name]
    if isinstance(node, h5py.Dataset) and not node.is_virtual and (lacking := missing_filters(node)):
        raise FilterUnavailable(
            f"{path}:{name} is stored with compression filter(s) {', '.join(lacking)}, which this "
            "Tiled server cannot decode. Fix: install hdf5plugin in the server's environment "
            "(pip install hdf5plugin; it registers bitshuffle/LZ4 and the other filters "
            "detectors use) and restart the server")


def _lost_sources(checked: Sequence[_CheckedFile], structure: Any) -> list[MissingTarget]:
    """The missing virtual sources that hold frames the run recorded. A DECTRIS master, written
    at arm, names a source for every frame the arm asked; a series stopped early never makes the
    last ones, which is no loss. (An external link may also name a data file a moment before it
    exists.) The files' frames are taken in order, as Tiled concatenates them."""
    shape = getattr(structure, "shape", None)
    if not shape or len(shape) < 3:
        return [m for file in checked for m in file.missing if m.target.kind == "virtual source"]
    recorded = math.prod(shape[:-2])  # frames (times images per point, or thresholds)
    lost, offset = [], 0
    for file in checked:
        lost += [m for m in file.missing if m.target.kind == "virtual source"
                 and offset + m.target.first_frame < recorded]
        offset += file.frames.shape[0] if file.frames is not None else 0
    return lost


def _storage_from_environment() -> tuple[Path, ...]:
    value = os.environ.get(READABLE_STORAGE_VARIABLE, "")
    return tuple(Path(item) for item in value.split(os.pathsep) if item)


def _data_files(data_source: Any) -> list[Path]:
    """The files a data source's frames are stacked from, in order (Tiled's rule: the
    ``data_uris`` assets, else the one asset)."""
    uris = [a.data_uri for a in data_source.assets
            if getattr(a, "parameter", None) == "data_uris"]
    return [path_from_uri(uri) for uri in uris or [data_source.assets[0].data_uri]]


@contextlib.contextmanager
def _open(path: str | Path, dataset: str | None, path_map: PathMap,
          **options: Any) -> Iterator[Any]:
    """Tiled's ``h5open`` with the server's path map applied to the dataset's link targets: a
    broken link raises Tiled's ``BrokenLink``, as there."""
    with h5py.File(path, "r", **options) as file:
        try:
            node = open_dataset(file, dataset, path_map) if dataset else file
        except KeyError as err:
            if "file" in str(err) or "component not found" in str(err):
                raise BrokenLink(err.args[0]) from err
            raise
        yield node


def _decoded_attrs(node: Any) -> dict[str, Any]:
    """A dataset's or group's HDF5 attributes as the adapter's metadata, bytes as text."""
    return {k: v.decode() if isinstance(v, bytes) else v
            for k, v in getattr(node, "attrs", {}).items()}


class _Frames:
    """A dataset of frames as dask sees an array: shape, dtype and chunks, read by slices on
    demand through ``_open``. A virtual dataset, which has no chunks, gets one block a frame
    (Tiled's one block for all its frames read the whole series for each frame)."""

    def __init__(self, path: str | Path, dataset: str | None, path_map: PathMap,
                 ds: h5py.Dataset, options: dict[str, Any]) -> None:
        self.path, self.dataset, self.path_map, self.options = path, dataset, path_map, options
        self.shape, self.dtype, self.ndim = ds.shape, ds.dtype, ds.ndim
        self.chunks = (1, *ds.shape[1:]) if ds.is_virtual else ds.chunks or ds.shape
        self.attrs = _decoded_attrs(ds)

    @classmethod
    def of(cls, path: str | Path, dataset: str | None, path_map: PathMap,
           **options: Any) -> _Frames | None:
        """The frames of ``dataset`` if it is an array of frames, else None (a scalar, an empty
        or an object-typed dataset: Tiled's own path serves those); one open."""
        with _open(path, dataset, path_map, **options) as ds:
            if not (isinstance(ds, h5py.Dataset) and ds.ndim and ds.shape[0]
                    and ds.dtype != np.dtype("O")):
                return None
            return cls(path, dataset, path_map, ds, options)

    def __getitem__(self, index: Any) -> Any:
        with _open(self.path, self.dataset, self.path_map, **self.options) as ds:
            return ds[index]


@dataclass(frozen=True)
class _CheckedFile:
    """A registered file as the adapter last found it: every path its check visited with that
    path's signature, its link targets missing here, and its frames (None: not an array of
    frames)."""

    visited: tuple[tuple[Path, Signature], ...]
    missing: tuple[MissingTarget, ...]
    frames: _Frames | None

    def current(self) -> bool:
        """Whether every path visited is still what it was (a few stat calls, no open)."""
        return all(signature(path) == was for path, was in self.visited)


CHECKED_FILES_KEPT = 4096  # a 4000-point FileWriter step scan's masters
_checked_files: OrderedDict[tuple[Any, ...], _CheckedFile] = OrderedDict()
_checked_files_lock = threading.Lock()


def _checked_file(path: Path, roots: tuple[Path, ...], path_map: PathMap, dataset: str,
                  options: dict[str, Any]) -> _CheckedFile:
    """``check_confined`` and ``_Frames.of`` for one registered file, found again only when a
    path the check visited has changed since (so each request of a many-file run stats its
    files, not opens them); refusals raise, as there, and are never kept: a missing link
    target that breaks the dataset is a 404 naming it."""
    key = (str(path), roots, path_map, dataset, tuple(sorted(options.items())))
    with _checked_files_lock:
        found = _checked_files.get(key)
    if found is not None and found.current():
        return found
    visited: dict[Path, Signature] = {}
    missing = tuple(check_confined(path, roots, path_map, dataset, visited))
    try:
        frames = _Frames.of(path, dataset, path_map, **options)
    except (BrokenLink, KeyError, OSError) as err:  # a link whose target is not here
        if missing:
            raise HTTPException(HTTP_404_NOT_FOUND, "; ".join(map(str, missing))) from err
        raise
    checked = _CheckedFile(tuple(visited.items()), missing, frames)
    with _checked_files_lock:
        _checked_files[key] = checked
        _checked_files.move_to_end(key)
        while len(_checked_files) > CHECKED_FILES_KEPT:
            _checked_files.popitem(last=False)
    return checked


class FramewiseHDF5ArrayAdapter(HDF5ArrayAdapter):
    """Tiled's HDF5 array adapter, with virtual datasets split one frame (leading index) a block,
    the frames a request asks for read straight from the files, and absolute link targets found
    through the server's path map."""

    _files: tuple[_Frames, ...] = ()  # for direct reads: each file's frames, in stacking order
    _within: tuple[Any, ...] = ()  # the parameters' slice, taken of each file's frames
    _frame_shape: tuple[int, ...] = ()  # one frame's shape, the slice taken
    _build: Callable[[], dask.array.Array] | None = None
    _dask: Any = None

    @property  # type: ignore[override]
    def _array(self) -> Any:
        """The files' frames as one dask array, built at the first read that needs it: a
        frame read straight from its file never does, nor opens the other files."""
        if self._dask is None and self._build is not None:
            self._dask, self._build = self._build(), None
        return self._dask

    @_array.setter
    def _array(self, value: Any) -> None:
        self._dask = value

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, dataset: str | None = None,
                     slice: Any = None, squeeze: bool = False, path_map: PathMap | None = None,
                     frames: Sequence[_Frames | None] | None = None,
                     **options: Any) -> HDF5ArrayAdapter:
        """As Tiled's, opening the files through ``path_map`` (default
        ``$ID3C_EIGER_PATH_MAP``), and serving only the frames the run recorded: a DECTRIS
        master, written at arm, reaches every frame the arm asked, and a series stopped early
        holds fewer. ``frames``: each file's, if already found (else each file is opened)."""
        path_map = PathMap.from_environment() if path_map is None else path_map
        options = {"swmr": SWMR_DEFAULT, "libver": "latest", "locking": None, **options}
        structure = data_source.structure
        files = _data_files(data_source)
        if frames is None:
            frames = [_Frames.of(path, dataset, path_map, **options) for path in files]
        shape = tuple(structure.shape)

        if isinstance(slice, str):
            slice = NDSlice.from_numpy_str(slice)

        def build() -> dask.array.Array:
            array = cls.lazy_load_hdf5_array(*files, dataset=dataset, path_map=path_map,
                                             frames=frames, **options)
            if (array.ndim == len(shape) and array.shape[1:] == shape[1:]
                    and array.shape[0] > shape[0]):
                array = array[: shape[0]]
            if slice:
                array = array[slice]
            return array.squeeze() if squeeze else array

        # Frames are read straight from their files when the parameters' slice keeps every
        # frame (a DECTRIS master's ":,0", its first threshold, is applied to each frame).
        within = tuple(slice or ())
        direct = (not squeeze and all(f is not None for f in frames)
                  and (not within or within[0] == builtins_slice(None))
                  and len({f.shape[1:] for f in frames}) == 1)  # type: ignore[union-attr]
        built = None if direct else build()
        dtypes = {f.dtype for f in frames} if direct else {built.dtype}  # type: ignore[union-attr]
        if dtypes != {structure.data_type.to_numpy_dtype()}:
            raise ValueError(f"Data type mismatch between array data and structure: "
                             f"{', '.join(map(str, dtypes))} != "
                             f"{structure.data_type.to_numpy_dtype()}")
        metadata = copy.deepcopy(node.metadata_)
        if frames[0] is not None:
            metadata.update(frames[0].attrs)
        else:
            with _open(files[0], dataset, path_map, **options) as ds:
                metadata.update(_decoded_attrs(ds))
        adapter = cls(built, structure, metadata=metadata, specs=node.specs)
        if direct:
            adapter._build = build
            adapter._files = tuple(frames)  # type: ignore[arg-type]
            adapter._within = (builtins_slice(None), *within[1:])
            one = frames[0]
            adapter._frame_shape = np.broadcast_to(np.zeros((), one.dtype),  # type: ignore[union-attr]
                                                   one.shape)[adapter._within].shape[1:]  # type: ignore[union-attr]
        return adapter

    def read(self, slice: Any = ...) -> Any:
        direct = self._read_frames(tuple(slice) if slice else ())
        return super().read(slice) if direct is None else direct

    def read_block(self, block: Any, slice: Any = ...) -> Any:
        direct = self._read_frames(tuple(block.slice_from_chunks(self._structure.chunks)))
        if direct is None:
            return super().read_block(block, slice)
        return direct[tuple(slice)] if slice else direct

    def _read_frames(self, index: tuple[Any, ...]) -> np.ndarray | None:
        """``index`` of the structure (a run's (points, frames per point, ...) over the files'
        frames), read with h5py from the frames it covers; None where Tiled's general path
        (dask, and its reshape over one block per frame: 70 ms for a 10 x 1000-frame run, where
        h5py reads a frame in 1) must serve it."""
        if not self._files:
            return None
        shape, frame = tuple(self._structure.shape), self._frame_shape
        lead = len(shape) - len(frame)  # structure axes over the files' frame axis
        if (lead < 1 or shape[lead:] != frame or len(index) > len(shape)
                or not all(isinstance(i, (int, np.integer, builtins_slice)) for i in index)):
            return None
        index = index + (builtins_slice(None),) * (len(shape) - len(index))
        wanted = np.arange(math.prod(shape[:lead])).reshape(shape[:lead])[index[:lead]]
        if wanted.size == 0:
            return None
        first, stop = int(wanted.min()), int(wanted.max()) + 1
        stack = self._stacked(first, stop)
        return stack[wanted - first][(Ellipsis, *index[lead:])]

    def _stacked(self, first: int, stop: int) -> np.ndarray:
        """Frames ``first`` to ``stop`` of the files, in stacking order; only the files holding
        them are opened."""
        parts, start = [], 0
        for frames in self._files:
            if start >= stop:
                break
            n = frames.shape[0]
            if start + n > first:
                part = frames[max(first - start, 0): min(stop - start, n)]
                parts.append(part[self._within] if len(self._within) > 1 else part)
            start += n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @staticmethod
    def lazy_load_hdf5_array(
        *file_paths: str | Path,
        dataset: str | None = None,
        swmr: bool = SWMR_DEFAULT,
        libver: str = "latest",
        locking: bool | str | None = None,
        path_map: PathMap | None = None,
        frames: Sequence[_Frames | None] | None = None,
    ) -> dask.array.Array:
        """The files' frames as one dask array (Tiled's signature, plus the path map and each
        file's frames if already found)."""
        path_map = PathMap.from_environment() if path_map is None else path_map
        options = {"swmr": swmr, "libver": libver, "locking": locking}
        if frames is None:
            frames = [_Frames.of(path, dataset, path_map, **options) for path in file_paths]
        arrays = []
        for path, found in zip(file_paths, frames, strict=True):
            if found is not None:
                arrays.append(dask.array.from_array(found, chunks=found.chunks, asarray=True,
                                                    lock=False))
            else:
                arrays.append(HDF5ArrayAdapter.lazy_load_hdf5_array(path, dataset=dataset,
                                                                    **options))
        return arrays[0] if len(arrays) == 1 else dask.array.concatenate(arrays, axis=0)


OPEN_OPTIONS = ("swmr", "libver", "locking")  # the parameters that say how files are opened


class FramewiseHDF5Adapter(HDF5Adapter):
    """Tiled's HDF5 adapter, serving arrays through ``FramewiseHDF5ArrayAdapter``, reading
    nothing outside ``readable_storage`` (this class's, or ``$ID3C_EIGER_READABLE_STORAGE``) and
    finding absolute link targets through ``path_map`` (this class's, or
    ``$ID3C_EIGER_PATH_MAP``)."""

    readable_storage: tuple[Path, ...] = ()
    path_map: PathMap | None = None

    @classmethod
    def configured(cls, roots: Iterable[str | Path],
                   path_map: PathMap | None = None) -> type[FramewiseHDF5Adapter]:
        """This adapter reading only under ``roots``, with ``path_map`` if given (else the
        environment's); what the embedded server and ``framewise_catalog`` use. A registered
        file outside ``roots`` is then a 403 naming it and the fix, in this process's Tiled
        (Tiled's own check is a bare 500, which clients retry for ~25 s)."""
        _refuse_outside_storage_with_403()
        return type(cls.__name__, (cls,), {"readable_storage": tuple(Path(r) for r in roots),
                                           "path_map": path_map})

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, dataset: str | list[str] = "/",
                     **kwargs: Any) -> Any:
        path_map = PathMap.from_environment() if cls.path_map is None else cls.path_map
        roots = cls.readable_storage or _storage_from_environment()
        if not roots:
            raise OutsideReadableStorage(
                "FramewiseHDF5Adapter does not know this server's readable storage, so it reads "
                f"nothing. Fix: set {READABLE_STORAGE_VARIABLE} to the readable_storage "
                "directories (separated by ':') in the Tiled server's environment")
        # Refusals are served as 4xx with the reason, so the client and the doctor see what
        # the server saw; a plain exception is a bare 500 that the client retries for ~25 s.
        if not isinstance(dataset, str):
            dataset = "/".join(dataset)
        options = {"swmr": SWMR_DEFAULT, "libver": "latest", "locking": None,
                   **{k: v for k, v in kwargs.items() if k in OPEN_OPTIONS}}
        checked: list[_CheckedFile] = []
        missing: list[MissingTarget] = []
        try:
            for path in _data_files(data_source):
                try:
                    checked.append(_checked_file(path, roots, path_map, dataset, options))
                except OutsideReadableStorage as err:
                    raise HTTPException(HTTP_403_FORBIDDEN, f"{err}") from err
                except (FilterUnavailable, UnreadableFile) as err:  # 422: retries cannot help
                    raise HTTPException(HTTP_422_UNPROCESSABLE_CONTENT, f"{err}") from err
                missing += checked[-1].missing
            lost = _lost_sources(checked, data_source.structure) if missing else []
            if lost:
                raise HTTPException(HTTP_404_NOT_FOUND, "; ".join(map(str, lost)))
            if data_source.structure_family == StructureFamily.array:
                return FramewiseHDF5ArrayAdapter.from_catalog(
                    data_source, node, dataset=dataset, path_map=path_map,
                    frames=[file.frames for file in checked], **kwargs)
            return HDF5Adapter.from_catalog(data_source, node, dataset=dataset, **kwargs)
        except (BrokenLink, KeyError, OSError) as err:  # tiled's BrokenLink: a dangling link
            if missing:
                raise HTTPException(HTTP_404_NOT_FOUND, "; ".join(map(str, missing))) from err
            raise


def framewise_catalog(uri: str, *, readable_storage: list[str],
                      path_map: dict[str, str] | None = None, **from_uri_args: Any) -> Any:
    """Tiled's SQL catalog (``tiled.catalog.from_uri``) serving HDF5 through
    ``FramewiseHDF5Adapter`` confined to ``readable_storage`` with ``path_map`` (write root:
    read root), and answering a registered file outside ``readable_storage`` with a 403 naming
    it and the fix (see ``FramewiseHDF5Adapter.configured``); FastAPI's dependency graphs are
    built once, not per request (``tiled_server_speed``)."""
    from tiled.catalog import from_uri

    reuse_dependency_graphs()  # this runs in the server's process, as its tree is built
    adapter = FramewiseHDF5Adapter.configured(readable_storage,
                                              PathMap.of((path_map or {}).items()))
    adapters = {**from_uri_args.pop("adapters_by_mimetype", {}), HDF5_MIMETYPE: adapter}
    return from_uri(uri, readable_storage=readable_storage, adapters_by_mimetype=adapters,
                    **from_uri_args)


def _refuse_outside_storage_with_403() -> None:
    """Wrap, once, the check Tiled's catalog nodes make of each registered file: its
    ``RuntimeError`` (served as 500) becomes a 403 with the fix. Tiled's nodes are its own
    classes, made per request, with no hook of their own."""
    from tiled.catalog.adapter import CatalogNodeAdapter

    check = CatalogNodeAdapter._ensure_uri_within_readable_storage
    if getattr(check, "refuses_with_403", False):
        return

    def refuse_with_403(self: Any, data_uri: str) -> None:
        try:
            check(self, data_uri)
        except RuntimeError as err:
            raise HTTPException(HTTP_403_FORBIDDEN, (
                f"{err} Fix: the run's files lie outside readable_storage in the Tiled "
                "server's configuration: add their read root there (id3c-eiger tiled-config "
                "takes them from the devices file's read_path_template), or record the run "
                "by a read path inside it")) from err

    refuse_with_403.refuses_with_403 = True  # type: ignore[attr-defined]
    CatalogNodeAdapter._ensure_uri_within_readable_storage = refuse_with_403
