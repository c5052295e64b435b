"""Acquisitions on the simulator over CA, checked in the files with h5py: HDF1's single
NDFileHDF5 file in every file mode and trigger mode, and the FileWriter's DECTRIS series."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import Sim, expected_frames, master_frames
from id3c_eiger.layout import (
    ARRAY_ATTRIBUTES,
    DATA_DATASET,
    DETECTOR,
    DETECTOR_DATA,
    EIGER_ATTRIBUTES,
    ND_ATTRIBUTES,
    data_file_name,
    data_members,
    link_targets,
    read_metadata,
)

BSLZ4_FILTER = 32008


def frames_of(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[DATA_DATASET][()]


def test_stream_capture_writes_one_file_in_ndfilehdf5_s_default_layout(sim: Sim) -> None:
    """HDF1 writes what NDFileHDF5 writes: one file, no external link, the frames in the
    detector group with /entry/data/data a hard link to them, and each frame's NDAttributes."""
    path = sim.stream(5, AcquireTime=0.002, AcquirePeriod=0.003)
    assert path == sim.directory / f"{sim.text('HDF1:FileName')}_000001.h5"
    assert sim.get("HDF1:FileNumber") == 2  # AutoIncrement
    assert sim.get("HDF1:NumCaptured_RBV") == 5
    assert sim.text("HDF1:WriteStatus") == "Write OK"
    assert sorted(p.name for p in sim.directory.iterdir()) == [path.name]  # one file, no pair
    with h5py.File(path, "r") as f:
        assert isinstance(f.get(DATA_DATASET, getlink=True), h5py.HardLink)
        assert f[DATA_DATASET] == f[DETECTOR_DATA]  # one dataset, two names
        assert not link_targets(f)
        assert f["/entry"].attrs["NX_class"] == b"NXentry"
        assert f[ND_ATTRIBUTES].attrs["NX_class"] == b"NXcollection"
        dataset = f[DETECTOR_DATA]
        assert dataset.shape == (5, 512, 1028) and dataset.dtype == np.uint16
        assert dataset.chunks == (1, 512, 1028)
        assert dataset.id.get_create_plist().get_filter(0)[0] == BSLZ4_FILTER
        attributes = {name: f[f"{ND_ATTRIBUTES}/{name}"][()] for name in f[ND_ATTRIBUTES]}
        assert f[f"{DETECTOR}/NDAttributes/ColorMode"].shape == (5,)
        md = read_metadata(f)
    assert set(attributes) == {spec.name for spec in (*EIGER_ATTRIBUTES, *ARRAY_ATTRIBUTES)}
    assert all(values.shape == (5,) for values in attributes.values())
    assert list(np.diff(attributes["NDArrayUniqueId"])) == [1, 1, 1, 1]
    assert (attributes["CountTime"] == np.float32(0.002)).all()
    assert attributes["DetectorDescription"][0] == b"Dectris EIGER2 Si 500K"
    assert (md["count_time"], md["bit_depth_image"], md["nimages"]) == (
        pytest.approx(0.002), 16, 5)
    np.testing.assert_array_equal(frames_of(path), expected_frames(path, range(5)))


def test_store_attr_no_writes_the_frames_without_ndattributes(sim: Sim) -> None:
    sim.put("HDF1:StoreAttr", "No")
    path = sim.stream(2)
    with h5py.File(path, "r") as f:
        assert list(f[ND_ATTRIBUTES]) == []
        assert f[DATA_DATASET].shape == (2, 512, 1028)


def test_a_file_writer_series_links_its_data_file_with_dectris_metadata(sim: Sim) -> None:
    master = sim.series(5, AcquireTime=0.002, AcquirePeriod=0.003)
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
        assert dataset.shape == (5, 1, 512, 1028)  # v2024.2: a threshold axis
        assert dataset.dtype == np.uint16
        assert dataset.id.get_create_plist().get_filter(0)[0] == BSLZ4_FILTER
        assert (dataset.attrs["image_nr_low"], dataset.attrs["image_nr_high"]) == (1, 5)
    np.testing.assert_array_equal(master_frames(master), expected_frames(master, range(5)))


def test_long_exposure_is_uint32_with_metadata_from_the_pvs(sim: Sim) -> None:
    sim.put("cam1:BeamX", 500.5)
    sim.put("cam1:BeamY", 250.25)
    sim.put("cam1:DetDist", 0.1)
    sim.put("cam1:PhotonEnergy", 10000.0)
    assert sim.text("cam1:DataType_RBV") == "UInt16"
    path = sim.stream(2, AcquireTime=0.01, AcquirePeriod=0.011)
    assert sim.text("cam1:DataType_RBV") == "UInt32"
    assert sim.text("HDF1:DataType_RBV") == "UInt32"
    sim.put("cam1:ArrayCounter", 0)  # frame content follows the array counter
    master = sim.series(2)
    for written in (path, master):  # NDAttributes of the HDF1 file, DECTRIS fields of the master
        with h5py.File(written, "r") as f:
            md = read_metadata(f)
            assert f[DATA_DATASET].dtype == np.uint32
        assert (md["beam_center_x"], md["beam_center_y"]) == (500.5, 250.25)
        assert md["detector_distance"] == pytest.approx(0.1)
        assert md["incident_wavelength"] == pytest.approx(12398.42 / 10000.0, rel=1e-5)
        np.testing.assert_array_equal(master_frames(written), expected_frames(written, range(2)))
    assert md["photon_energy"] == pytest.approx(10000.0)
    assert md["threshold_energy"] == pytest.approx(5000.0)
    frames = master_frames(master)
    mask = md["pixel_mask"] != 0
    assert mask.any()
    assert (frames[:, mask] == 2**32 - 1).all()  # flagged pixels
    assert frames[:, ~mask].max() <= md["saturation_value"]


def test_several_data_files_make_a_virtual_dataset_reaching_each_frame_once(sim: Sim) -> None:
    master = sim.series(10, FWNImagesPerFile=4)
    with h5py.File(master, "r") as f:
        dataset = f[DATA_DATASET]
        assert dataset.is_virtual
        sources = sorted({s.file_name for s in dataset.virtual_sources()})
        assert sources == [data_file_name(master, n) for n in (1, 2, 3)]
        assert data_members(f) == ["data"]
        assert dataset.shape == (10, 1, 512, 1028)
    for number, (low, high) in enumerate([(1, 4), (5, 8), (9, 10)], start=1):
        with h5py.File(master.parent / data_file_name(master, number), "r") as data:
            attrs = data[DATA_DATASET].attrs
            assert (attrs["image_nr_low"], attrs["image_nr_high"]) == (low, high)
    np.testing.assert_array_equal(master_frames(master), expected_frames(master, range(10)))


def test_legacy_layout_links_each_data_file_and_has_no_data_dataset(sim: Sim) -> None:
    master = sim.series(5, FWHDF5Format="Legacy", FWNImagesPerFile=3)
    with h5py.File(master, "r") as f:
        assert data_members(f) == ["data_000001", "data_000002"]
        assert DATA_DATASET not in f
        stacked = np.concatenate([f[f"/entry/data/{m}"][()] for m in data_members(f)])
    np.testing.assert_array_equal(stacked, expected_frames(master, range(5)))


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
    masters = sorted(sim.directory.glob("*.h5"))
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


def test_continuous_runs_until_stopped_and_the_file_holds_what_was_captured(sim: Sim) -> None:
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
