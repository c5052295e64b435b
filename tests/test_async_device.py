"""The ophyd-async EIGER2 from a devices file, against the simulator process over CA, through the
real TiledWriter into the embedded Tiled server: step scans, fly scans in each trigger mode,
progress, and the failure cases."""

from __future__ import annotations

from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
import h5py
import numpy as np
import pytest
from bluesky.utils import FailedStatus
from ophyd_async.core import DetectorTrigger, TriggerInfo, init_devices

from helpers import ASYNC, FASTEST_16BIT, Sim, expected_frames, load_eiger2, master_frames
from id3c_eiger.async_devices import AcquisitionTimeout
from id3c_eiger.catalog import master_files
from id3c_eiger.geometry import EIGER2_500K, TimingError
from id3c_eiger.layout import ND_ATTRIBUTES, is_ndfile, read_metadata
from id3c_eiger.paths import ReadPathError, WritePathError
from id3c_eiger.plans import fly_frames
from id3c_eiger.progress import show_frame_progress
from id3c_eiger.trigger_source import PulseTrain, SoftwareTriggerSource


def make_eiger2(tmp_path: Path, sim: Sim, write: str, read: str | None = None, **extra):
    """The ophyd-async ``eiger2`` of a devices file, loaded and connected by guarneri."""
    return load_eiger2(ASYNC, tmp_path, sim, write, read, **extra)


@pytest.fixture
def pulses(sim: Sim, RE) -> SoftwareTriggerSource:
    """The software trigger source of the simulator (its cam1:Trigger PV)."""
    with init_devices():
        source = SoftwareTriggerSource(sim.prefix)
    return source


def metadata(master: Path) -> dict:
    with h5py.File(master, "r") as f:
        return read_metadata(f)


def test_count_gives_the_classic_devices_key_and_shapes(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/%Y/%m/%d")
    RE(bp.count([eiger2], num=4))
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (4, 512, 1028)
    assert images.dtype == np.dtype(f"uint{sim.get('cam1:BitDepthImage_RBV')}")
    (master,) = master_files(images)
    assert master.parent == Path(eiger2.path_provider.last.read)
    with h5py.File(master, "r") as f:  # HDF1's single file, with the camera's NDAttributes
        assert is_ndfile(f) and f[f"{ND_ATTRIBUTES}/CountTime"].shape == (4,)
    on_disk = master_frames(master)
    assert on_disk.shape == (4, 512, 1028)
    np.testing.assert_array_equal(images[0], on_disk[0])
    np.testing.assert_array_equal(images[3], expected_frames(master, range(3, 4))[0])


def test_several_frames_per_point_add_an_axis(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/multi", images_per_point=3)
    RE(bp.count([eiger2], num=2))
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (2, 3, 512, 1028)
    (master,) = master_files(images)
    np.testing.assert_array_equal(images[1], master_frames(master)[3:6])


def test_internal_fly_scan_streams_every_frame_into_tiled(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/fly")
    documents = []
    RE(fly_frames(eiger2, TriggerInfo(number_of_events=1500, livetime=FASTEST_16BIT)),
       lambda name, doc: documents.append((name, doc)))
    datums = [doc for name, doc in documents if name == "stream_datum"]
    assert len(datums) > 1  # documents as frames land, not one at the end
    assert datums[-1]["indices"]["stop"] == 1500
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (1500, 512, 1028) and images.dtype == np.uint16
    (master,) = master_files(images)
    md = metadata(master)
    assert md["nimages"] == 1500 and md["bit_depth_image"] == 16
    assert md["frame_time"] == pytest.approx(EIGER2_500K.min_period_16bit)
    np.testing.assert_array_equal(images[1499], expected_frames(master, range(1499, 1500))[0])
    np.testing.assert_array_equal(images[700], master_frames(master)[700])


def test_external_edge_fly_scan_takes_one_frame_per_pulse(tmp_path, sim, RE, catalog,
                                                          pulses) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/edge")
    info = TriggerInfo(number_of_events=12, livetime=0.002, trigger=DetectorTrigger.EXTERNAL_EDGE)
    RE(fly_frames(eiger2, info, pulses, PulseTrain(number=12, period=0.02)))
    assert sim.text("cam1:TriggerMode_RBV") == "External Series"
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (12, 512, 1028)
    (master,) = master_files(images)
    assert metadata(master)["nimages"] == 12
    np.testing.assert_array_equal(images[11], expected_frames(master, range(11, 12))[0])


@pytest.mark.parametrize("mode", ["External Enable", "External Gate"])
def test_external_level_fly_scan_takes_one_frame_per_gate(tmp_path, sim, RE, catalog, pulses,
                                                          mode) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/level", level_trigger_mode=mode)
    info = TriggerInfo(number_of_events=6, trigger=DetectorTrigger.EXTERNAL_LEVEL)
    RE(fly_frames(eiger2, info, pulses, PulseTrain(number=6, period=0.03, gate=0.004)))
    assert sim.text("cam1:TriggerMode_RBV") == mode
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (6, 512, 1028)
    (master,) = master_files(images)
    np.testing.assert_array_equal(images[5], master_frames(master)[5])


def test_a_long_acquisition_draws_a_progress_bar(tmp_path, sim, RE, capsys) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/progress")
    show_frame_progress(RE)
    RE(fly_frames(eiger2, TriggerInfo(number_of_events=2000, livetime=FASTEST_16BIT)))
    out = capsys.readouterr().out
    assert "eiger2" in out and "/2000" in out and "frames/s" in out


@pytest.mark.parametrize(
    ("info", "named"),
    [
        (TriggerInfo(number_of_events=100, livetime=0.0003), "0.45 ms (2222 Hz)"),
        (TriggerInfo(number_of_events=100, livetime=0.001, deadtime=1e-6), "dead time of 3e-06"),
        (TriggerInfo(number_of_events=100), "livetime 0"),
        (TriggerInfo(number_of_events=0, livetime=0.001), "number_of_events 0"),
        (TriggerInfo(number_of_events=5, livetime=4000.0), "3600 s"),
    ],
)
def test_prepare_refuses_what_the_detector_cannot_do(tmp_path, sim, RE, info, named) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/refused")
    mode_before = sim.text("cam1:TriggerMode_RBV")
    sim.put("cam1:TriggerMode", "Continuous")

    def plan():
        yield from bps.stage(eiger2)
        yield from bps.prepare(eiger2, info, wait=True)

    with pytest.raises(FailedStatus) as err:
        RE(plan())
    assert isinstance(err.value.__cause__, TimingError)
    assert named in str(err.value.__cause__)
    assert sim.text("cam1:TriggerMode_RBV") == "Continuous"  # refused before any put
    sim.put("cam1:TriggerMode", mode_before)


def test_8bit_rates_need_allow_8bit(tmp_path, sim, RE, catalog) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/fast", allow_8bit=True)
    RE(fly_frames(eiger2, TriggerInfo(number_of_events=300, livetime=0.0003)))
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.dtype == np.uint8 and images.shape == (300, 512, 1028)
    (master,) = master_files(images)
    np.testing.assert_array_equal(images[299], master_frames(master)[299])


def test_missing_triggers_end_in_a_timeout_naming_the_frames(tmp_path, sim, RE, pulses) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/stall")
    info = TriggerInfo(number_of_events=5, livetime=0.002, trigger=DetectorTrigger.EXTERNAL_EDGE,
                       exposure_timeout=1.5)
    with pytest.raises(FailedStatus) as err:  # only 2 of the 5 pulses come
        RE(fly_frames(eiger2, info, pulses, PulseTrain(number=2, period=0.05)))
    cause = err.value.__cause__
    assert isinstance(cause, AcquisitionTimeout)
    assert "2 of 5 frames written" in str(cause) and "1.5 s" in str(cause)
    assert sim.text("cam1:DetectorState_RBV") != "Waiting"  # unstaged: disarmed


def test_stopping_a_fly_scan_leaves_a_consistent_master(tmp_path, sim, RE) -> None:
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/stopped")

    class Stop(Exception):
        pass

    @bpp.stage_decorator([eiger2])
    @bpp.run_decorator()
    def interrupted():
        yield from bps.prepare(eiger2, TriggerInfo(number_of_events=20_000, livetime=0.001),
                               wait=True)
        yield from bps.kickoff(eiger2, wait=True)
        yield from bps.sleep(0.8)
        raise Stop

    with pytest.raises(Stop):
        RE(interrupted())
    master = Path(sim.text("HDF1:FullFileName_RBV"))
    captured = sim.get("HDF1:NumCaptured_RBV")
    assert 0 < captured < 20_000
    frames = master_frames(master)
    assert frames.shape[0] == captured  # the master reaches the frames written, no more
    np.testing.assert_array_equal(frames[-1], expected_frames(master, range(captured - 1, captured))[0])


def test_write_path_the_ioc_refuses_fails_in_prepare(tmp_path, sim, RE) -> None:
    eiger2 = make_eiger2(tmp_path, sim, "/outside/every/data/root/", str(sim.directory))
    with pytest.raises(FailedStatus) as err:
        RE(bp.count([eiger2], num=1))
    cause = err.value.__cause__
    assert isinstance(cause, WritePathError)
    assert "/outside/every/data/root/" in str(cause) and "write_path_template" in str(cause)


def test_read_path_of_another_directory_fails_after_the_first_point(tmp_path, sim, RE) -> None:
    """A read template naming an existing directory that is not the IOC's: the run stops at its
    first point with the named error itself, rather than recording frames nobody can read."""
    elsewhere = tmp_path / "not-the-iocs-directory"
    elsewhere.mkdir()
    before = sim.get("cam1:ArrayCounter_RBV")
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/w2", str(elsewhere))
    with pytest.raises(ReadPathError) as err:
        RE(bp.count([eiger2], num=5))
    assert str(elsewhere) in str(err.value) and f"{sim.directory}/w2/" in str(err.value)
    assert "read_path_template" in str(err.value)
    assert sim.get("cam1:ArrayCounter_RBV") - before == 1  # stopped after the first point


def test_read_path_missing_here_fails_before_exposure(tmp_path, sim, RE) -> None:
    before = sim.get("cam1:ArrayCounter_RBV")
    eiger2 = make_eiger2(tmp_path, sim, f"{sim.directory}/w", "/nonexistent/reader/mount/")
    with pytest.raises(ReadPathError) as err:  # itself, not inside bluesky's FailedStatus
        RE(bp.count([eiger2], num=1))
    assert "/nonexistent/reader/mount/" in str(err.value) and "read_path_template" in str(err.value)
    assert sim.get("cam1:ArrayCounter_RBV") == before
    assert sim.text("HDF1:Capture_RBV") == "Done"
