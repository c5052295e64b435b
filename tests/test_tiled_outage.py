"""Tiled away mid-run (a standalone ``tiled serve`` process, killed and restarted): the plan is not
held up, the run is spooled with a warning naming the file and the fix, and once Tiled is back
the run is complete there, stop document and every frame, by ``replay`` or by the next run."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import bluesky.plans as bp
import numpy as np
import pytest

from helpers import CLASSIC, Sim, load_eiger2, master_frames, start_tiled
from id3c_eiger import cli
from id3c_eiger.catalog import master_files, open_catalog
from id3c_eiger.spool import RunSpooledWarning, replay

API_KEY = "secret"


class TiledProcess:
    """``tiled serve catalog`` on loopback, over one SQLite catalog that outlives restarts."""

    def __init__(self, directory: Path, readable: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.directory, self.readable = directory, readable
        self.process: subprocess.Popen | None = None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        database = self.directory / "catalog.db"
        arguments = ["serve", "catalog", str(database), "-w", str(self.directory / "writable"),
                     "-w", f"sqlite:///{self.directory / 'tables.db'}", "-r", str(self.readable),
                     "--api-key", API_KEY, "--port", str(self.port)]
        if not database.exists():
            arguments.append("--init")
        self.process = start_tiled(arguments, self.uri, self.directory / "server.log")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def tiled_server(tmp_path: Path, data_root: Path):
    server = TiledProcess(tmp_path / "tiled", data_root)
    server.directory.mkdir()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def remote(tmp_path: Path, sim: Sim, tiled_server):
    """(catalog, RE, spool directory, classic eiger2) writing to the standalone server."""
    from bluesky import RunEngine

    catalog = open_catalog(tiled_server.uri, api_key=API_KEY)
    RE = RunEngine({}, call_returns_result=False)
    catalog.subscribe(RE, spool_directory=tmp_path / "spool")
    yield catalog, RE, tmp_path / "spool", load_eiger2(CLASSIC, tmp_path, sim,
                                                          f"{sim.directory}/outage")
    catalog.close()


def test_tiled_killed_mid_run_loses_nothing(tiled_server, remote) -> None:
    catalog, RE, spool, eiger2 = remote

    def kill_tiled(name, doc):
        if name == "event" and doc["seq_num"] == 3:
            tiled_server.kill()

    started = time.monotonic()
    with pytest.warns(RunSpooledWarning) as warned:
        RE(bp.count([eiger2], num=6), kill_tiled)
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"the plan waited {elapsed:.1f} s for an absent Tiled"
    (spooled,) = spool.glob("*.jsonl")
    uid = spooled.stem
    # pytest.warns records every warning of the block: a garbage-collected zmq context of an
    # earlier test's may warn first (CI: "Unclosed context").
    (message,) = [str(w.message) for w in warned if issubclass(w.category, RunSpooledWarning)]
    assert uid in message and str(spooled) in message and "id3c-eiger replay" in message

    tiled_server.start()
    assert cli.main(["replay", "--tiled", tiled_server.uri, "--api-key", API_KEY,
                     "--spool", str(spool)]) == 0
    assert not list(spool.glob("*.jsonl"))
    assert replay(catalog.runs, spool) == []  # nothing left: a second replay writes nothing
    run = catalog.runs[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    images = run.primary["eiger2_image"]
    assert images.shape == (6, 512, 1028)
    (master,) = master_files(images)
    np.testing.assert_array_equal(images[5], master_frames(master)[5])


def test_the_next_run_replays_a_spooled_run(tiled_server, remote) -> None:
    catalog, RE, spool, eiger2 = remote
    tiled_server.kill()
    with pytest.warns(RunSpooledWarning):
        RE(bp.count([eiger2], num=3))
    (spooled,) = spool.glob("*.jsonl")
    tiled_server.start()
    (latest,) = RE(bp.count([eiger2], num=2))  # its start replays the spooled run first
    deadline = time.monotonic() + 30
    while list(spool.glob("*.jsonl")):
        assert time.monotonic() < deadline, "the spooled run was not replayed"
        time.sleep(0.2)
    assert catalog.runs[spooled.stem].primary["eiger2_image"].shape == (3, 512, 1028)
    assert catalog.runs[latest].primary["eiger2_image"].shape == (2, 512, 1028)
