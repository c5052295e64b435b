"""The classic-ophyd EIGER2 from a devices file, against the simulator process over CA, through
the real TiledWriter into an embedded Tiled server: the seed workflow and its failure cases."""

from __future__ import annotations

import threading
from pathlib import Path

import bluesky.plans as bp
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from helpers import CLASSIC, Sim, expected_frames, load_eiger2, master_frames
from id3c_eiger.catalog import UnresolvedLinkError, master_files
from id3c_eiger.layout import ND_ATTRIBUTES, is_ndfile
from id3c_eiger.paths import ReadPathError, WritePathError

POOLED = ("ThreadPoolExecutor", "asyncio_")  # concurrent.futures' and asyncio's worker threads


def make_eiger2(tmp_path: Path, sim: Sim, write: str, read: str | None = None, **extra):
    """The classic ``eiger2`` of a devices file, loaded by guarneri."""
    return load_eiger2(CLASSIC, tmp_path, sim, write, read, **extra)


def test_one_point_reads_back_as_one_frame(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/run1/")
    RE(bp.count([eiger2], num=1))
    run = catalog.runs[-1]
    assert "eiger2_image" in list(run.primary)
    assert run.primary["eiger2_image"].shape == (1, 512, 1028)


def test_ten_points_are_lazy_typed_and_equal_to_the_files(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/%Y/%m/%d")
    RE(bp.count([eiger2], num=10))
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (10, 512, 1028)
    assert images.dtype == np.dtype(sim.text("HDF1:DataType_RBV").lower())
    (master,) = master_files(images)
    assert master.parent == Path(eiger2.hdf1.paths.read)
    assert master.name.endswith("_000000.h5")  # HDF1's single file (the hdf5_plugin source)
    with h5py.File(master, "r") as f:
        assert is_ndfile(f) and f[f"{ND_ATTRIBUTES}/CountTime"].shape == (10,)
    on_disk = master_frames(master)
    assert on_disk.shape == (10, 512, 1028)
    first = images[0]
    assert first.shape == (512, 1028)
    np.testing.assert_array_equal(first, on_disk[0])
    np.testing.assert_array_equal(first, expected_frames(master, range(1))[0])
    np.testing.assert_array_equal(images[9], expected_frames(master, range(9, 10))[0])


def test_several_frames_per_point_add_an_axis(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/multi", images_per_point=5)
    RE(bp.count([eiger2], num=3))
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (3, 5, 512, 1028)
    (master,) = master_files(images)
    on_disk = master_frames(master)
    assert on_disk.shape == (15, 512, 1028)
    np.testing.assert_array_equal(images[2], on_disk[10:15])
    np.testing.assert_array_equal(images[1, 3], expected_frames(master, range(8, 9))[0])
    # The server reads what a request covers straight from the file, however it is cut.
    np.testing.assert_array_equal(images[1:3, 2], on_disk[[7, 12]])
    np.testing.assert_array_equal(images[:, 4, 10:20, 5], on_disk[[4, 9, 14], 10:20, 5])
    np.testing.assert_array_equal(images[::2, 1:4:2], on_disk[[1, 3, 11, 13]].reshape(2, 2, 512, 1028))


def test_a_step_scan_starts_no_thread_per_point(tmp_path, sim, RE, catalog,
                                                monkeypatch) -> None:
    """A point's deadline is kept by the stage's watchdog, not a thread of its own: ten more
    points start no more threads (ophyd's own sets at stage and unstage start theirs)."""
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/threads/")
    RE(bp.count([eiger2], num=1))  # a first stage connects the lazy signals
    started: list[str] = []
    start = threading.Thread.start

    def counted_start(thread: threading.Thread) -> None:
        if not thread.name.startswith(POOLED):  # a pool grows to its load once, not per point
            started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted_start)
    counted = []
    for points in (2, 12):
        started.clear()
        RE(bp.count([eiger2], num=points))
        counted.append(len(started))
    assert counted[0] == counted[1], f"{counted}: threads started by 2 and by 12 points"
    assert catalog.runs[-1].primary["eiger2_image"].shape == (12, 512, 1028)


def test_readers_use_their_own_path_to_the_iocs_directory(tmp_path, sim, RE, catalog,
                                                          data_root, alias_root) -> None:
    relative = sim.directory.relative_to(data_root)
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/%Y", f"{alias_root / relative}/%Y")
    RE(bp.count([eiger2], num=2))
    images = catalog.runs[-1].primary["eiger2_image"]
    (master,) = master_files(images)
    assert str(master).startswith(str(alias_root))  # recorded by the read path
    assert sim.text("HDF1:FullFileName_RBV").startswith(str(sim.directory))  # written by W
    np.testing.assert_array_equal(images[1], master_frames(master)[1])


def test_read_path_missing_here_fails_at_stage_before_exposure(tmp_path, sim, RE) -> None:
    before = sim.get("cam1:ArrayCounter_RBV")
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/w", "/nonexistent/reader/mount/")
    with pytest.raises(ReadPathError) as err:
        RE(bp.count([eiger2], num=1))
    message = str(err.value)
    assert "/nonexistent/reader/mount/" in message and f"{sim.directory}/w/" in message
    assert "read_path_template" in message
    assert sim.get("cam1:ArrayCounter_RBV") == before  # no exposure
    assert sim.text("HDF1:Capture_RBV") == "Done"


def test_read_path_of_another_directory_fails_after_the_first_point(tmp_path, sim, RE) -> None:
    elsewhere = tmp_path / "not-the-iocs-directory"
    elsewhere.mkdir()
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/w2", str(elsewhere))
    with pytest.raises(ReadPathError) as err:  # itself, not inside bluesky's FailedStatus
        RE(bp.count([eiger2], num=5))
    assert str(elsewhere) in str(err.value) and f"{sim.directory}/w2/" in str(err.value)
    assert sim.get("cam1:ArrayCounter_RBV") == 1  # stopped after the first point


def test_write_path_the_ioc_refuses_fails_at_stage(tmp_path, sim, RE) -> None:
    before = sim.get("cam1:ArrayCounter_RBV")
    eiger2 = make_eiger2(tmp_path, sim, "/outside/every/data/root/", str(sim.directory))
    with pytest.raises(WritePathError) as err:
        RE(bp.count([eiger2], num=1))
    message = str(err.value)
    assert "/outside/every/data/root/" in message and str(sim.directory) in message
    assert "write_path_template" in message
    assert sim.get("cam1:ArrayCounter_RBV") == before


def test_missing_data_file_is_named_at_read_time(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/broken", file_source="file_writer")
    RE(bp.count([eiger2], num=2))
    images = catalog.runs[-1].primary["eiger2_image"]
    master = master_files(images)[0]  # the first point's series
    data_file = master.with_name(master.name.replace("_master.h5", "_data_000001.h5"))
    data_file.unlink()
    with pytest.raises(UnresolvedLinkError) as err:
        images[0]
    message = str(err.value)
    assert str(master) in message and "/entry/data/data" in message and data_file.name in message
