"""The simulator under faults (its ``sim:`` PVs and ``--fault``), kills, readers and restarts: the
frames on disk, in the master and in the IOC's counters always agree, nothing is overwritten, and
the IOC keeps answering."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from helpers import Sim, expected_frames
from id3c_eiger.layout import DATA_DATASET, ND_ATTRIBUTES, is_ndfile, read_metadata, series_stem
from id3c_eiger_sim.process import SimulatorProcess, start_simulator

FRAME_BYTES_16 = 512 * 1028 * 2  # an uncompressed 16-bit frame


def open_swmr(path: Path, timeout: float = 5.0) -> h5py.File:
    """Open a file the simulator may be writing. A data file is locked from its creation until
    its writer enters SWMR mode (a few ms at a rollover); a reader finding it so tries again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return h5py.File(path, "r", swmr=True)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def frames_in_files(master: Path) -> tuple[int, int]:
    """(frames the file claims, frames on disk). Of an HDF1 file: its frames and the frames with
    their NDAttributes (every frame carries its own). Of a DECTRIS master: its frame extent and
    the frames in its data files; its counts (nimages per trigger, ntrigger the triggers begun)
    never claim more than it reaches: a master linking one live data file reaches its frames at
    once, its counts at the next refresh."""
    with open_swmr(master) as f:
        if is_ndfile(f):
            return f[DATA_DATASET].shape[0], f[f"{ND_ATTRIBUTES}/NDArrayUniqueId"].shape[0]
        metadata = read_metadata(f)
        extent = f[DATA_DATASET].shape[0] if DATA_DATASET in f else 0
    per_trigger = int(metadata["nimages"])
    assert int(metadata["ntrigger"]) <= -(-extent // per_trigger), (metadata, extent)
    on_disk = 0
    for data_file in master.parent.glob(f"{series_stem(master)}_data_*.h5"):
        with open_swmr(data_file) as f:
            dataset = f[DATA_DATASET]
            on_disk += dataset.shape[0]
            low, high = (int(dataset.attrs[key]) for key in ("image_nr_low", "image_nr_high"))
            assert high - low + 1 == dataset.shape[0], f"{data_file.name}: image_nr_high is off"
    return extent, on_disk


def assert_claimed_frames_are_real(master: Path, n: int) -> None:
    """Every frame the master reaches is the simulator's frame, not a fill value."""
    with h5py.File(master, "r", swmr=True) as f:
        frames = f[DATA_DATASET][:n]
    np.testing.assert_array_equal(frames, expected_frames(master, range(n)))


def stream_in_background(sim: Sim) -> threading.Thread:
    thread = threading.Thread(target=sim.put, args=("cam1:Acquire", "Acquire"),
                              kwargs={"timeout": 120}, daemon=True)
    thread.start()
    return thread


def test_disk_full_mid_capture_keeps_every_frame_written(sim: Sim) -> None:
    sim.put("HDF1:Compression", "None")
    sim.put("sim:DiskFullAfterBytes", int(9.5 * FRAME_BYTES_16))
    master = sim.stream(20)
    assert sim.text("HDF1:WriteStatus") == "Write error"
    assert "No space left on device" in sim.text("HDF1:WriteMessage")
    assert sim.get("HDF1:NumCaptured_RBV") == 9
    assert frames_in_files(master) == (9, 9)
    assert_claimed_frames_are_real(master, 9)  # no zero frame at the end
    sim.put("sim:DiskFullAfterBytes", 0)  # space freed: the next capture works
    after = sim.stream(2)
    assert after != master and frames_in_files(after) == (2, 2)
    assert sim.text("HDF1:WriteStatus") == "Write OK"


def test_a_failing_writer_ends_the_capture_with_the_frames_before(sim: Sim) -> None:
    sim.put("sim:FailWriterAfterFrames", 5)
    master = sim.stream(12)
    assert "Input/output error" in sim.text("HDF1:WriteMessage")
    assert sim.get("HDF1:NumCaptured_RBV") == 5
    assert frames_in_files(master) == (5, 5)
    assert sim.get("sim:FailWriterAfterFrames") == 0  # struck once
    assert frames_in_files(sim.stream(3)) == (3, 3)


def test_dropped_frames_are_counted_and_absent_from_the_file(sim: Sim) -> None:
    before = sim.get("HDF1:DroppedArrays_RBV")
    sim.put("sim:DropFrames", 3)
    master = sim.stream(10)
    assert sim.get("HDF1:DroppedArrays_RBV") - before == 3
    assert sim.get("HDF1:NumCaptured_RBV") == 7
    assert frames_in_files(master) == (7, 7)
    assert sim.text("HDF1:WriteStatus") == "Write OK"  # the plugin's queue, not its writer


def test_a_stalled_detector_stays_acquiring_until_stopped(sim: Sim) -> None:
    sim.put("cam1:NumImages", 10)
    sim.put("sim:StallAfterFrames", 4)
    sim.start_capture()
    thread = stream_in_background(sim)
    sim.wait_for_at_least("HDF1:NumCaptured_RBV", 4)
    time.sleep(0.5)
    assert sim.text("cam1:AcquireBusy") == "Acquiring"
    assert sim.get("HDF1:NumCaptured_RBV") == 4
    sim.put("cam1:Acquire", "Done")
    thread.join(10)
    assert not thread.is_alive()
    sim.put("HDF1:Capture", "Done")
    assert frames_in_files(Path(sim.text("HDF1:FullFileName_RBV"))) == (4, 4)


def test_readers_holding_the_file_open_through_a_2khz_capture(sim: Sim) -> None:
    """h5py readers (swmr=True, as Tiled and the README do) open the file again and again while
    2000 frames arrive at 2.2 kHz and hold every handle to the end: the capture must not notice
    them, and each reader's last frame is the simulator's frame, never a fill value."""
    sim.put("cam1:AcquireTime", 0.000447)
    sim.put("cam1:AcquirePeriod", 0.00045)
    sim.put("cam1:NumImages", 2000)
    sim.start_capture()
    thread = stream_in_background(sim)
    held: list[h5py.File] = []
    seen: list[tuple[int, np.ndarray]] = []
    stop = threading.Event()

    def read_along() -> None:
        path = sim.capture_file()
        while not stop.is_set() and len(held) < 20:
            held.append(open_swmr(path))
            data = held[-1][DATA_DATASET]
            if data.shape[0]:
                seen.append((data.shape[0] - 1, data[-1]))
            time.sleep(0.02)

    reader = threading.Thread(target=read_along, daemon=True)
    reader.start()
    thread.join(60)
    stop.set()
    reader.join(10)
    sim.put("HDF1:Capture", "Done")
    path = Path(sim.text("HDF1:FullFileName_RBV"))
    for f in held:  # this process's own later opens would share their stale SWMR views
        f.close()
    assert len(held) >= 10, f"the reader held only {len(held)} handles"
    assert sim.text("HDF1:WriteStatus") == "Write OK", sim.text("HDF1:WriteMessage")
    assert sim.get("HDF1:NumCaptured_RBV") == 2000
    assert frames_in_files(path) == (2000, 2000)
    for index, frame in seen:
        np.testing.assert_array_equal(frame, expected_frames(path, [index])[0])


def test_the_file_never_claims_a_frame_not_on_disk_during_a_capture(sim: Sim) -> None:
    sim.put("cam1:AcquirePeriod", 0.002)
    sim.put("cam1:NumImages", 3000)
    sim.start_capture()
    thread = stream_in_background(sim)
    path = sim.capture_file()
    looks = 0
    while thread.is_alive():
        with open_swmr(path) as f:
            extent = f[DATA_DATASET].shape[0]
            last = f[DATA_DATASET][extent - 1] if extent else None
        if last is not None:  # the last claimed frame is real, not a fill value
            np.testing.assert_array_equal(last, expected_frames(path, [extent - 1])[0])
            looks += 1
        time.sleep(0.05)
    sim.put("HDF1:Capture", "Done")
    assert looks >= 10
    assert frames_in_files(path) == (3000, 3000)


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.soak),
                                  pytest.param(3, marks=pytest.mark.soak)])
def test_killed_at_a_random_frame_the_files_agree(tmp_path: Path, spare_port: int, seed: int) -> None:
    die_after = random.Random(seed).randrange(20, 1200)
    # A prefix per seed: pyepics would otherwise wait out CA's search back-off for the channels
    # of the previous seed's dead IOC (seen: 25 s).
    prefix = f"KILL{seed}:"
    ioc = start_simulator(prefix, spare_port, [tmp_path], extra=("--fault", f"DieAfterFrames={die_after}"))
    try:
        sim = Sim(prefix)
        sim.reset(tmp_path, "killed")
        sim.put("sim:DieAfterFrames", die_after)  # reset cleared it
        sim.put("cam1:AcquirePeriod", 0.001)
        sim.put("cam1:NumImages", 5000)
        sim.start_capture()
        sim.put("cam1:Acquire", "Acquire", wait=False)
        assert ioc.process.wait(60) == -9  # SIGKILL, as kill -9
    finally:
        ioc.stop()
    master = tmp_path / "killed_000001.h5"
    extent, on_disk = frames_in_files(master)
    assert on_disk == die_after  # every frame delivered before the crash was flushed
    assert extent == on_disk  # every frame with its NDAttributes
    assert_claimed_frames_are_real(master, extent)


def _start(prefix: str, port: int, root: Path, *extra: str) -> SimulatorProcess:
    return start_simulator(prefix, port, [root], extra=extra)


def test_a_restarted_ioc_restores_its_settings_and_never_overwrites(tmp_path: Path,
                                                                     spare_port: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with _start("RST:", spare_port, root) as ioc:
        sim = Sim("RST:")
        sim.reset(root, "series")
        first = [sim.stream(2), sim.stream(2)]
        time.sleep(1.0)  # autosave's period
        ioc.stop(signal.SIGKILL)
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("series_*")}
    with _start("RST:", spare_port, root):
        sim = Sim("RST:")
        assert sim.get("HDF1:FileNumber_RBV") == 3
        assert sim.text("HDF1:FilePath_RBV") == f"{root}/"
        assert sim.text("HDF1:FileName_RBV") == "series"
        third = sim.stream(1)
        assert third.name == "series_000003.h5" and third not in first
        sim.put("HDF1:FileNumber", 1)  # a name already used: refused, not overwritten
        sim.put("HDF1:Capture", "Capture", wait=False)
        sim.put("cam1:Acquire", "Acquire", timeout=30)
        sim.put("HDF1:Capture", "Done")
        assert sim.text("HDF1:WriteStatus") == "Write error"
        assert "never overwrites" in sim.text("HDF1:WriteMessage")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_second_simulator_on_a_busy_port_is_refused(ioc: SimulatorProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "id3c_eiger_sim", "--port", str(ioc.port), "--data-root",
         str(tmp_path), "--no-autosave"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"port {ioc.port} on 127.0.0.1 is in use" in result.stderr
    assert "choose another --port" in result.stderr


def test_port_0_reports_the_port_it_bound(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "id3c_eiger_sim", "--port", "0", "--prefix", "ZERO:",
         "--data-root", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = ""
        deadline = time.monotonic() + 60
        while "EPICS_CA_ADDR_LIST" not in output and time.monotonic() < deadline:
            output += process.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)'", output).group(1))
        assert port != 0
        listening = {c.laddr.port for c in psutil.Process(process.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert port in listening
    finally:
        process.terminate()
        process.wait(20)


def test_non_finite_settings_are_refused_with_a_message(sim: Sim) -> None:
    for suffix in ("cam1:PhotonEnergy", "cam1:BeamX", "cam1:AcquireTime"):
        before = sim.get(suffix)
        sim.put(suffix, float("nan"))
        assert sim.get(suffix) == before
        assert "not a finite number" in sim.text("cam1:StatusMessage_RBV")
    assert frames_in_files(sim.stream(1)) == (1, 1)


def test_a_template_longer_than_the_record_is_refused_at_once(sim: Sim, ioc: SimulatorProcess) -> None:
    rss = psutil.Process(ioc.process.pid).memory_info().rss
    started = time.monotonic()
    sim.put("HDF1:FileTemplate", "%s%s_%100000000d.h5")
    assert time.monotonic() - started < 5
    assert "at most 511" in sim.text("HDF1:WriteMessage")
    sim.put("HDF1:Capture", "Capture", timeout=10)
    assert sim.text("HDF1:Capture_RBV") == "Done"
    assert psutil.Process(ioc.process.pid).memory_info().rss - rss < 20e6


def test_num_capture_at_its_maximum_costs_no_memory(sim: Sim, ioc: SimulatorProcess) -> None:
    sim.stream(1)  # warm: frame pools built
    rss = psutil.Process(ioc.process.pid).memory_info().rss
    sim.put("HDF1:NumCapture", 2**31 - 1)
    master = sim.stream(100)
    assert psutil.Process(ioc.process.pid).memory_info().rss - rss < 30e6
    assert frames_in_files(master) == (100, 100)


def test_a_directory_swapped_for_a_symlink_after_capture_leads_nowhere(sim: Sim) -> None:
    """The check and the write are apart in time (LazyOpen: files appear at the first frame);
    the directory checked is held open, so a symlink put in its place is never followed."""
    checked = sim.directory / "swap"
    checked.mkdir()
    sim.put("HDF1:FilePath", str(checked))
    sim.start_capture()
    outside = Path(tempfile.mkdtemp(prefix="not-a-root-"))
    checked.rename(sim.directory / "swap.orig")
    checked.symlink_to(outside, target_is_directory=True)
    sim.put("cam1:NumImages", 3)
    sim.put("cam1:Acquire", "Acquire")
    sim.put("HDF1:Capture", "Done")
    assert not any(outside.iterdir())
    (master,) = (sim.directory / "swap.orig").iterdir()
    assert frames_in_files(master) == (3, 3)
