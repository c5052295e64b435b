"""Acquisitions on the simulator over CA, checked in the files with h5py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import Sim, expected_frames
from id3c_eiger.layout import DATA_DATASET, data_file_name, data_members, read_metadata

BSLZ4_FILTER = 32008


def frames_of(master: Path) -> np.ndarray:
    with h5py.File(master, "r") as f:
        return f[DATA_DATASET][()]


def test_stream_series_writes_master_link_and_bslz4_data(sim: Sim) -> None:
    master = sim.stream(5, AcquireTime=0.002, AcquirePeriod=0.003)
    assert master == sim.directory / f"{sim.text('HDF1:FileName')}_000001.h5"
    assert sim.get("HDF1:FileNumber") == 2  # AutoIncrement
    assert sim.get("HDF1:NumCaptured_RBV") == 5
    assert sim.text("HDF1:WriteStatus") == "Write OK"
    with h5py.File(master, "r") as f:
        link = f.get(DATA_DATASET, getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert link.filename == data_file_name(master, 1)  # relative: beside the master
        assert data_members(f) == ["data"]  # DECTRIS readers see every frame once
        md = read_metadata(f)
    assert md["nimages"] == 5
    assert md["count_time"] == pytest.approx(0.002)
    assert md["frame_time"] == pytest.approx(0.003)
    assert md["bit_depth_image"] == 16
    assert (md["x_pixels_in_detector"], md["y_pixels_in_detector"]) == (1028, 512)
    assert md["pixel_mask"].shape == (512, 1028)
    assert md["description"] == "Dectris EIGER2 Si 500K"
    with h5py.File(master.parent / data_file_name(master, 1), "r") as data:
        dataset = data[DATA_DATASET]
        assert dataset.shape == (5, 512, 1028)
        assert dataset.dtype == np.uint16
        assert dataset.chunks == (1, 512, 1028)
        assert dataset.id.get_create_plist().get_filter(0)[0] == BSLZ4_FILTER
        assert (dataset.attrs["image_nr_low"], dataset.attrs["image_nr_high"]) == (1, 5)
    np.testing.assert_array_equal(frames_of(master), expected_frames(master, range(5)))


def test_long_exposure_is_uint32_with_metadata_from_the_pvs(sim: Sim) -> None:
    sim.put("cam1:BeamX", 500.5)
    sim.put("cam1:BeamY", 250.25)
    sim.put("cam1:DetDist", 0.1)
    sim.put("cam1:PhotonEnergy", 10000.0)
    assert sim.text("cam1:DataType_RBV") == "UInt16"
    master = sim.stream(2, AcquireTime=0.01, AcquirePeriod=0.011)
    assert sim.text("cam1:DataType_RBV") == "UInt32"
    assert sim.text("HDF1:DataType_RBV") == "UInt32"
    with h5py.File(master, "r") as f:
        md = read_metadata(f)
        assert f[DATA_DATASET].dtype == np.uint32
    assert (md["beam_center_x"], md["beam_center_y"]) == (500.5, 250.25)
    assert md["detector_distance"] == pytest.approx(0.1)
    assert md["photon_energy"] == pytest.approx(10000.0)
    assert md["threshold_energy"] == pytest.approx(5000.0)
    assert md["incident_wavelength"] == pytest.approx(12398.42 / 10000.0, rel=1e-5)
    frames = frames_of(master)
    np.testing.assert_array_equal(frames, expected_frames(master, range(2)))
    mask = md["pixel_mask"] != 0
    assert mask.any()
    assert (frames[:, mask] == 2**32 - 1).all()  # flagged pixels
    assert frames[:, ~mask].max() <= md["saturation_value"]


def test_several_data_files_make_a_virtual_dataset_reaching_each_frame_once(sim: Sim) -> None:
    sim.put("cam1:FWNImagesPerFile", 4)
    master = sim.stream(10)
    with h5py.File(master, "r") as f:
        dataset = f[DATA_DATASET]
        assert dataset.is_virtual
        sources = sorted({s.file_name for s in dataset.virtual_sources()})
        assert sources == [data_file_name(master, n) for n in (1, 2, 3)]
        assert data_members(f) == ["data"]
        assert dataset.shape == (10, 512, 1028)
    for number, (low, high) in enumerate([(1, 4), (5, 8), (9, 10)], start=1):
        with h5py.File(master.parent / data_file_name(master, number), "r") as data:
            attrs = data[DATA_DATASET].attrs
            assert (attrs["image_nr_low"], attrs["image_nr_high"]) == (low, high)
    np.testing.assert_array_equal(frames_of(master), expected_frames(master, range(10)))


def test_legacy_layout_links_each_data_file_and_has_no_data_dataset(sim: Sim) -> None:
    sim.put("cam1:FWHDF5Format", "Legacy")
    sim.put("cam1:FWNImagesPerFile", 3)
    master = sim.stream(5)
    with h5py.File(master, "r") as f:
        assert data_members(f) == ["data_000001", "data_000002"]
        assert DATA_DATASET not in f
        stacked = np.concatenate([f[f"/entry/data/{m}"][()] for m in data_members(f)])
    np.testing.assert_array_equal(stacked, expected_frames(master, range(5)))


def test_data_files_in_the_detector_directory_are_linked_absolute(sim: Sim, data_root) -> None:
    detector_dir = data_root / "detector-disk"
    detector_dir.mkdir(exist_ok=True)
    sim.put("cam1:FilePath", str(detector_dir))
    sim.put("cam1:SaveFiles", "Enable")
    master = sim.stream(3)
    with h5py.File(master, "r") as f:
        link = f.get(DATA_DATASET, getlink=True)
        assert link.filename == str(detector_dir / data_file_name(master, 1))
        assert f[DATA_DATASET].shape == (3, 512, 1028)
    assert not (master.parent / data_file_name(master, 1)).exists()


def test_capture_mode_buffers_and_writes_num_capture_frames(sim: Sim) -> None:
    sim.put("HDF1:FileWriteMode", "Capture")
    sim.put("HDF1:NumCapture", 4)
    sim.start_capture()
    sim.put("cam1:NumImages", 6)
    sim.put("cam1:Acquire", "Acquire")
    sim.wait_for("HDF1:Capture_RBV", "Done")
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    assert sim.get("HDF1:NumCaptured_RBV") == 4
    np.testing.assert_array_equal(frames_of(master), expected_frames(master, range(4)))


def test_single_mode_autosave_writes_a_file_per_frame(sim: Sim) -> None:
    sim.put("HDF1:FileWriteMode", "Single")
    sim.put("HDF1:AutoSave", "Yes")
    sim.put("cam1:NumImages", 3)
    sim.put("cam1:Acquire", "Acquire")
    masters = sorted(m for m in sim.directory.glob("*.h5") if "_data_" not in m.name)
    assert [m.name[-9:] for m in masters] == ["000001.h5", "000002.h5", "000003.h5"]
    for index, master in enumerate(masters):
        np.testing.assert_array_equal(frames_of(master), expected_frames(master, [index]))
    sim.put("HDF1:WriteFile", "Write")
    assert Path(sim.text("HDF1:FullFileName_RBV")).name.endswith("_000004.h5")


def test_stream_with_num_capture_ends_by_itself_across_acquisitions(sim: Sim) -> None:
    """The classic ophyd pattern: one capture, one Acquire per point."""
    sim.put("HDF1:NumCapture", 3)
    sim.start_capture()
    for _ in range(3):
        sim.put("cam1:Acquire", "Acquire")
    sim.wait_for("HDF1:Capture_RBV", "Done")
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    assert sim.get("cam1:ArrayCounter_RBV") == 3
    np.testing.assert_array_equal(frames_of(master), expected_frames(master, range(3)))


def _acquire_in_background(sim: Sim) -> threading.Thread:
    thread = threading.Thread(target=sim.put, args=("cam1:Acquire", "Acquire"),
                              kwargs={"timeout": 60})
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("mode", "manual", "n_images", "n_triggers", "expected"),
    [
        ("Internal Series", "Enable", 2, 3, 6),
        ("Internal Enable", "Enable", 5, 3, 3),  # one frame per trigger
        ("External Series", "Disable", 2, 2, 4),
        ("External Enable", "Disable", 1, 4, 4),
        ("External Gate", "Disable", 3, 2, 6),
    ],
)
def test_triggered_modes_wait_for_each_trigger(sim: Sim, mode, manual, n_images, n_triggers,
                                               expected) -> None:
    for key, value in {"TriggerMode": mode, "ManualTrigger": manual, "NumImages": n_images,
                       "NumTriggers": n_triggers}.items():
        sim.put(f"cam1:{key}", value)
    sim.start_capture()
    thread = _acquire_in_background(sim)
    for sent in range(n_triggers):
        sim.wait_for("cam1:DetectorState_RBV", "Waiting")
        assert sim.get("cam1:AcquireBusy") == 1
        sim.put("cam1:Trigger", 0.004 if mode == "External Enable" else 0.0)
        deadline = time.monotonic() + 10
        per_trigger = 1 if "Enable" in mode else n_images
        while sim.get("cam1:NumImagesCounter_RBV") < (sent + 1) * per_trigger:
            assert time.monotonic() < deadline, "frames of the trigger never came"
            time.sleep(0.02)
    thread.join(30)
    assert not thread.is_alive()
    assert sim.text("cam1:DetectorState_RBV") == "Idle"
    sim.put("HDF1:Capture", "Done")
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    np.testing.assert_array_equal(frames_of(master), expected_frames(master, range(expected)))


def test_continuous_runs_until_stopped_and_the_master_counts_what_was_written(sim: Sim) -> None:
    sim.put("cam1:TriggerMode", "Continuous")
    sim.put("cam1:NumImages", 5)
    sim.start_capture()
    thread = _acquire_in_background(sim)
    time.sleep(0.5)
    assert thread.is_alive()
    sim.put("cam1:Acquire", "Done")
    thread.join(10)
    assert not thread.is_alive()
    assert sim.text("cam1:DetectorState_RBV") == "Aborted"
    sim.put("HDF1:Capture", "Done")
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    n = sim.get("HDF1:NumCaptured_RBV")
    assert n > 5
    with h5py.File(master, "r") as f:  # DECTRIS counts: NumImages per trigger, triggers begun
        md = read_metadata(f)
        assert (md["nimages"], md["ntrigger"]) == (5, -(-n // 5))
    np.testing.assert_array_equal(frames_of(master), expected_frames(master, range(n)))


def test_swmr_reader_sees_the_frames_so_far_during_a_long_capture(sim: Sim) -> None:
    sim.put("cam1:AcquireTime", 0.02)
    sim.put("cam1:AcquirePeriod", 0.02)
    sim.put("cam1:Acquire", "Acquire")  # one frame primes the plugin with these settings
    sim.put("cam1:ArrayCounter", 0)
    sim.put("cam1:NumImages", 100)
    sim.put("HDF1:LazyOpen", "No")
    sim.start_capture()
    thread = _acquire_in_background(sim)
    deadline = time.monotonic() + 20
    while sim.get("HDF1:NumCaptured_RBV") < 10:
        assert time.monotonic() < deadline, "no frames were captured"
        time.sleep(0.05)
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    with h5py.File(master, "r", swmr=True) as f:
        seen = f[DATA_DATASET].shape[0]
        first = f[DATA_DATASET][0]
    assert 5 < seen < 100
    np.testing.assert_array_equal(first, expected_frames(master, range(1))[0])
    thread.join(30)
    sim.put("HDF1:Capture", "Done")
    assert frames_of(master).shape[0] == 100
