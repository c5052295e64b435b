"""The detector's own FileWriter (DCU) and the IOC's downloads (SaveFiles), over real CA: series
named by FWNamePattern and SequenceId on the DCU disk, files as DECTRIS cuts them, downloaded
into cam1:FilePath in ADEiger's order (the master, written at arm, first; Acquire Done once all
are there), FilePerms and FWAutoRemove, and the bad cases."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import Sim, expected_frames, master_frames
from id3c_eiger.layout import DATA_DATASET, read_metadata
from id3c_eiger_sim.process import SimulatorProcess, start_simulator


@pytest.fixture
def fw(sim: Sim, ioc: SimulatorProcess) -> tuple[Sim, Path, Path]:
    """The FileWriter on, downloads into a directory of the test; (sim, DCU disk, downloads)."""
    downloads = sim.directory / "downloads"
    downloads.mkdir()
    sim.put("cam1:FilePath", str(downloads))
    sim.put("cam1:FWEnable", "Enable")
    sim.put("cam1:SaveFiles", "Enable")
    sim.put("cam1:FWNamePattern", f"{sim.directory.name[:40]}_$id")
    return sim, ioc.dcu_root, downloads


def acquire(sim: Sim, n_images: int, n_triggers: int = 1, per_file: int = 100) -> int:
    """One internal series, until Acquire is Done (every file downloaded); its sequence id."""
    for key, value in {"NumImages": n_images, "NumTriggers": n_triggers, "AcquireTime": 0.001,
                       "AcquirePeriod": 0.002, "FWNImagesPerFile": per_file}.items():
        sim.put(f"cam1:{key}", value)
    sim.put("cam1:Acquire", "Acquire")
    return sim.get("cam1:SequenceId")


def downloaded_master(sim: Sim, name: str) -> Path:
    """The master of series ``name`` in cam1:FilePath, there once Acquire is Done."""
    master = Path(sim.text("cam1:FilePath_RBV")) / f"{name}_master.h5"
    assert master.exists(), f"{master} not downloaded: {sim.text('cam1:StatusMessage_RBV')}"
    return master


def test_a_series_is_cut_as_the_dcu_cuts_it_and_downloaded_master_first(fw) -> None:
    sim, dcu, downloads = fw
    first = acquire(sim, 60, n_triggers=2)  # ADEiger's own example: 60 x 2, 100 per file
    name = f"{sim.directory.name[:40]}_{first}"
    master = downloaded_master(sim, name)
    assert master == downloads / f"{name}_master.h5"
    on_dcu = sorted(p.name for p in dcu.glob(f"{name}_*"))
    assert on_dcu == [f"{name}_data_000001.h5", f"{name}_data_000002.h5", f"{name}_master.h5"]
    for data_file, count in ((f"{name}_data_000001.h5", 100), (f"{name}_data_000002.h5", 20)):
        with h5py.File(downloads / data_file, "r") as f:
            assert f[DATA_DATASET].shape == (count, 1, 512, 1028)  # v2024.2: a threshold axis
            assert f[DATA_DATASET].chunks == (1, 1, 512, 1028)
    # ADEiger's order: the master, then the data files in order
    times = [(downloads / n).stat().st_mtime_ns for n in (on_dcu[2], on_dcu[0], on_dcu[1])]
    assert times == sorted(times)
    assert sim.text("cam1:FullFileName_RBV") == str(downloads / f"{name}_data_000002.h5")
    with h5py.File(master, "r") as f:
        md = read_metadata(f)
        vds = f[DATA_DATASET].virtual_sources()
        assert f[DATA_DATASET].shape == (120, 1, 512, 1028)
    assert (md["nimages"], md["ntrigger"]) == (60, 2)
    assert {source.file_name for source in vds} == {f"{name}_data_000001.h5",
                                                    f"{name}_data_000002.h5"}  # relative
    frames = master_frames(master)
    assert frames.shape == (120, 512, 1028)
    np.testing.assert_array_equal(frames[[0, 119]], expected_frames(master, [0, 119]))
    assert acquire(sim, 1) == first + 1  # a new sequence id at every arm


def test_the_master_is_written_at_arm_for_every_frame_asked_and_downloaded_first(fw) -> None:
    """Armed for External Series triggers, before any frame: the master is on the DCU and in
    FilePath, claiming nimages x ntrigger; the data files follow the triggers, and Acquire stays
    busy ("Processing files") until the IOC has them all."""
    sim, dcu, downloads = fw
    for key, value in {"TriggerMode": "External Series", "NumImages": 3, "NumTriggers": 2,
                       "AcquireTime": 0.001, "AcquirePeriod": 0.002,
                       "FWNImagesPerFile": 2}.items():
        sim.put(f"cam1:{key}", value)
    sim.put("cam1:Acquire", "Acquire", wait=False)
    sim.wait_for("cam1:Armed", "Armed")
    name = f"{sim.directory.name[:40]}_{sim.get('cam1:SequenceId')}"
    master = downloads / f"{name}_master.h5"
    deadline = time.monotonic() + 5
    while not master.exists():
        assert time.monotonic() < deadline, "the master was not downloaded while armed"
        time.sleep(0.02)
    assert not list(downloads.glob(f"{name}_data_*"))  # no frame yet
    assert (dcu / f"{name}_master.h5").exists() and not list(dcu.glob(f"{name}_data_*"))
    with h5py.File(master, "r") as f:
        md = read_metadata(f)
        assert f[DATA_DATASET].shape[0] == 6
        assert {s.file_name for s in f[DATA_DATASET].virtual_sources()} == {
            f"{name}_data_00000{n}.h5" for n in (1, 2, 3)}
    assert (md["nimages"], md["ntrigger"]) == (3, 2)
    for _ in range(2):
        sim.put("cam1:Trigger", 1)
    sim.wait_for("cam1:StatusMessage_RBV", "Processing files", timeout=5)  # ADEiger's 0.5 s
    assert sim.text("cam1:AcquireBusy") == "Acquiring"
    sim.wait_for("cam1:AcquireBusy", "Done", timeout=10)
    assert sorted(p.name for p in downloads.glob(f"{name}_data_*")) == [
        f"{name}_data_00000{n}.h5" for n in (1, 2, 3)]
    np.testing.assert_array_equal(master_frames(master), expected_frames(master, range(6)))


def test_threshold2_adds_a_second_image_to_every_v2024_2_frame(fw) -> None:
    """Two thresholds: (n, 2, y, x); the second counts fewer photons, the flagged pixels stay
    flagged in both. Legacy data stay 3-D."""
    sim, _, _ = fw
    sim.put("cam1:Threshold2Enable", "Enable")
    name = f"{sim.directory.name[:40]}_{acquire(sim, 3)}"
    with h5py.File(downloaded_master(sim, name), "r") as f:
        data = f[DATA_DATASET][()]
    assert data.shape == (3, 2, 512, 1028)
    first = expected_frames(downloaded_master(sim, name), range(3))
    np.testing.assert_array_equal(data[:, 0], first)
    flagged = first == np.iinfo(first.dtype).max
    assert flagged.any() and (data[:, 1][flagged] == first[flagged]).all()
    assert (data[:, 1][~flagged] <= first[~flagged]).all()
    assert data[:, 1][~flagged].sum() < 0.6 * first[~flagged].sum()
    sim.put("cam1:FWHDF5Format", "Legacy")
    name = f"{sim.directory.name[:40]}_{acquire(sim, 2)}"
    with h5py.File(downloaded_master(sim, name), "r") as f:
        assert f["/entry/data/data_000001"].shape == (2, 512, 1028)


def test_legacy_layout_perms_and_auto_remove(fw) -> None:
    sim, dcu, _ = fw
    sim.put("cam1:FWHDF5Format", "Legacy")
    sim.put("cam1:FilePerms", 640)
    sim.put("cam1:FWAutoRemove", "Enable")
    name = f"{sim.directory.name[:40]}_{acquire(sim, 30, per_file=20)}"
    master = downloaded_master(sim, name)
    with h5py.File(master, "r") as f:
        assert sorted(f["/entry/data"]) == ["data_000001", "data_000002"]
        assert f["/entry/data/data_000002"].shape[0] == 10
    assert stat.S_IMODE(master.stat().st_mode) == 0o640
    deadline = time.monotonic() + 5
    while list(dcu.glob(f"{name}_*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(dcu.glob(f"{name}_*"))  # removed from the DCU once downloaded
    assert sim.get("cam1:FWFree_RBV") > 0


def test_nsls2_eiger_handler_reads_a_legacy_series_by_its_sequence_id(fw) -> None:
    """The NSLS-II handler finds files as <prefix>_<seq_id>_master.h5 and reads Legacy links."""
    from area_detector_handlers.eiger import EigerHandler

    sim, _, downloads = fw
    sim.put("cam1:FWHDF5Format", "Legacy")
    prefix = sim.directory.name[:40]
    sequence_id = acquire(sim, 4, per_file=4)
    master = downloaded_master(sim, f"{prefix}_{sequence_id}")
    stack = EigerHandler(str(downloads / prefix), images_per_file=4)(seq_id=sequence_id)
    np.testing.assert_array_equal(np.asarray(stack), expected_frames(master, range(4)))


def test_a_pattern_without_id_is_accepted_with_a_warning_and_never_overwrites_downloads(fw):
    sim, dcu, _ = fw
    sim.put("cam1:FWNamePattern", "fixed")
    assert "has no $id" in sim.text("cam1:StatusMessage_RBV")
    assert sim.text("cam1:FWNamePattern_RBV") == "fixed"  # accepted, as the DCU does
    acquire(sim, 2)
    master = downloaded_master(sim, "fixed")
    before = master.stat().st_mtime_ns
    acquire(sim, 3)  # the DCU overwrites its own series; the IOC never overwrites a download
    deadline = time.monotonic() + 5
    while "download of fixed" not in sim.text("cam1:StatusMessage_RBV"):
        assert time.monotonic() < deadline, sim.text("cam1:StatusMessage_RBV")
        time.sleep(0.05)
    assert "File exists" in sim.text("cam1:StatusMessage_RBV")
    assert master.stat().st_mtime_ns == before
    with h5py.File(dcu / "fixed_master.h5", "r") as f:
        assert f[DATA_DATASET].shape[0] == 3


def test_downloads_outside_the_roots_are_refused_and_nothing_is_written_there(fw, tmp_path):
    sim, dcu, _ = fw
    outside = tmp_path / "outside"
    outside.mkdir()
    sim.put("cam1:FilePath", str(outside))
    assert sim.text("cam1:FilePathExists_RBV") == "No"
    name = f"{sim.directory.name[:40]}_{acquire(sim, 2)}"
    deadline = time.monotonic() + 5
    while "download of" not in sim.text("cam1:StatusMessage_RBV"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "outside" in sim.text("cam1:StatusMessage_RBV")
    assert list(outside.iterdir()) == []
    assert (dcu / f"{name}_master.h5").exists()  # it stays on the DCU


def test_a_full_dcu_disk_ends_the_acquisition_named_and_keeps_the_frames_before(fw) -> None:
    sim, dcu, _ = fw
    sim.put("cam1:FWCompression", "Disable")
    sim.put("sim:DcuDiskFullAfterBytes", int(5.5 * 512 * 1028 * 2))
    name = f"{sim.directory.name[:40]}_{acquire(sim, 20)}"
    assert sim.text("cam1:DetectorState_RBV") == "Error"
    assert sim.text("cam1:FWState_RBV") == "error"
    assert sim.get("cam1:FWFree_RBV") == 0
    assert "No space left on device" in sim.text("cam1:StatusMessage_RBV")
    with h5py.File(dcu / f"{name}_data_000001.h5", "r") as f:
        assert f[DATA_DATASET].shape[0] == 5
    sim.put("sim:DcuDiskFullAfterBytes", 0)  # space freed: the next series works
    name = f"{sim.directory.name[:40]}_{acquire(sim, 2)}"
    assert sim.text("cam1:FWState_RBV") == "ready"
    assert master_frames(downloaded_master(sim, name)).shape[0] == 2


def test_data_source_file_writer_feeds_hdf1_and_the_plugins_a_file_at_a_time(fw) -> None:
    sim, _, _ = fw
    sim.put("cam1:DataSource", "FileWriter")
    sim.put("cam1:WaitForPlugins", "Yes")
    sim.put("Stats1:EnableCallbacks", "Enable")
    sim.put("Stats1:BlockingCallbacks", "Yes")
    sim.start_capture()
    name = f"{sim.directory.name[:40]}_{acquire(sim, 25, per_file=10)}"
    downloaded = downloaded_master(sim, name)
    sim.wait_for_at_least("HDF1:NumCaptured_RBV", 25, timeout=10)  # parsed from the 3 files
    sim.put("HDF1:Capture", "Done")
    assert sim.get("Stats1:ArrayCounter_RBV") == 25
    hdf1 = Path(sim.text("HDF1:FullFileName_RBV"))
    np.testing.assert_array_equal(master_frames(hdf1), master_frames(downloaded))


def test_data_source_file_writer_without_the_file_writer_refuses_to_arm(sim: Sim) -> None:
    sim.put("cam1:DataSource", "FileWriter")
    sim.put("cam1:FWEnable", "Disable")
    sim.put("cam1:Acquire", "Acquire")
    assert sim.text("cam1:DetectorState_RBV") == "Error"
    assert "set FWEnable Enable, or DataSource Stream" in sim.text("cam1:StatusMessage_RBV")
    sim.put("cam1:DataSource", "Stream")
    sim.put("cam1:Acquire", "Acquire")  # the IOC keeps working
    assert sim.text("cam1:DetectorState_RBV") == "Idle"


def test_a_dcu_disk_made_for_the_simulator_goes_with_it_and_one_given_stays(
        spare_port: int, tmp_path: Path) -> None:
    """A fly scan's series are GBs on the DCU disk: one start_simulator made must not outlive
    the process (each benchmark had left 3 GB in /tmp); a disk the caller gave is the caller's."""
    made = start_simulator("DCUTMP:", spare_port, [tmp_path])
    (made.dcu_root / "series_1_master.h5").write_bytes(b"kept until stop")
    made.stop()
    assert not made.dcu_root.exists()
    given = tmp_path / "dcu"
    given.mkdir()
    with start_simulator("DCUTMP:", spare_port, [tmp_path], dcu_root=given) as ioc:
        assert ioc.dcu_root == given
    assert given.is_dir()
