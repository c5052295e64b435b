"""Session fixtures: the simulator as a separate process, reached over real Channel Access.

libca reads its address list once, so the ports of every simulator the session may start are
chosen here, before anything imports pyepics.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import IOC_VIEW, Sim
from id3c_eiger_sim.process import SimulatorProcess, free_port, start_simulator

PORTS = {"main": free_port(), "spare": free_port()}
os.environ["EPICS_CA_ADDR_LIST"] = " ".join(f"127.0.0.1:{p}" for p in PORTS.values())
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
os.environ.setdefault("EPICS_CA_MAX_ARRAY_BYTES", "10000000")
# Tiled's client retries a failed read for up to 45 s; the failure tests want the error now.
os.environ.setdefault("TILED_RETRY_ATTEMPTS", "1")

# ophyd installs its PV class into pyepics when imported; import it before any PV exists so
# every PV of the session (ours and ophyd's, sharing pyepics' cache) is of that class.
import ophyd  # noqa: E402, F401


@pytest.fixture(scope="session", autouse=True)
def ca_repeater():
    """A CA repeater, as every beamline host runs: it passes a restarted IOC's beacons to the
    clients, which then find it at once instead of after their search back-off. Exits at once
    if this host already has one."""
    process = subprocess.Popen([Path(sys.executable).with_name("caproto-repeater")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The main simulator's only data root."""
    return tmp_path_factory.mktemp("data-root")


@pytest.fixture(scope="session")
def ioc(data_root: Path) -> SimulatorProcess:
    """The main simulator, prefix ``SIMT:``, for the whole session."""
    process = start_simulator("SIMT:", PORTS["main"], [data_root])
    yield process
    process.stop()


@pytest.fixture
def sim(ioc: SimulatorProcess, data_root: Path, request: pytest.FixtureRequest) -> Sim:
    """A client of the main simulator, reset to known settings and a fresh directory."""
    client = Sim(ioc.prefix)
    # Unique per test, parameters included (cut at 60 characters, they would collide).
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"{re.sub(r'[^A-Za-z0-9_]', '_', request.node.name)[:51]}_{digest}"
    directory = data_root / name
    directory.mkdir(exist_ok=True)
    client.reset(directory, name)
    return client


@pytest.fixture
def spare_port() -> int:
    """The pre-registered port for a test's own short-lived simulator."""
    return PORTS["spare"]


_IOC_HOSTS = itertools.count(1)


@pytest.fixture
def ioc_host(data_root: Path, spare_port: int):
    """(client, the share as this host sees it) of a simulator on its own 'host': a private
    mount namespace where the share is ``IOC_VIEW`` and this host's path to it shows nothing."""
    share = data_root / "gdata-3idc-eiger"
    (share / "reset").mkdir(parents=True, exist_ok=True)
    # A prefix of its own each time: libca may still be searching, in its back-off, for the
    # channels of an earlier simulator of this fixture (CI: not connected within 30 s).
    prefix = f"XHOST{next(_IOC_HOSTS)}:"
    with start_simulator(prefix, spare_port, [IOC_VIEW], ioc_host=(share, IOC_VIEW)):
        sim = Sim(prefix)
        sim.reset(IOC_VIEW / "reset", "xhost")
        sim.directory = share / "reset"  # where this host finds what the IOC wrote there
        yield sim, share


@pytest.fixture(scope="session")
def alias_root(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second path to the data root, as a reader host mounting the IOC's share elsewhere."""
    alias = tmp_path_factory.mktemp("reader-mount") / "eiger"
    alias.symlink_to(data_root, target_is_directory=True)
    return alias


@pytest.fixture(scope="session")
def catalog(data_root: Path, alias_root: Path):
    """An embedded Tiled server that may read the data root by both of its paths."""
    from id3c_eiger.catalog import open_catalog

    with open_catalog(readable_storage=[data_root, alias_root]) as cat:
        yield cat


@pytest.fixture
def RE(catalog, tmp_path_factory: pytest.TempPathFactory):
    """A RunEngine whose documents go to the embedded Tiled server through TiledWriter (behind a
    spool of the test's own)."""
    from bluesky import RunEngine

    engine = RunEngine({}, call_returns_result=False)
    catalog.subscribe(engine, spool_directory=tmp_path_factory.mktemp("spool"))
    yield engine
    catalog.unsubscribe(engine)
