"""Bad input to the simulator: each is reported where the real IOC reports it, nothing is
written outside the data roots, and the IOC keeps answering."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import Sim
from id3c_eiger.layout import DATA_DATASET, ND_ATTRIBUTES


def capture_refused(sim: Sim) -> str:
    """Start a capture that must be refused; returns the WriteMessage. Never hangs."""
    sim.put("HDF1:Capture", "Capture", timeout=10)
    assert sim.text("HDF1:Capture_RBV") == "Done"
    assert sim.text("HDF1:WriteStatus") == "Write error"
    return sim.text("HDF1:WriteMessage")


def assert_ioc_still_works(sim: Sim, directory: Path) -> None:
    sim.put("HDF1:FilePath", str(directory))
    master = sim.stream(1)
    assert master.exists()
    assert sim.text("HDF1:WriteStatus") == "Write OK"


@pytest.mark.parametrize("escape", ["outside", "dotdot", "symlink"])
def test_file_path_outside_the_data_roots_is_refused(sim: Sim, data_root: Path, escape) -> None:
    outside = Path(tempfile.mkdtemp(prefix="not-a-root-"))
    path = {
        "outside": str(outside),
        "dotdot": f"{sim.directory}/../../{outside.name}",
        "symlink": str(sim.directory / "link"),
    }[escape]
    if escape == "symlink":
        (sim.directory / "link").symlink_to(outside)
    if escape == "dotdot":
        path = str(data_root / ".." / outside.name)
        Path(path).resolve().mkdir(exist_ok=True)
    sim.put("HDF1:FilePath", path)
    assert sim.get("HDF1:FilePathExists_RBV") == 0
    assert "outside the simulator's data roots" in sim.text("HDF1:WriteMessage")
    message = capture_refused(sim)
    assert "outside" in message and str(data_root) in message
    assert not any(Path(path).resolve().iterdir())
    assert_ioc_still_works(sim, sim.directory)


def test_missing_directory_with_create_directory_zero(sim: Sim) -> None:
    missing = sim.directory / "a" / "b"
    sim.put("HDF1:FilePath", str(missing))
    assert sim.get("HDF1:FilePathExists_RBV") == 0
    assert sim.text("HDF1:FilePath_RBV") == f"{missing}/"
    assert "CreateDirectory is 0" in capture_refused(sim)
    sim.put("HDF1:CreateDirectory", -1)
    sim.put("HDF1:FilePath", str(missing))
    assert "creates at most 1" in sim.text("HDF1:WriteMessage")
    sim.put("HDF1:CreateDirectory", -2)
    sim.put("HDF1:FilePath", str(missing))
    assert sim.get("HDF1:FilePathExists_RBV") == 1
    assert missing.is_dir()


@pytest.mark.parametrize(
    ("template", "fragment"),
    [("%s%s_%d_%d.h5", "not a C format"), ("%ssub/%s_%d.h5", "not a file directly"),
     ("%d%s%s.h5", "not a C format")],
)
def test_file_template_that_is_not_a_format_of_path_name_number(sim: Sim, template, fragment):
    sim.put("HDF1:FileTemplate", template)
    assert fragment in sim.text("HDF1:WriteMessage")
    assert fragment in capture_refused(sim)


def test_file_name_with_a_separator(sim: Sim) -> None:
    sim.put("HDF1:FileName", "../escape")
    assert "not a plain file name" in sim.text("HDF1:WriteMessage")
    assert "not a plain file name" in capture_refused(sim)


def test_capture_with_callbacks_disabled_and_in_single_mode(sim: Sim) -> None:
    sim.put("HDF1:EnableCallbacks", "Disable")
    assert "EnableCallbacks is Disable" in capture_refused(sim)
    sim.put("HDF1:EnableCallbacks", "Enable")
    sim.put("HDF1:FileWriteMode", "Single")
    assert "FileWriteMode Capture or Stream" in capture_refused(sim)


def test_frames_of_another_type_than_the_primed_file_end_the_capture(sim: Sim) -> None:
    sim.put("cam1:Acquire", "Acquire")  # primes the plugin: 1 ms exposures, UInt16
    sim.put("HDF1:LazyOpen", "No")
    sim.start_capture()
    sim.put("cam1:AcquireTime", 0.01)  # now UInt32
    sim.put("cam1:AcquirePeriod", 0.01)
    sim.put("cam1:Acquire", "Acquire")
    sim.wait_for("HDF1:Capture_RBV", "Done")
    assert "changed from uint16 to uint32" in sim.text("HDF1:WriteMessage")


@pytest.mark.parametrize(
    ("pv", "value", "clamped"),
    [("AcquireTime", 1e-6, 0.000219222), ("AcquirePeriod", 1e-6, 1 / 4500),
     ("AcquireTime", 1e5, 3600.0), ("NumImages", 0, 1), ("PhotonEnergy", 100.0, 3500.0)],
)
def test_settings_out_of_range_are_clamped_with_a_message(sim: Sim, pv, value, clamped) -> None:
    sim.put(f"cam1:{pv}", value)
    assert sim.get(f"cam1:{pv}_RBV") == pytest.approx(clamped, rel=1e-5)
    assert pv in sim.text("cam1:StatusMessage_RBV")
    assert "set to" in sim.text("cam1:StatusMessage_RBV")


def test_a_second_acquire_while_busy_is_ignored(sim: Sim) -> None:
    sim.put("cam1:NumImages", 50)
    sim.put("cam1:AcquirePeriod", 0.01)
    thread = threading.Thread(target=sim.put, args=("cam1:Acquire", "Acquire"))
    thread.start()
    sim.wait_for("cam1:StatusMessage_RBV", "Acquiring")  # frames flow for 0.5 s
    sim.put("cam1:Acquire", "Acquire", timeout=5)  # answered at once
    assert "already running" in sim.text("cam1:StatusMessage_RBV")
    thread.join(30)
    assert sim.get("cam1:ArrayCounter_RBV") == 50
    assert sim.text("cam1:DetectorState_RBV") == "Idle"


def test_trigger_when_nothing_waits_for_one(sim: Sim) -> None:
    sim.put("cam1:Trigger", 1.0, timeout=5)
    assert "not armed" in sim.text("cam1:StatusMessage_RBV")


def test_stopping_capture_mid_stream_leaves_a_consistent_file(sim: Sim) -> None:
    sim.put("cam1:NumImages", 400)
    sim.put("cam1:AcquirePeriod", 0.005)
    sim.start_capture()
    thread = threading.Thread(target=sim.put, args=("cam1:Acquire", "Acquire"))
    thread.start()
    sim.wait_for_at_least("HDF1:NumCaptured_RBV", 20)
    sim.put("HDF1:Capture", "Done")
    sim.put("cam1:Acquire", "Done")
    thread.join(30)
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    captured = sim.get("HDF1:NumCaptured_RBV")
    with h5py.File(master, "r") as f:  # every frame captured, each with its NDAttributes
        assert f[DATA_DATASET].shape[0] == captured
        unique_ids = f[f"{ND_ATTRIBUTES}/NDArrayUniqueId"][()]
    assert len(unique_ids) == captured and (np.diff(unique_ids) == 1).all()
    assert_ioc_still_works(sim, sim.directory)


@pytest.fixture
def read_only_dir(sim: Sim):
    """A directory under the data root the IOC cannot write: immutable for root, 0555 else."""
    directory = sim.directory / "read-only"
    directory.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
            pytest.skip("chattr +i is not permitted here, and root ignores permission bits")
        yield directory
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)


def test_file_path_not_writable_by_the_ioc(sim: Sim, read_only_dir: Path) -> None:
    sim.put("HDF1:FilePath", str(read_only_dir))
    assert sim.get("HDF1:FilePathExists_RBV") == 0
    assert "not writable by the IOC" in capture_refused(sim)
    assert not any(read_only_dir.iterdir())
    assert_ioc_still_works(sim, sim.directory)
