"""``id3c-eiger demo``, the README's run-it command, as a user runs it: a fresh process that starts
the simulator and an embedded Tiled, counts, reads through Tiled, draws frame 0, runs the doctor,
and leaves no process behind, also when interrupted with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import psutil
import pytest

from helpers import Sim, expected_frames
from id3c_eiger.cli import EXIT_INTERRUPTED
from id3c_eiger.demo import DemoError, run_demo
from id3c_eiger.layout import DATA_DATASET, frame_images
from id3c_eiger.plotting import MASK_COLOUR

DEMO_TIMEOUT = 240.0  # s: generous for 2 loaded cores; the demo takes ~20 s here


def demo_command(directory: Path, points: int, exposure: float,
                 detector: str = "eiger2") -> list[str]:
    return [sys.executable, "-m", "id3c_eiger.cli", "demo", "--directory", str(directory),
            "--points", str(points), "--exposure", str(exposure), "--detector", detector]


def clean_environment() -> dict[str, str]:
    """This process's environment without the test session's EPICS settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}


def simulators_serving(directory: Path) -> list[psutil.Process]:
    """Simulator processes writing under ``directory`` (the demo's own)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "id3c_eiger_sim" in cmdline and str(directory / "data") in cmdline:
            found.append(process)
    return found


# Both flavours of devices.yml; the async demo (20 s) runs with `make benchmark`, not in CI's
# 15 minutes: tests/test_async_device.py and test_cross_host.py take that flavour end to end.
@pytest.mark.parametrize("detector", ["eiger2", pytest.param("eiger2_async",
                                                             marks=pytest.mark.soak)])
def test_demo_counts_reads_draws_and_diagnoses(tmp_path, detector) -> None:
    result = subprocess.run(demo_command(tmp_path, 3, 0.01, detector), capture_output=True,
                            text=True, env=clean_environment(), timeout=DEMO_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f'cat[-1].primary["{detector}_image"]: shape (3, 512, 1028)' in out
    doctor = [line.strip() for line in out.splitlines() if line.strip()[:4] in ("PASS", "FAIL")]
    assert len(doctor) == 15 and all(line.startswith("PASS") for line in doctor)
    assert any(line.startswith("PASS  DCU FileWriter") for line in doctor)  # file_writer source
    assert "Traceback" not in result.stderr
    assert "CA.Client.Exception" not in result.stderr  # libca's block, when the IOC stops
    # The picture is frame 0: 512 x 1028 inside the axes, masked pixels magenta.
    pixels = matplotlib.image.imread(tmp_path / f"{detector}_frame0.png")[..., :3]
    assert np.all(np.isclose(pixels, MASK_COLOUR, atol=0.02), axis=-1).sum() > 50
    masters = sorted((tmp_path / "data").rglob("*_master.h5"),
                     key=lambda m: int(m.name.removesuffix("_master.h5").rpartition("_")[2]))
    assert len(masters) == 3 and f"3 master files, one per point: {masters[0]} ..." in out
    master = masters[0]  # frame 0's
    expected = expected_frames(master, range(1))[0]
    with h5py.File(master, "r") as f:
        np.testing.assert_array_equal(frame_images(f[DATA_DATASET], 0), expected)
    assert not simulators_serving(tmp_path)


def test_ctrl_c_stops_the_run_and_the_simulator(tmp_path) -> None:
    demo = subprocess.Popen(demo_command(tmp_path, 500, 0.05), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_environment())
    lines: list[str] = []
    counting = threading.Event()

    def read_stdout() -> None:
        for line in demo.stdout:
            lines.append(line)
            if "running bp.count" in line:  # the count has begun
                counting.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        assert counting.wait(DEMO_TIMEOUT), f"the count did not begin: {''.join(lines)}"
        assert simulators_serving(tmp_path), "the demo's simulator should be running"
        time.sleep(2.0)
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(timeout=10)
    out, err = "".join(lines), demo.stderr.read()
    assert demo.returncode == EXIT_INTERRUPTED, err
    assert "interrupted; processes stopped" in err and "Traceback" not in err
    assert "Tiled and simulator stopped" in out
    assert not simulators_serving(tmp_path)


def test_bad_devices_file_is_one_line_before_anything_starts(tmp_path) -> None:
    devices = tmp_path / "devices.yml"
    devices.write_text("id3c_eiger.devices.Eiger2Detector: [\n")
    command = [sys.executable, "-m", "id3c_eiger.cli", "demo", "--directory",
               str(tmp_path / "demo"), "--devices", str(devices)]
    result = subprocess.run(command, capture_output=True, text=True, env=clean_environment(),
                            timeout=DEMO_TIMEOUT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "is not valid YAML" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_a_process_whose_channel_access_is_taken(sim: Sim, tmp_path) -> None:
    sim.get("cam1:Model_RBV")  # this process now has channels on the session's address list
    with pytest.raises(DemoError, match="fresh process"):
        run_demo(tmp_path)
    assert not list(tmp_path.iterdir())  # refused before making anything
