"""Both device flavours under the simulator's faults, through RunEngine, TiledWriter and Tiled: a
plan that lost frames never ends in success, the first cause is the IOC's own message, and what
was kept agrees everywhere (frames on disk = in the master = in Tiled). The next plan in the same
session works."""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky.utils import FailedStatus

from helpers import ASYNC, CLASSIC, Sim, expected_frames, load_eiger2
from id3c_eiger.catalog import master_files
from id3c_eiger.health import DetectorError, DetectorNotResponding, DetectorWriteError
from id3c_eiger.layout import DATA_DATASET, ND_ATTRIBUTES
from id3c_eiger_sim.process import start_simulator

FLAVOURS = [pytest.param(CLASSIC, id="classic"), pytest.param(ASYNC, id="async")]
FRAME_BYTES_16 = 512 * 1028 * 2


def first_cause(error: BaseException) -> BaseException:
    """The device's exception behind the RunEngine's FailedStatus."""
    return error.__cause__ if isinstance(error, FailedStatus) else error


def kept(path: Path) -> tuple[int, int]:
    """(frames in HDF1's file, frames with their NDAttributes in it)."""
    with h5py.File(path, "r", swmr=True) as f:
        return f[DATA_DATASET].shape[0], f[f"{ND_ATTRIBUTES}/NDArrayUniqueId"].shape[0]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_disk_full_mid_count_ends_in_a_named_write_error(flavour, tmp_path, sim, RE, catalog) -> None:
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/full", compression="None")
    sim.put("sim:DiskFullAfterBytes", int(3.5 * FRAME_BYTES_16))
    with pytest.raises(Exception) as raised:
        RE(bp.count([eiger2], num=8))
    error = first_cause(raised.value)
    assert isinstance(error, DetectorWriteError), repr(error)
    assert "No space left on device" in str(error) and "3 of 4 frames" in str(error)
    run = catalog.runs[-1]
    assert run.metadata["stop"]["exit_status"] == "fail"
    images = run.primary["eiger2_image"]
    (master,) = master_files(images)
    assert master.name in str(error)
    assert kept(master) == (3, 3) and images.shape[0] == 3  # disk = file = Tiled
    assert (images[2] == expected_frames(master, range(2, 3))[0]).all()
    sim.put("sim:DiskFullAfterBytes", 0)  # space freed: the same session goes on
    RE(bp.count([eiger2], num=2))
    assert catalog.runs[-1].primary["eiger2_image"].shape == (2, 512, 1028)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_refused_setting_is_named_by_the_iocs_own_message(flavour, tmp_path, sim, RE,
                                                            catalog) -> None:
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/jpeg", compression="JPEG")
    runs_before = len(catalog.runs)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        RE(bp.count([eiger2], num=3))
    error = first_cause(raised.value)
    assert isinstance(error, DetectorError), repr(error)
    assert "Compression JPEG is not supported" in str(error)
    assert "StatusMessage_RBV" in str(error)
    assert time.monotonic() - started < 15
    if flavour == CLASSIC:  # armed once at stage: refused before the run opens
        assert len(catalog.runs) == runs_before
    else:  # armed at the first point: the run is recorded failed
        run = catalog.runs[-1]  # no frame was taken, and none is claimed anywhere
        assert run.metadata["stop"]["exit_status"] == "fail"
        assert "primary" not in run or run.primary["eiger2_image"].shape[0] == 0
    assert not list((sim.directory / "jpeg").glob("*_data_*.h5"))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_step_scan_arms_once_and_a_stop_from_a_panel_fails_it_keeping_every_frame(
        flavour, tmp_path, sim, RE, catalog) -> None:
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/panel")
    arms = sim.get("cam1:SequenceId")  # moves on at every arm
    RE(bp.count([eiger2], num=4))
    assert sim.get("cam1:SequenceId") == arms + 1  # one arm, a cam1:Trigger per point
    assert catalog.runs[-1].primary["eiger2_image"].shape == (4, 512, 1028)

    def stop_after_the_third(name: str, doc: dict) -> None:
        if name == "event" and doc["seq_num"] == 3:
            sim.put("cam1:Acquire", "Done")  # someone presses Stop on a panel
            time.sleep(0.3)  # the device hears of it before the next point, not during it

    with pytest.raises(Exception) as raised:
        RE(bp.count([eiger2], num=20), stop_after_the_third)
    error = first_cause(raised.value)
    assert isinstance(error, DetectorError), repr(error)
    assert "stopped acquiring in the middle of the scan" in str(error)
    run = catalog.runs[-1]
    assert run.metadata["stop"]["exit_status"] == "fail"
    images = run.primary["eiger2_image"]
    (master,) = master_files(images)
    assert kept(master) == (3, 3) and images.shape[0] == 3  # disk = file = Tiled
    RE(bp.count([eiger2], num=2))  # the next plan arms again
    assert catalog.runs[-1].primary["eiger2_image"].shape == (2, 512, 1028)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_scan_longer_than_an_arm_arms_again_and_keeps_every_frame(
        flavour, tmp_path, sim, RE, catalog, monkeypatch) -> None:
    module = "id3c_eiger.devices" if flavour == CLASSIC else "id3c_eiger.async_devices"
    monkeypatch.setattr(f"{module}.ARMED_TRIGGERS", 3)  # 100,000 at the beamline
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/rearm")
    arms = sim.get("cam1:SequenceId")
    RE(bp.count([eiger2], num=7))
    assert sim.get("cam1:SequenceId") == arms + 3  # points 1-3, 4-6, 7
    run = catalog.runs[-1]
    assert run.metadata["stop"]["exit_status"] == "success"
    images = run.primary["eiger2_image"]
    (master,) = master_files(images)
    assert kept(master) == (7, 7) and images.shape[0] == 7  # disk = file = Tiled
    np.testing.assert_array_equal(images[6], expected_frames(master, range(6, 7))[0])
    frames = expected_frames(master, range(7))  # each point's numbers are its own frame's
    np.testing.assert_allclose(run.primary[eiger2.stats1.total.name].read(),
                               [f.astype(np.float64).sum() for f in frames], rtol=1e-12)


_LONELY_IOCS = itertools.count(1)


@pytest.fixture
def lonely_ioc(tmp_path: Path, spare_port: int, data_root: Path):
    """(process, root, client) of a simulator of the test's own, which the test may kill or stop;
    its root lies in the session's data root, so the embedded Tiled serves its frames."""
    # A prefix of its own each time (DIE1:, DIE2:, ...): libca keeps searching, in its back-off,
    # for the channels of the previous test's killed simulator, and a device reusing those
    # names may not connect within its timeout (CI: one signal of the classic device).
    prefix = f"DIE{next(_LONELY_IOCS)}:"
    root = data_root / f"lonely-{tmp_path.name}"
    root.mkdir()
    process = start_simulator(prefix, spare_port, [root])
    yield process, root, Sim(prefix)
    if process.process.poll() is None:
        process.process.send_signal(signal.SIGCONT)
    process.stop()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_killed_ioc_is_named_and_the_next_plan_works_once_it_is_back(
        flavour, tmp_path, lonely_ioc, spare_port, RE, catalog) -> None:
    _, root, sim = lonely_ioc
    sim.reset(root, "unused")
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{root}/run")
    sim.put("sim:DieAfterFrames", 3)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        RE(bp.count([eiger2], num=6))
    elapsed = time.monotonic() - started
    error = first_cause(raised.value)
    assert isinstance(error, DetectorNotResponding), repr(error)
    assert sim.prefix in str(error) and "stopped answering" in str(error)
    assert elapsed < 30, f"{elapsed:.1f} s to the error"
    run = catalog.runs[-1]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert run.primary["eiger2_image"].shape[0] == 3  # the points the IOC confirmed
    (path,) = root.glob("run/*.h5")
    assert kept(path) == (3, 3)  # the fourth frame never came; each kept one whole
    restarted = start_simulator(sim.prefix, spare_port, [root])
    try:
        RE(bp.count([eiger2], num=2))
        assert catalog.runs[-1].metadata["stop"]["exit_status"] == "success"
        assert catalog.runs[-1].primary["eiger2_image"].shape == (2, 512, 1028)
    finally:
        restarted.stop()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_frozen_ioc_ends_the_plan_in_bounded_time(flavour, tmp_path, lonely_ioc, RE,
                                                    catalog) -> None:
    """SIGSTOP: the IOC's sockets stay open but nothing answers. The run claims only the point
    the IOC confirmed before it froze, and that frame is the file's."""
    ioc, root, sim = lonely_ioc
    sim.reset(root, "unused")
    sim.put("cam1:AcquireTime", 0.05)
    sim.put("cam1:AcquirePeriod", 0.05)
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{root}/frozen")

    def freeze(name, doc):
        if name == "event":
            ioc.process.send_signal(signal.SIGSTOP)

    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        RE(bp.count([eiger2], num=5), freeze)
    elapsed = time.monotonic() - started
    error = first_cause(raised.value)
    assert isinstance(error, DetectorNotResponding), repr(error)  # not a stall: the IOC is silent
    assert sim.prefix in str(error)
    assert elapsed < 45, f"{elapsed:.1f} s to the error"
    run = catalog.runs[-1]
    assert run.metadata["stop"]["exit_status"] == "fail"
    images = run.primary["eiger2_image"]
    assert images.shape[0] == 1  # the point before the freeze, and nothing it did not confirm
    ioc.process.send_signal(signal.SIGCONT)
    (path,) = root.glob("frozen/*.h5")
    assert kept(path)[0] >= 1  # the thawed IOC may still add the frame it was taking
    np.testing.assert_array_equal(images[0], expected_frames(path, range(1))[0])
    sim.put("cam1:Acquire", "Done")
    RE(bp.count([eiger2], num=1))
    assert catalog.runs[-1].primary["eiger2_image"].shape == (1, 512, 1028)
