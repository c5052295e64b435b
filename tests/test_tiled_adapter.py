"""The embedded Tiled server's HDF5 adapter: a multi-file master (virtual dataset) is served
frame by frame, with every frame equal to the files', and a slice reads only its frames."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from starlette.exceptions import HTTPException
from tiled.client.utils import ClientError

from helpers import (
    CLASSIC,
    expected_frames,
    fly_through_file_writer,
    load_eiger2,
    master_frames,
)
from id3c_eiger import tiled_adapter
from id3c_eiger.catalog import UnresolvedLinkError, master_files, response_encoding
from id3c_eiger.layout import DATA_DATASET, data_file_name


def test_frames_across_data_files_through_tiled_equal_the_files(tmp_path, sim, RE, catalog,
                                                                monkeypatch) -> None:
    # a fly scan through the FileWriter: one series over three data files, a virtual dataset
    uid = fly_through_file_writer(tmp_path, sim, RE, f"{sim.directory}/vds/", 2500)
    images = catalog.runs[uid].primary["eiger2_image"]
    (master,) = master_files(images)
    with h5py.File(master, "r") as f:
        assert f[DATA_DATASET].is_virtual
    on_disk = master_frames(master)
    np.testing.assert_array_equal(images[0:5], on_disk[:5])
    np.testing.assert_array_equal(images[998:1002], on_disk[998:1002])  # across a file's end
    np.testing.assert_array_equal(images[3], expected_frames(master, range(3, 4))[0])
    # The adapter reads the frames a slice asks for, not the series.
    reads = []
    original = tiled_adapter._Frames.__getitem__

    def spy(self, index):
        reads.append(index)
        return original(self, index)

    monkeypatch.setattr(tiled_adapter._Frames, "__getitem__", spy)
    array = tiled_adapter.FramewiseHDF5ArrayAdapter.lazy_load_hdf5_array(
        master, dataset=DATA_DATASET, swmr=True)
    assert array.numblocks[0] == 2500
    np.testing.assert_array_equal(array[3, 0].compute(), on_disk[3])  # (thresholds, y, x)
    frames_read = set()
    for index in reads:  # dask also probes with an empty slice for the dtype
        first = index[0]
        frames_read |= {first} if isinstance(first, int) else set(range(*first.indices(2500)))
    assert frames_read == {3}


def test_a_frame_of_a_run_of_many_files_reads_only_its_own_file(tmp_path, sim, RE, catalog,
                                                                 monkeypatch) -> None:
    """A FileWriter step scan is a master (and a data file) a point: once the server has found
    each file's frames, a frame's request opens its own file only, so frame 0 of a long scan
    costs what it costs in a short one."""
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/many/",
                         file_source="file_writer")
    (uid,) = RE(bp.count([eiger2], num=4))
    images = catalog.runs[uid].primary["eiger2_image"]
    masters = master_files(images)
    assert len(masters) == 4
    np.testing.assert_array_equal(images[0], master_frames(masters[0])[0])  # found and kept
    found, read = [], []
    of, getitem = tiled_adapter._Frames.of.__func__, tiled_adapter._Frames.__getitem__
    monkeypatch.setattr(tiled_adapter._Frames, "of", classmethod(
        lambda cls, path, *args, **kwargs: found.append(path) or of(cls, path, *args, **kwargs)))
    monkeypatch.setattr(tiled_adapter._Frames, "__getitem__",
                        lambda self, index: read.append(Path(self.path)) or getitem(self, index))
    np.testing.assert_array_equal(images[2], master_frames(masters[2])[0])
    assert found == [] and read == [masters[2]]
    np.testing.assert_array_equal(images[1:3], np.concatenate([master_frames(m)
                                                               for m in masters[1:3]]))
    assert found == [] and read == [masters[2], masters[1], masters[2]]


@pytest.mark.parametrize(("uri", "encoding"), [
    ("http://127.0.0.1:8000/api/v1", "identity"), ("http://localhost:8000", "identity"),
    ("http://[::1]:8000", "identity"), ("http://tiled.3idc.aps.anl.gov:8000", None),
    ("http://10.54.3.12:8000", None)])
def test_frames_from_a_server_on_this_host_come_uncompressed(uri, encoding) -> None:
    """Compressing a frame costs more than sending it where no wire is crossed; over a network
    Tiled's own choice (blosc2, 8x smaller for the simulator's frames) stays."""
    assert response_encoding(uri).get("accept-encoding") == encoding


def test_the_embedded_servers_frames_arrive_uncompressed_and_whole(tmp_path, sim, RE,
                                                                  catalog) -> None:
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/identity/")
    (uid,) = RE(bp.count([eiger2], num=2))
    images = catalog.runs[uid].primary["eiger2_image"]
    responses: list = []
    hooks = images.context.http_client.event_hooks["response"]
    hooks.append(responses.append)
    try:
        frame = images[1]
    finally:
        hooks.remove(responses.append)
    (response,) = responses
    assert response.request.headers["accept-encoding"] == "identity"
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == frame.nbytes
    (master,) = master_files(images)
    np.testing.assert_array_equal(frame, expected_frames(master, range(1, 2))[0])


def test_a_deployed_server_names_the_adapter_in_its_configuration(tmp_path) -> None:
    """The README's config form: tiled's catalog imports the adapter from its dotted name."""
    from tiled.catalog import from_uri

    catalog = from_uri(f"sqlite:///{tmp_path / 'catalog.db'}", init_if_not_exists=True,
                       readable_storage=[str(tmp_path)],
                       adapters_by_mimetype={tiled_adapter.HDF5_MIMETYPE:
                                             "id3c_eiger.tiled_adapter:FramewiseHDF5Adapter"})
    adapter = catalog.context.adapters_by_mimetype[tiled_adapter.HDF5_MIMETYPE]
    assert adapter is tiled_adapter.FramewiseHDF5Adapter


def _series_outside(tmp_path, sim, RE, catalog) -> tuple[object, Path, Path]:
    """A one-point run read through Tiled, then its master and data file (Tiled's view)."""
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/confined/",
                         file_source="file_writer")
    (uid,) = RE(bp.count([eiger2], num=1))
    images = catalog.runs[uid].primary["eiger2_image"]
    (master,) = master_files(images)
    (data_file,) = master.parent.glob(f"{master.stem.removesuffix('_master')}_data_*.h5")
    return images, master, data_file


def test_a_link_target_swapped_for_a_symlink_outside_is_refused(tmp_path, sim, RE, catalog,
                                                                caplog) -> None:
    images, master, data_file = _series_outside(tmp_path, sim, RE, catalog)
    # read once: the server now keeps its check of these files, which the swap must undo
    np.testing.assert_array_equal(images[0], master_frames(master)[0])
    outside = tmp_path / "outside-storage"
    outside.mkdir()
    moved = outside / data_file.name
    shutil.move(data_file, moved)
    data_file.symlink_to(moved)  # inside by name, outside in fact
    with pytest.raises(ClientError) as refused:  # a 403 with the reason: not retried, not bare
        images[0]
    message = str(refused.value)
    assert "403" in message and "refusing to read external link /entry/data/data" in message
    assert f"really {moved}" in message and "readable_storage" in message


def test_a_run_recorded_outside_the_embedded_servers_storage_is_a_403_with_the_fix(
        tmp_path, sim, RE, catalog) -> None:
    """The read path is a mount of the IOC's directory the server was not told of: the frame
    read is refused at once with the reason, as by the deployed server (Tiled's own check is a
    bare 500, retried)."""
    mount = tmp_path / "unlisted-mount"
    mount.symlink_to(sim.directory, target_is_directory=True)
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/", f"{mount}/")
    (uid,) = RE(bp.count([eiger2], num=1))
    images = catalog.runs[uid].primary["eiger2_image"]
    assert images.shape == (1, 512, 1028)  # recorded whole; only its file is out of reach
    with pytest.raises(ClientError) as refused:
        images[0]
    message = str(refused.value)
    assert "403" in message and str(mount) in message
    assert "outside the readable storage" in message and "Fix:" in message


@pytest.mark.parametrize("files_per_series", [1, 2])
def test_a_data_file_missing_on_the_server_is_named_as_it_resolved_there(
        tmp_path, sim, RE, catalog, files_per_series) -> None:
    """One data file (external link: a step scan's point) or two (virtual dataset: a fly scan
    of 1500 frames), the last one gone: the client gets a 404 naming the target as written and
    as the server resolved it, never zeros."""
    if files_per_series == 1:
        eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/gone/",
                             file_source="file_writer")
        (uid,) = RE(bp.count([eiger2], num=1))
    else:
        uid = fly_through_file_writer(tmp_path, sim, RE, f"{sim.directory}/gone/", 1500)
    images = catalog.runs[uid].primary["eiger2_image"]
    (master,) = master_files(images)
    gone = master.parent / data_file_name(master, files_per_series)
    gone.unlink()
    with pytest.raises(UnresolvedLinkError) as refused:
        images[0]
    message = str(refused.value)
    assert message.startswith(f"the Tiled server cannot read frames of master file {master}")
    assert f"{gone.name!r} (as written)" in message
    assert f"resolves on this server to {gone}" in message and "HDF5_EXT_PREFIX" in message
    assert ("would read as zeros" in message) == (files_per_series == 2)


@pytest.mark.parametrize("escape", ["dotdot", "symlinked-master", "fifo-target"])
def test_the_adapter_reads_nothing_outside_its_storage(tmp_path, sim, RE, catalog, data_root,
                                                       escape) -> None:
    _, master, data_file = _series_outside(tmp_path, sim, RE, catalog)
    outside = tmp_path / "outside-storage"
    outside.mkdir()
    if escape == "dotdot":
        shutil.copy(master, outside / master.name)
        registered = Path(f"{data_root}/../{tmp_path.name}/{outside.name}/{master.name}")
        rule = "outside this server's readable storage"
    elif escape == "symlinked-master":
        shutil.copy(master, outside / master.name)
        registered = master.parent / "evil_master.h5"
        registered.symlink_to(outside / master.name)
        rule = "outside this server's readable storage"
    else:
        data_file.unlink()
        os.mkfifo(data_file)  # a reader opening it would block forever
        registered = master
        rule = "not a regular file"
    adapter = catalog.server.catalog.context.adapters_by_mimetype[tiled_adapter.HDF5_MIMETYPE]
    source = SimpleNamespace(assets=[SimpleNamespace(data_uri=f"file://localhost{registered}")],
                             structure_family="array")
    with pytest.raises(HTTPException, match=rule) as refused:  # served as 403 with the reason
        adapter.from_catalog(source, None, dataset=DATA_DATASET)
    assert refused.value.status_code == 403
    assert isinstance(refused.value.__cause__, tiled_adapter.OutsideReadableStorage)


def test_frames_stored_with_a_filter_the_server_lacks_are_named_at_once(tmp_path, sim, RE,
                                                                       catalog) -> None:
    """The server refuses with the filter and the fix (422: a 5xx would be retried for ~25 s),
    rather than failing deep inside libhdf5 at the read."""
    images, _, data_file = _series_outside(tmp_path, sim, RE, catalog)
    images[0]  # read once, so the server's kept check of the file must notice the rewrite
    unknown = 32999  # a filter id nothing here registers
    assert not h5py.h5z.filter_avail(unknown)
    with h5py.File(data_file, "r+") as f:  # the same frames, stored by a filter not on the server
        frames = f[DATA_DATASET]
        chunks = [frames.id.read_direct_chunk((i,) + (0,) * (frames.ndim - 1))[1]
                  for i in range(frames.shape[0])]
        shape, dtype, chunk_shape = frames.shape, frames.dtype, frames.chunks
        attrs = dict(frames.attrs)
        del f[DATA_DATASET]
        stored = f.create_dataset(DATA_DATASET, shape, dtype, chunks=chunk_shape,
                                  compression=unknown, allow_unknown_filter=True)
        for i, chunk in enumerate(chunks):
            stored.id.write_direct_chunk((i,) + (0,) * (len(shape) - 1), chunk)
        stored.attrs.update(attrs)
    started = time.monotonic()
    with pytest.raises(ClientError, match="422") as refused:
        images[0]
    assert time.monotonic() - started < 20, "retried: not refused as a client error"
    assert f"{data_file}:{DATA_DATASET}" in str(refused.value)
    assert str(unknown) in str(refused.value) and "hdf5plugin" in str(refused.value)


def test_a_data_file_cut_short_is_named_by_the_server_at_once(tmp_path, sim, RE, catalog) -> None:
    """A copy that did not finish: the server names the file and the fix (422) rather than
    retrying libhdf5's SWMR open of it for ever."""
    images, _, data_file = _series_outside(tmp_path, sim, RE, catalog)
    images[0]  # read once, so the server's kept check of the file must notice the cut
    with open(data_file, "r+b") as f:
        f.truncate(data_file.stat().st_size // 2)
    started = time.monotonic()
    with pytest.raises(ClientError, match="422") as refused:
        images[0]
    assert time.monotonic() - started < 20, "retried: not refused as a client error"
    assert str(data_file) in str(refused.value) and "cut short" in str(refused.value)


def test_a_server_not_told_its_storage_reads_nothing(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(tiled_adapter.READABLE_STORAGE_VARIABLE, raising=False)
    source = SimpleNamespace(assets=[SimpleNamespace(data_uri=f"file://localhost{tmp_path}/a.h5")],
                             structure_family="array")
    with pytest.raises(tiled_adapter.OutsideReadableStorage, match="ID3C_EIGER_READABLE_STORAGE"):
        tiled_adapter.FramewiseHDF5Adapter.from_catalog(source, None, dataset=DATA_DATASET)


def test_the_tiled_host_imports_the_adapter_without_the_beamline_stack() -> None:
    """A Tiled server loads the adapter with tiled, h5py and hdf5plugin: importing it pulls in no
    ophyd, bluesky, caproto or plotting (the server host needs none of them)."""
    probe = ("import sys, id3c_eiger.tiled_adapter; print(' '.join(sorted({m.split('.')[0] "
             "for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=True)
    loaded = set(result.stdout.split())
    assert {"tiled", "h5py", "hdf5plugin"} <= loaded
    stack = {"ophyd", "ophyd_async", "bluesky", "bluesky_tiled_plugins", "caproto", "epics",
             "aioca", "apstools", "guarneri", "matplotlib", "id3c_eiger_sim"}
    assert not loaded & stack, f"the adapter imports {sorted(loaded & stack)}"
