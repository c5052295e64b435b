"""The doctor: walks the chain hop by hop and names the hop that fails, with the fix.

The chain is devices file -> IOC (PVs, write path) -> shared file system (read path) -> Tiled
(run, data source, readable storage) -> master file -> links -> data files -> frame. Each
``check_*`` yields ``Hop`` results in that order and stops at the first failure, since the hops
after it depend on it: the last line names the hop to fix. ``check_master_file`` needs no IOC
and no Tiled.
"""

from __future__ import annotations

import contextlib
import glob
import os
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import caproto
import h5py
import numpy as np
import tiled
from caproto import CaprotoNetworkError, CaprotoTimeoutError, ChannelType
from caproto.sync.client import read as ca_read
from caproto.sync.client import search as ca_search

from .catalog import (
    Catalog,
    CatalogError,
    find_run,
    imaging_detectors,
    master_files,
    open_catalog,
    run_images,
)
from .config import DevicesFileError, device_entry, device_names, find_devices_file
from .deploy import path_map_of
from .file_writer import FileSource, check_file_source
from .inspection import MasterFileError, inspect_master, open_master
from .layout import DATA_DATASET, DATA_FILE_INFIX, check_compression, frame_images, open_dataset
from .path_map import PATH_MAP_VARIABLE, PathMap
from .paths import PathTemplates, ReadPathError
from .tiled_adapter import FramewiseHDF5Adapter, framewise_catalog

# s for each PV the doctor reads: pyepics' connection timeout. With 2 s, CI's loaded host once
# took the IOC of a passing chain for a dead one.
CA_TIMEOUT = 5.0
FRAME_READ_BOUND = 2.0  # s: Tiled serving one 1 MB frame slower than this is broken, not slow
STREAM = "primary"  # the stream bp.count and fly_frames write the frames to
DEFAULT_DETECTOR = "eiger2"  # checked when neither --detector nor a run names one
DCU_PVS = ("cam1:FWState_RBV", "cam1:FWFree_RBV")  # the FileWriter source's own disk


@dataclass(frozen=True)
class FilePVs:
    """Where an IOC shows the directory, whether it can write there, its last file and why not:
    HDF1's records for the HDF5 plugin source, cam1's (downloads) for the FileWriter."""

    path: str
    exists: str
    last_file: str
    message: str

    @classmethod
    def of(cls, source: FileSource) -> FilePVs:
        """The records of ``source``."""
        if source is FileSource.FILE_WRITER:
            return cls("cam1:FilePath_RBV", "cam1:FilePathExists_RBV", "cam1:FullFileName_RBV",
                       "cam1:StatusMessage_RBV")
        return cls("HDF1:FilePath_RBV", "HDF1:FilePathExists_RBV", "HDF1:FullFileName_RBV",
                   "HDF1:WriteMessage")


_COLOURS = {True: "\033[32m", False: "\033[1;31m"}  # ANSI green, bold red


@dataclass(frozen=True)
class Hop:
    """One hop of the chain: PASS with what was seen, or FAIL with the fix."""

    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        detail = " ".join(self.detail.splitlines())  # one line a hop, whatever the error said
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {detail}"

    def for_terminal(self, width: int, colour: bool) -> str:
        """The hop wrapped to ``width`` columns (continuation lines indented under the name),
        PASS in green and FAIL in red with ``colour``."""
        lines = textwrap.wrap(str(self), width=width, subsequent_indent=" " * 6,
                              break_on_hyphens=False)  # (only words wider than a line break)
        if colour:
            word = lines[0][:4]
            lines[0] = f"{_COLOURS[self.passed]}{word}\033[0m{lines[0][4:]}"
        return "\n".join(lines)


@dataclass(frozen=True)
class DetectorSettings:
    """What the doctor needs of the detector's devices-file entry."""

    name: str
    prefix: str
    templates: PathTemplates
    file_source: FileSource = FileSource.HDF5_PLUGIN

    @property
    def pvs(self) -> FilePVs:
        """The records of its file source."""
        return FilePVs.of(self.file_source)

    @property
    def data_key(self) -> str:
        """The Bluesky data key of its frames."""
        return f"{self.name}_image"


def check_devices_entry(devices_file: str | os.PathLike[str], name: str
                        ) -> tuple[Hop, DetectorSettings | None]:
    """The devices-file hop: the entry exists, passes its class's signature, and its templates
    and compression follow the rules the device applies. Returns the settings when it passes."""
    try:
        class_path, kwargs = device_entry(devices_file, name)
        templates = PathTemplates(kwargs["write_path_template"], kwargs.get("read_path_template"))
        check_compression(kwargs.get("compression", "BSLZ4"))
        source = check_file_source(kwargs.get("file_source", FileSource.HDF5_PLUGIN.value))
    except (DevicesFileError, ValueError) as err:  # PathTemplateError is a ValueError
        return Hop("devices file", False, f"{devices_file}: {name}: {err}"), None
    except KeyError as err:
        return Hop("devices file", False, f"{devices_file}: {name} has no {err} key; give the "
                   "directory the IOC writes to, e.g. write_path_template: /data/%Y/%m/%d/"), None
    settings = DetectorSettings(name, kwargs["prefix"], templates, source)
    read = templates.read or templates.write
    where = (f"writes and reads {read!r}" if read == templates.write
             else f"writes {templates.write!r}, read as {read!r}")
    return Hop("devices file", True, f"{name} is {class_path}, prefix {settings.prefix!r}, "
               f"{where}, files by {source.value}"), settings


class _Unanswered(Exception):
    """A PV the doctor could not read: ``server`` is who answered its search (None: nobody)."""

    def __init__(self, pv: str, server: tuple[str, int] | None, cause: str = "") -> None:
        super().__init__(pv)
        self.pv, self.server, self.cause = pv, server, cause


def _ca_text(pv: str, timeout: float) -> str:
    """A PV's value as text (enum strings as named, CHAR waveforms decoded). Searches first, so
    that a failure tells an unanswered search (UDP) from an unanswered read (TCP)."""
    udp = caproto.bcast_socket()
    try:
        udp.bind(("", 0))
        server = ca_search(pv, udp, timeout)
    except CaprotoTimeoutError:
        raise _Unanswered(pv, None) from None
    except CaprotoNetworkError as err:  # an address of EPICS_CA_ADDR_LIST cannot be sent to
        raise _Unanswered(pv, None, str(err)) from None
    finally:
        udp.close()
    try:
        response = ca_read(pv, timeout=timeout, repeater=False)
    except (CaprotoTimeoutError, OSError) as err:
        raise _Unanswered(pv, server, str(err) or type(err).__name__) from None
    if response.data_type == ChannelType.CHAR:
        return bytes(bytearray(response.data)).split(b"\0")[0].decode(errors="replace")
    value = response.data[0] if len(response.data) else ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _unanswered_hop(failed: _Unanswered, prefix: str, first: bool, timeout: float) -> Hop:
    """The FAIL of the IOC hop, by what did not answer: nobody (the IOC is down or not reached,
    or the search could not be sent), the IOC about one of its PVs (not an ADEiger IOC), or its
    TCP circuit (firewall, hung)."""
    if failed.server is not None:
        host, port = failed.server
        return Hop("IOC answers", False,
                   f"the IOC at {host}:{port} answered the search for {failed.pv} but not the "
                   f"read in {timeout:g} s ({failed.cause}). Fix: let TCP through to "
                   f"{host}:{port} (a firewall that passes CA's UDP search but not its TCP "
                   "circuit does this), or restart the IOC if it hangs")
    addresses = os.environ.get("EPICS_CA_ADDR_LIST", "(unset: broadcast)")
    if failed.cause:  # the search was not sent
        return Hop("IOC answers", False,
                   f"the search for {failed.pv} could not be sent: {failed.cause} "
                   f"(EPICS_CA_ADDR_LIST {addresses}). Fix: set EPICS_CA_ADDR_LIST to the IOC "
                   "host's address (port 5064 unless the IOC says otherwise)")
    if first:
        return Hop("IOC answers", False,
                   f"no answer from {failed.pv} in {timeout:g} s (EPICS_CA_ADDR_LIST "
                   f"{addresses}). Fix: start the IOC, check prefix {prefix!r} in the devices "
                   "file, or set EPICS_CA_ADDR_LIST to reach the IOC host")
    return Hop("IOC answers", False,
               f"{prefix} answers, but no IOC answered the search for {failed.pv} in "
               f"{timeout:g} s: {prefix!r} is not an ADEiger IOC, or it stopped answering. Fix: "
               f"point prefix {prefix!r} at the ADEiger IOC (an EIGER2 with ADCore's HDF1 "
               "plugin and, for file_source file_writer, its FileWriter records), or run the "
               "doctor again if the IOC was busy")


def check_ioc(settings: DetectorSettings, timeout: float = CA_TIMEOUT
              ) -> tuple[list[Hop], dict[str, str]]:
    """The IOC hops: the PVs answer, ``FilePath_RBV`` is the write template expanded, the IOC
    can write there, and (FileWriter source) the DCU's FileWriter is not in error. Returns the
    hops (up to the first FAIL) and the values read."""
    values: dict[str, str] = {}
    prefix, pvs = settings.prefix, settings.pvs
    by_dcu = settings.file_source is FileSource.FILE_WRITER
    for suffix in ("cam1:Model_RBV", pvs.path, pvs.exists, pvs.last_file, pvs.message,
                   *(DCU_PVS if by_dcu else ())):
        try:
            values[suffix] = _ca_text(prefix + suffix, timeout)
        except _Unanswered as failed:
            return [_unanswered_hop(failed, prefix, not values, timeout)], values
    writer = "DCU FileWriter" if by_dcu else "HDF5 plugin"
    hops = [Hop("IOC answers", True, f"{prefix} serves a {values['cam1:Model_RBV']} with its "
                f"{writer}")]
    if by_dcu:
        state, free = values["cam1:FWState_RBV"], float(values["cam1:FWFree_RBV"] or 0)
        if state == "error" or free <= 0:
            hops.append(Hop("DCU FileWriter", False,
                            f"{prefix}cam1:FWState_RBV is {state!r} with {free:.3g} GB free on "
                            f"the detector's disk (FWFree_RBV); it says "
                            f"{values[pvs.message]!r}. Fix: free the DCU's disk (FWAutoRemove "
                            "Enable deletes what the IOC downloaded), then run again"))
            return hops, values
        hops.append(Hop("DCU FileWriter", True, f"FWState_RBV {state!r}, {free:.3g} GB free"))
    file_path, template = values[pvs.path], settings.templates.write
    if not file_path:
        hops.append(Hop("write path", False,
                        f"{prefix}{pvs.path} is empty: the IOC has not been given a "
                        f"directory yet. Fix: run one acquisition (staging puts {template!r}), "
                        "then run the doctor again"))
        return hops, values
    when = settings.templates.when_written(file_path)
    if when is None:
        hops.append(Hop("write path", False,
                        f"the IOC writes to {file_path!r}, which write_path_template {template!r} "
                        "cannot produce: another client pointed the plugin elsewhere, or the "
                        "template is not the IOC host's view. Fix: set write_path_template to "
                        "the directory as the IOC host mounts it"))
        return hops, values
    hops.append(Hop("write path", True,
                    f"FilePath_RBV {file_path!r} is write_path_template {template!r} "
                    f"for {when:%Y-%m-%d}"))
    if values[pvs.exists] != "Yes":
        message = values[pvs.message] or "FilePathExists_RBV is No"
        hops.append(Hop("IOC can write", False,
                        f"the IOC cannot write to {file_path!r}; IOC says: {message}. Fix: create "
                        "that directory on the IOC host with write access for the IOC's user, "
                        "or raise create_directory_depth so the IOC creates it"))
        return hops, values
    hops.append(Hop("IOC can write", True, f"FilePathExists_RBV is Yes for {file_path!r}"))
    return hops, values


def check_read_path(settings: DetectorSettings, ioc_values: dict[str, str]) -> Hop:
    """The read-path hop: the directory the IOC writes, as this host reads it, exists and is
    readable, and shows the IOC's last file."""
    file_path = ioc_values.get(settings.pvs.path, "")
    when = settings.templates.when_written(file_path) if file_path else None
    paths = settings.templates.expand(when)  # now, when the IOC's directory is not known
    try:
        paths.check_readable()
    except ReadPathError as err:
        return Hop("read path", False, str(err))
    last = ioc_values.get(settings.pvs.last_file, "")
    if when is None or not last.startswith(paths.write):
        return Hop("read path", True, f"{paths.read!r} exists and is readable here")
    seen_here = Path(paths.read) / last[len(paths.write):]
    series = seen_here.name.partition(DATA_FILE_INFIX)[0]  # a DCU data file's series stem
    kin = next(seen_here.parent.glob(f"{glob.escape(series)}*"), None) if series else None
    if not seen_here.exists() and kin is not None:  # the directory is right; the file is gone
        return Hop("read path", True,
                   f"the IOC's last series is here ({str(kin)!r}), but not its last file "
                   f"{seen_here.name!r}: see the links of its master")
    if not seen_here.exists():
        return Hop("read path", False,
                   f"{paths.read!r} exists here but does not show the IOC's last file {last!r} "
                   f"(looked for {str(seen_here)!r}): the read and write templates name "
                   "different directories. Fix: set read_path_template to where this host "
                   f"mounts the IOC's {paths.write!r}")
    here = "is here" if str(seen_here) == last else f"is here as {str(seen_here)!r}"
    return Hop("read path", True, f"the IOC's last file {last!r} {here}")


def _outside(path: Path, storage: list[Path]) -> bool:
    return not any(os.path.commonpath([root, path]) == str(root) for root in storage)


def check_tiled(catalog: Catalog, data_key: str, run: str | int = -1,
                path_map: PathMap | None = None) -> Iterator[Hop]:
    """The Tiled hops: the server answers, the run is there, has the frames, points at master
    files that exist here inside Tiled's readable storage, whose links resolve (absolute ones
    also through ``path_map``, default ``$ID3C_EIGER_PATH_MAP``), and Tiled's frame 0 is the
    file's."""
    yield Hop("Tiled answers", True, f"{catalog.address} holds {len(catalog.runs)} run(s)")
    try:
        node = find_run(catalog, run)
    except CatalogError as err:
        yield Hop("run in Tiled", False, str(err))
        return
    start = node.metadata.get("start", {})
    yield Hop("run in Tiled", True, f"run {start.get('uid')} (scan {start.get('scan_id', '?')}, "
              f"plan {start.get('plan_name', '?')}) at {catalog.address}")
    try:
        images = run_images(node, STREAM, data_key)
    except CatalogError as err:
        yield Hop("frames in the run", False, str(err))
        return
    yield Hop("frames in the run", True, f"{STREAM}/{data_key} has shape {images.shape}, "
              f"{images.dtype}")
    masters = master_files(images)
    missing = [m for m in masters if not m.exists()]
    outside = [m for m in masters if catalog.readable_storage is not None
               and _outside(m, catalog.readable_storage)]
    if not masters or missing:
        yield Hop("data source", False,
                  f"the run's data source {', '.join(map(str, missing)) or '(none)'} does not "
                  "exist on this host. Fix: mount the share here at the read path the devices "
                  "file names (the path recorded in the run), or run the doctor on the Tiled host")
        return
    if outside:
        roots = ", ".join(map(str, catalog.readable_storage or []))
        yield Hop("data source", False,
                  f"{outside[0]} lies outside Tiled's readable storage ({roots}), so Tiled "
                  "refuses to serve it. Fix: add the read path's root to the server's "
                  "readable_storage (tiled serve ... -r DIR, or open_catalog(readable_storage=...))")
        return
    where = "inside readable storage" if catalog.readable_storage is not None else "here"
    yield Hop("data source", True, f"{len(masters)} master file(s) {where}: {masters[0]}")
    hops = list(check_master_file(masters[0], path_map))
    yield from hops
    if not all(hop.passed for hop in hops):
        return
    if len(masters) > 1:  # a master per arm (each point of a FileWriter step scan): one line
        for master in masters[1:]:
            failed = next((hop for hop in check_master_file(master, path_map)
                           if not hop.passed), None)
            if failed is not None:
                yield Hop(failed.name, False, f"{master.name}: {failed.detail}")
                return
        yield Hop("other masters", True, f"the run's {len(masters) - 1} other master file(s) "
                  "pass the same checks")
    yield _compare_frame_0(images, masters[0], catalog.server is not None, path_map)


def check_runs(catalog: Catalog, count: int, detector: str | None = None) -> Iterator[Hop]:
    """The last ``count`` runs, one hop each (the nightly check that nothing recorded became
    unreadable): every Tiled hop for each detector's images, summed up as PASS, or the first
    FAIL with its fix. ``detector``: only that one, else every detector the run recorded."""
    if count < 1:
        raise ValueError(f"--runs {count}: give the number of latest runs to check, at least 1")
    for uid in catalog.runs.keys()[-1:-count - 1:-1]:  # the latest first
        run = catalog.runs[uid]
        start = run.metadata.get("start", {})
        label = f"run {uid[:8]} (scan {start.get('scan_id', '?')})"
        names = [detector] if detector else imaging_detectors(run, STREAM)
        if not names:
            yield Hop(label, True, f"no detector images in {STREAM}: nothing to read")
            continue
        for name in names:
            hops = list(check_tiled(catalog, f"{name}_image", uid))
            failed = next((hop for hop in hops if not hop.passed), None)
            if failed is not None:
                yield Hop(label, False, f"{name}: {failed.name}: {failed.detail}")
            else:
                images = run[STREAM][f"{name}_image"]
                yield Hop(label, True, f"{name}_image {images.shape} {images.dtype}; Tiled's "
                          f"frame 0 is the file's ({len(hops)} hops pass)")


def _compare_frame_0(images: Any, master: Path, embedded: bool,
                     path_map: PathMap | None) -> Hop:
    """Tiled's frame 0 against the first master file's frame 0, read here with h5py, served
    within ``FRAME_READ_BOUND``; for a server not embedded here, the read cost of a virtual
    dataset is named."""
    started = time.monotonic()
    try:
        served = np.asarray(images[0])
    except Exception as err:  # the server's refusal arrives as any of httpx's or tiled's errors
        return Hop("Tiled frame 0", False,
                   f"Tiled cannot serve frame 0 ({type(err).__name__}: {err}). Fix: the Tiled "
                   "server must read the master and its data files at the recorded paths, "
                   "inside its readable_storage, with hdf5plugin installed; see its error.log")
    with open_master(master) as f:
        data = open_dataset(f, DATA_DATASET, path_map)
        local, virtual = frame_images(data, 0), data.is_virtual
    if served.shape != local.shape or not np.array_equal(served, local):
        return Hop("Tiled frame 0", False,
                   f"Tiled's frame 0 ({served.shape}) differs from {master}'s frame 0 "
                   f"({local.shape}): Tiled reads another file at that path. Fix: make the Tiled "
                   "host mount the same share at the read path")
    # Tiled's stock HDF5 adapter makes one read block per HDF5 chunk, and a virtual dataset has
    # none; the embedded server reads it frame by frame, a remote one only if configured to.
    stock = (f"Tiled {tiled.__version__}'s own HDF5 adapter reads all {len(images)} frames for "
             "each slice of a virtual dataset unless the server's tree is "
             f"{framewise_catalog.__module__}:{framewise_catalog.__name__} (id3c-eiger "
             f"tiled-config writes it) or its adapters_by_mimetype names "
             f"{FramewiseHDF5Adapter.__module__}:{FramewiseHDF5Adapter.__name__}")
    took = time.monotonic() - started
    if took > FRAME_READ_BOUND:
        why = (f"the frames are a virtual dataset, and {stock}" if virtual else
               "check the server's load and how fast its host reads the share")
        return Hop("Tiled frame 0", False,
                   f"Tiled took {took:.1f} s to serve frame 0 of {master.name}, over the "
                   f"{FRAME_READ_BOUND:.0f} s a frame should take. Fix: {why}")
    cost = f"; the frames are a virtual dataset: {stock}" if virtual and not embedded else ""
    return Hop("Tiled frame 0", True,
               f"Tiled serves frame 0 {served.shape} in {took:.2f} s, equal to "
               f"{master.name}'s{cost}")


def check_master_file(path: str | os.PathLike[str],
                      path_map: PathMap | None = None) -> Iterator[Hop]:
    """The file hops of one master file (opens as a master, links resolve, a frame decodes);
    stops at the first failure. Absolute link targets are also looked for through
    ``path_map`` (default ``$ID3C_EIGER_PATH_MAP``)."""
    try:
        report = inspect_master(path, path_map)
    except MasterFileError as err:
        yield Hop("master file", False, str(err))
        return
    per_trigger = report.metadata.get("nimages", "?")
    triggers = report.metadata.get("ntrigger", "?")
    if report.single_file:
        yield Hop("master file", True, f"{path} is an HDF1 (NDFileHDF5) file of {per_trigger} "
                                       "frames")
    else:
        yield Hop("master file", True, f"{path} is an EIGER master ({per_trigger} images per "
                                       f"trigger x {triggers} triggers)")
    broken = [link for link in report.links if link.status != "OK"]
    if broken:
        for link in broken:
            target = link.target
            hint = ""
            if link.status == "missing file" and os.path.isabs(target.target):
                hint = (" The link holds an absolute path, as the writing host saw it: mount the "
                        "data there, or map that host's root to where the share is here "
                        f"({PATH_MAP_VARIABLE}=WRITE_ROOT=READ_ROOT, or the device's "
                        "write_path_template and read_path_template in the devices file), or "
                        "set HDF5_EXT_PREFIX / HDF5_VDS_PREFIX to the directory where the files "
                        "are here.")
            elif link.status == "missing file" and target.kind == "virtual source":
                hint = (" Readers get zeros, not an error, for the frames of a missing virtual "
                        "source: restore the file before trusting those frames.")
            yield Hop("links", False,
                      f"{target.link} ({target.kind}) -> {target.target!r}: {link.status}: "
                      f"{link.detail}.{hint}")
        return
    yield Hop("links", True, "none: the frames are in the file" if report.single_file else
              f"{len(report.links)} link(s) resolve and their filters are here")
    try:
        with open_master(path) as master:
            shape = frame_images(open_dataset(master, DATA_DATASET, path_map), 0).shape
    except (OSError, ValueError, IndexError) as err:
        yield Hop("frame decodes", False,
                  f"frame 0 of {path} cannot be read: {err}. Fix: install hdf5plugin and import "
                  "it before reading (it registers the bitshuffle/LZ4 filters)")
        return
    yield Hop("frame decodes", True, f"frame 0 reads as {shape} with h5py {h5py.__version__}")


def check_chain(
    devices_file: str | os.PathLike[str] | None = None,
    *,
    detector: str | None = None,
    catalog: Catalog | None = None,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    run: str | int = -1,
    ca_timeout: float = CA_TIMEOUT,
) -> Iterator[Hop]:
    """Every hop from the devices file to Tiled's frame 0, up to the first that fails. The Tiled
    hops run when ``catalog`` (an open ``Catalog``) or ``tiled_uri`` is given, for ``run`` (a
    uid, a scan id, or -1 for the latest). Without ``detector``, the run's detector that the
    devices file names (else ``DEFAULT_DETECTOR``). ``devices_file``: see
    ``config.find_devices_file``."""
    devices_file = find_devices_file(devices_file)
    with contextlib.ExitStack() as stack:
        tiled_error: CatalogError | None = None
        if catalog is None and tiled_uri is not None:
            try:
                catalog = stack.enter_context(open_catalog(tiled_uri, api_key=api_key))
            except CatalogError as err:
                tiled_error = err
        if detector is None:
            detector = _detector_of_run(catalog, run, devices_file) or DEFAULT_DETECTOR
        entry_hop, settings = check_devices_entry(devices_file, detector)
        yield entry_hop
        if settings is None:
            return
        ioc_hops, values = check_ioc(settings, ca_timeout)
        yield from ioc_hops
        if not ioc_hops[-1].passed:
            return
        read_hop = check_read_path(settings, values)
        yield read_hop
        if not read_hop.passed:
            return
        if tiled_error is not None:
            yield Hop("Tiled answers", False, str(tiled_error))
        elif catalog is not None:
            path_map = path_map_of(devices_file) | PathMap.from_environment()
            yield from check_tiled(catalog, settings.data_key, run, path_map)


def _detector_of_run(catalog: Catalog | None, run: str | int,
                     devices_file: str | os.PathLike[str]) -> str | None:
    """The first detector of ``run`` with frames that the devices file names; None when there
    is no catalog, run or such detector (the hops then name what is missing)."""
    if catalog is None:
        return None
    try:
        recorded = imaging_detectors(find_run(catalog, run), STREAM)
        named = device_names(devices_file)
    except (CatalogError, DevicesFileError):
        return None
    return next((name for name in recorded if name in named), None)
