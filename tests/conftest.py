"""Session fixtures: the simulator as a separate process, reached over real Channel Access.

libca reads its address list once, so the ports of every simulator the session may start are
chosen here, before anything imports pyepics.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import IocProcess, Sim, free_port, start_ioc

PORTS = {"main": free_port(), "spare": free_port()}
os.environ["EPICS_CA_ADDR_LIST"] = " ".join(f"127.0.0.1:{p}" for p in PORTS.values())
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
os.environ.setdefault("EPICS_CA_MAX_ARRAY_BYTES", "10000000")

# ophyd installs its PV class into pyepics when imported; import it before any PV exists so
# every PV of the session (ours and ophyd's, sharing pyepics' cache) is of that class.
import ophyd  # noqa: E402, F401


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The main simulator's only data root."""
    return tmp_path_factory.mktemp("data-root")


@pytest.fixture(scope="session")
def ioc(data_root: Path) -> IocProcess:
    """The main simulator, prefix ``SIMT:``, for the whole session."""
    process = start_ioc("SIMT:", PORTS["main"], [data_root])
    yield process
    process.stop()


@pytest.fixture
def sim(ioc: IocProcess, data_root: Path, request: pytest.FixtureRequest) -> Sim:
    """A client of the main simulator, reset to known settings and a fresh directory."""
    client = Sim(ioc.prefix)
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60]
    directory = data_root / name
    directory.mkdir(exist_ok=True)
    client.reset(directory, name)
    client.directory = directory
    return client


@pytest.fixture
def spare_port() -> int:
    """The pre-registered port for a test's own short-lived simulator."""
    return PORTS["spare"]
