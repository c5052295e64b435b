"""A pytest plugin for packages that test plans against the simulated EIGER2 (entry point
``pytest11``: installed with id3c-eiger, active once asked for).

Ask for it with ``--eiger-simulators N`` or ``eiger_simulators = N`` in the ini file: before any
conftest is imported, the plugin reserves N free loopback ports and points Channel Access there
(libca reads ``EPICS_CA_ADDR_LIST`` once, when it loads), refusing with the fix if a CA library
was loaded first. Fixtures:

- ``eiger_simulator``: one simulated EIGER2 IOC for the session (a process, prefix ``EIGSIM1:``,
  its own data root);
- ``eiger_simulator_factory``: ``start(prefix=None)`` for more, up to N at once;
- ``eiger_beamline``: a RunEngine, the devices of a devices file (``eiger_devices_file``: the
  packaged one by default) pointed at ``eiger_simulator``, and an embedded Tiled server fed by
  TiledWriter;
- ``eiger_mock`` (no simulator, no option needed): a RunEngine and the ophyd-async EIGER2 with
  mocked signals (``id3c_eiger.testing.mock_eiger2``), for fast tests of plan logic.

Every simulator is stopped at the end of the session, and with the session's process if it is
killed. Without the option the plugin does nothing, so sessions that talk to real IOCs are
untouched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

OPTION = "eiger_simulators"
PORTS_VARIABLE = "ID3C_EIGER_TEST_PORTS"  # the ports this session reserved, for its fixtures


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("id3c-eiger", "simulated EIGER2 IOCs (id3c-eiger)")
    group.addoption("--eiger-simulators", type=int, default=None, metavar="N",
                    help="reserve N Channel Access ports for simulated EIGER2 IOCs and point "
                    "EPICS_CA_ADDR_LIST at them (enables the eiger_* fixtures)")
    parser.addini(OPTION, "simulated EIGER2 IOCs this session may run (0: plugin off)",
                  default="0")


def _requested(config: pytest.Config) -> int:
    """N from the command line, else the ini file."""
    given = getattr(config.known_args_namespace, OPTION, None)
    if given is None:
        given = int(config.getini(OPTION) or 0)
    if given < 0:
        raise pytest.UsageError(f"--eiger-simulators {given}: give a number of IOCs, at least 0")
    return given


def _ca_library_loaded() -> str | None:
    """The CA client library already loaded in this process, if any."""
    epics = sys.modules.get("epics.ca")
    if epics is not None and getattr(epics, "libca", None) is not None:
        return "pyepics (libca)"
    if "aioca" in sys.modules:
        return "aioca (libca)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    """Before any conftest imports a CA library: reserve the ports and set the CA variables."""
    count = _requested(early_config)
    if not count:
        return
    loaded = _ca_library_loaded()
    if loaded:
        raise pytest.UsageError(
            f"--eiger-simulators: {loaded} was loaded before the plugin could set "
            "EPICS_CA_ADDR_LIST (libca reads it once). Fix: do not import ophyd, pyepics or "
            "aioca at the top of a module pytest loads before conftest (a plugin of your own), "
            "or set EPICS_CA_ADDR_LIST yourself")
    from id3c_eiger_sim.process import client_environment, free_port

    ports = [free_port() for _ in range(count)]
    os.environ.update(client_environment(ports[0]))
    os.environ["EPICS_CA_ADDR_LIST"] = " ".join(f"127.0.0.1:{port}" for port in ports)
    os.environ[PORTS_VARIABLE] = " ".join(map(str, ports))


def _reserved_ports(config: pytest.Config) -> list[int]:
    ports = [int(p) for p in os.environ.get(PORTS_VARIABLE, "").split()]
    if not ports or not _requested(config):
        raise pytest.UsageError(
            "the eiger_* fixtures need Channel Access ports reserved before libca loads. Fix: "
            "run pytest with --eiger-simulators N, or put 'eiger_simulators = N' in the "
            "[pytest] ini section (N: simulators running at once)")
    return ports


@pytest.fixture(scope="session")
def eiger_simulator_factory(pytestconfig: pytest.Config,
                            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable]:
    """``start(prefix=None, data_root=None)``: one more simulated EIGER2 IOC on a reserved port
    (prefix ``EIGSIM<n>:`` by default, a new data root); all stop when the session ends."""
    from id3c_eiger_sim.process import start_simulator

    free = _reserved_ports(pytestconfig)
    running = []

    def start(prefix: str | None = None, data_root: Path | None = None) -> Any:
        if not free:
            raise pytest.UsageError(
                f"all {len(running)} reserved simulator ports are in use; raise "
                "--eiger-simulators (or eiger_simulators in the ini file)")
        number = len(running) + 1
        root = data_root or tmp_path_factory.mktemp(f"eiger-data-{number}")
        process = start_simulator(prefix or f"EIGSIM{number}:", free.pop(0), [root])
        running.append(process)
        return process

    yield start
    for process in running:
        process.stop()


@pytest.fixture(scope="session")
def eiger_simulator(eiger_simulator_factory: Callable) -> Any:
    """The session's simulated EIGER2 IOC (``.prefix``, ``.port``, ``.roots``)."""
    return eiger_simulator_factory()


@pytest.fixture(scope="session")
def eiger_devices_file() -> Path:
    """The devices file ``eiger_beamline`` loads (override this fixture for your own)."""
    from id3c_eiger.config import find_devices_file

    return find_devices_file()


@dataclass
class Beamline:
    """What a plan test needs: ``RE``, ``devices`` by name, the Tiled ``catalog``."""

    RE: Any
    devices: Any
    catalog: Any
    data_root: Path


@pytest.fixture
def eiger_beamline(eiger_simulator: Any, eiger_devices_file: Path,
                   tmp_path: Path) -> Iterator[Beamline]:
    """A RunEngine subscribed to an embedded Tiled server, and every device of
    ``eiger_devices_file`` pointed at ``eiger_simulator`` (its prefix, its data root)."""
    from bluesky import RunEngine

    from id3c_eiger.catalog import open_catalog
    from id3c_eiger.config import load_devices

    root = eiger_simulator.roots[0]
    (root / tmp_path.name).mkdir(exist_ok=True)  # the test's own; the IOC makes the date levels
    template = f"{root}/{tmp_path.name}/%Y/%m/%d/"
    RE = RunEngine({}, call_returns_result=False)  # first: ophyd-async connects in its loop
    devices = load_devices(eiger_devices_file, prefix=eiger_simulator.prefix,
                           write_path_template=template, read_path_template=template).devices
    with open_catalog(readable_storage=[root], directory=tmp_path / "tiled") as catalog:
        catalog.subscribe(RE, spool_directory=tmp_path / "spool")
        yield Beamline(RE, devices, catalog, root)
        catalog.unsubscribe(RE)


@pytest.fixture
def eiger_mock(tmp_path: Path) -> Beamline:
    """A RunEngine and ``devices["eiger2"]``: the ophyd-async EIGER2 with mocked signals that
    stage, count and write files of zeros into ``data_root``; no IOC, no Tiled."""
    from bluesky import RunEngine
    from bluesky.run_engine import call_in_bluesky_event_loop

    from id3c_eiger.testing import mock_eiger2

    RE = RunEngine({}, call_returns_result=False)
    data_root = tmp_path / "mock-data"
    data_root.mkdir()
    eiger2 = call_in_bluesky_event_loop(mock_eiger2(data_root))
    return Beamline(RE, {"eiger2": eiger2}, None, data_root)
