"""The package as a wheel installs it, away from this checkout: the devices file ships inside it,
``$ID3C_EIGER_DEVICES`` names a site's own, and the demo and the doctor run from the install."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_demo import DEMO_TIMEOUT, clean_environment

from helpers import CLASSIC

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The wheel of this checkout, installed without dependencies (this venv has them) into a
    directory of its own, which ``PYTHONPATH`` puts before the checkout's editable install."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, timeout=300)
    site = out / "site"
    (wheel,) = out.glob("id3c_eiger-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, timeout=300)
    return site


def from_wheel(site: Path, cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """``python argv...`` with the installed wheel first on the path, outside the checkout."""
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                          env={**clean_environment(), "PYTHONPATH": str(site), **env},
                          timeout=DEMO_TIMEOUT)


def test_the_wheel_ships_the_devices_file(wheel_site, tmp_path) -> None:
    result = from_wheel(wheel_site, tmp_path, "-c",
                        "import id3c_eiger.config as c; print(c.__file__); "
                        "print(c.find_devices_file())")
    module, devices = result.stdout.split()
    assert Path(module).is_relative_to(wheel_site)  # the installed copy, not the checkout's
    assert Path(devices) == wheel_site / "id3c_eiger" / "configs" / "devices.yml"
    assert yaml.safe_load(Path(devices).read_text())[CLASSIC][0]["name"] == "eiger2"


def test_the_demo_runs_from_the_wheel(wheel_site, tmp_path) -> None:
    result = from_wheel(wheel_site, tmp_path, "-m", "id3c_eiger.cli", "demo", "--directory",
                        str(tmp_path / "demo"), "--points", "1", "--exposure", "0.01")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PASS  devices file" in result.stdout and "PASS  Tiled frame 0" in result.stdout


def test_a_sites_devices_file_by_environment_variable(wheel_site, tmp_path) -> None:
    """The doctor reads $ID3C_EIGER_DEVICES when no --devices is given: the site's prefix is
    the one it asks for (no IOC answers it here)."""
    site_file = tmp_path / "site-devices.yml"
    shipped = yaml.safe_load((wheel_site / "id3c_eiger/configs/devices.yml").read_text())
    shipped[CLASSIC][0]["prefix"] = "SITE7:"
    site_file.write_text(yaml.safe_dump(shipped))
    result = from_wheel(wheel_site, tmp_path, "-m", "id3c_eiger.cli", "doctor", "--timeout", "0.5",
                        ID3C_EIGER_DEVICES=str(site_file), EPICS_CA_ADDR_LIST="127.0.0.1:9",
                        EPICS_CA_AUTO_ADDR_LIST="NO")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("PASS  devices file: eiger2") and "'SITE7:'" in lines[0]
    assert lines[1].startswith("FAIL  IOC answers") and result.returncode == 1


READY_TIMEOUT = 120.0  # s: make may first bring the venv up to date, then the IOC starts


def _ready_line(process: subprocess.Popen, timeout: float) -> str:
    """The simulator's ready line, read within ``timeout`` (TimeoutError with what it printed
    otherwise)."""
    import selectors

    seen: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while selector.select(timeout=max(deadline - time.monotonic(), 0)):
            line = process.stdout.readline()
            if not line:  # make ended
                break
            seen.append(line)
            if "ready:" in line:
                return line
    raise TimeoutError(f"make sim printed no ready line in {timeout:g} s: {''.join(seen)[-2000:]}")


def test_make_sim_takes_prefix_port_and_data_root(tmp_path) -> None:
    """``make sim PREFIX=... PORT=...``: the simulator says it serves them, and answers there."""
    import signal

    from id3c_eiger_sim.process import free_port

    port = free_port()
    command = ["make", "-s", "-C", str(ROOT), "sim", "PREFIX=MK15:", f"PORT={port}",
               "PVA_PORT=0", f"DATA_ROOT={tmp_path}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=clean_environment(), start_new_session=True)
    try:
        ready = _ready_line(process, READY_TIMEOUT)
        assert "ready: prefix=MK15:" in ready and str(tmp_path) in ready, ready
        assert f"127.0.0.1:{port}" in process.stdout.readline()  # printed with the ready line
        answer = subprocess.run(
            [sys.executable, "-c", "import epics; print(epics.caget('MK15:cam1:Model_RBV', "
             "as_string=True, timeout=5))"], capture_output=True, text=True, timeout=60,
            env={**clean_environment(), "EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}",
                 "EPICS_CA_AUTO_ADDR_LIST": "NO"})
        assert answer.stdout.strip() == "EIGER2 Si 500K", answer.stderr
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
