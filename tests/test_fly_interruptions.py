"""A 20-second fly scan interrupted as a user does (one Ctrl-C, RE.request_pause, then stop or
abort or resume): the detector stops within a second, and the run in Tiled holds exactly the
frames in the files."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import h5py
import pytest
from bluesky.utils import RunEngineInterrupted
from ophyd_async.core import TriggerInfo

from helpers import ASYNC, Sim, load_eiger2
from id3c_eiger.async_devices import FlyScanInterrupted
from id3c_eiger.catalog import master_files
from id3c_eiger.layout import DATA_DATASET
from id3c_eiger.plans import fly_frames

STOP_GOAL = 1.0  # s from the request to the detector no longer acquiring (the goal)


def interrupt_after(delay: float, how: str, RE, sim: Sim, took: list[float]) -> threading.Thread:
    """After ``delay`` s: one Ctrl-C (SIGINT to this process) or an immediate pause; records the
    seconds until the detector stopped acquiring."""

    def act() -> None:
        time.sleep(delay)
        started = time.monotonic()
        if how == "ctrl-c":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            RE.request_pause(defer=False)
        while sim.text("cam1:DetectorState_RBV") == "Acquire":
            if time.monotonic() - started > 10:
                break
            time.sleep(0.01)
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how, then", [("ctrl-c", "stop"), ("pause", "abort"),
                                       ("pause", "resume")])
def test_an_interrupted_fly_scan_stops_at_once_and_keeps_every_frame(tmp_path, sim, RE, catalog,
                                                                     how, then) -> None:
    eiger2 = load_eiger2(ASYNC, tmp_path, sim, f"{sim.directory}/fly")
    took: list[float] = []
    thread = interrupt_after(1.5, how, RE, sim, took)
    with pytest.raises(RunEngineInterrupted):
        RE(fly_frames(eiger2, TriggerInfo(number_of_events=20_000, livetime=0.001)))
    thread.join(15)
    assert took and took[0] < STOP_GOAL, f"the detector stopped {took} s after the request"
    if then == "resume":
        with pytest.raises(Exception) as raised:
            RE.resume()
        assert isinstance(raised.value.__cause__ or raised.value, FlyScanInterrupted)
    else:
        getattr(RE, then)()
    run = catalog.runs[-1]
    # bluesky's meanings: stop ends a run as planned, abort as aborted; a resumed one failed.
    expected = {"stop": "success", "abort": "abort", "resume": "fail"}[then]
    assert run.metadata["stop"]["exit_status"] == expected
    images = run.primary["eiger2_image"]
    (master,) = master_files(images)
    captured = sim.get("HDF1:NumCaptured_RBV")
    with h5py.File(master, "r", swmr=True) as f:
        in_master = f[DATA_DATASET].shape[0]
    assert 0 < captured < 20_000
    assert images.shape[0] == captured == in_master
    assert Path(master).exists()
