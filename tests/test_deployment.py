"""The deployed Tiled server, for real: PostgreSQL 15 from Debian's packages on loopback, a
``tiled serve config`` process with the configuration ``id3c-eiger tiled-config`` generates.
Across hosts (the IOC in its own mount namespace) both devices count and the async one flies
2000 frames through it, read back equal to the generator's frames and PASSed by the doctor, and
every run still reads after PostgreSQL and Tiled restart. The doctor names the server down, a
wrong API key, the catalog database down, a run outside the server's storage and a server
without the kit's tree (Tiled's stock adapter), each fixed and PASSing again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bluesky.plans as bp
import numpy as np
import pytest
import yaml

from helpers import (
    API_KEY,
    ASYNC,
    CLASSIC,
    FASTEST_16BIT,
    IOC_VIEW,
    PostgresServer,
    Sim,
    TiledService,
    expected_frames,
    load_eiger2,
)
from id3c_eiger import cli
from id3c_eiger.catalog import (
    Catalog,
    TiledCatalogDown,
    TiledKeyRefused,
    TiledUnreachable,
    master_files,
    open_catalog,
)
from id3c_eiger.deploy import TREE
from id3c_eiger.doctor import check_chain, check_tiled
from id3c_eiger_sim.process import free_port


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, data_root: Path, ioc):
    """PostgreSQL and the Tiled server configured by ``id3c-eiger tiled-config`` from a devices
    file whose read root is the simulator's data root: (postgres, tiled, devices file)."""
    base = tmp_path_factory.mktemp("deploy")
    postgres = PostgresServer()
    tiled: TiledService | None = None
    try:
        postgres.start()
        postgres.create_database()
        devices = base / "devices.yml"
        devices.write_text(yaml.safe_dump({CLASSIC: [{
            "name": "eiger2", "prefix": ioc.prefix,
            "write_path_template": f"{data_root}/%Y/%m/%d/"}]}))
        config = base / "tiled" / "config.yml"
        config.parent.mkdir()
        assert cli.main(["tiled-config", "--devices", str(devices), "--database", postgres.uri,
                         "--writable", str(base / "tiled" / "writable"), "--host", "127.0.0.1",
                         "--port", str(free_port()), "--output", str(config),
                         "--systemd", str(base / "tiled.service")]) == 0
        (base / "tiled" / "writable").mkdir()
        tiled = TiledService(config)
        tiled.start()
        yield postgres, tiled, devices
    finally:
        if tiled is not None:
            tiled.stop()
        postgres.remove()


def _count(tiled: TiledService, sim: Sim, tmp_path: Path, points: int,
           read: str | None = None) -> tuple[Catalog, str]:
    """A classic count through the FileWriter, written to the deployed server (recorded by the
    ``read`` template if given): (catalog, uid)."""
    from bluesky import RunEngine

    catalog = open_catalog(tiled.uri, api_key=API_KEY)
    RE = RunEngine({}, call_returns_result=False)
    catalog.subscribe(RE, spool_directory=tmp_path / "spool")
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/%Y/%m/%d/", read,
                         file_source="file_writer")
    (uid,) = RE(bp.count([eiger2], num=points))
    return catalog, uid


@contextlib.contextmanager
def _same_catalog_served(tiled: TiledService, directory: Path,
                         change: Callable[[dict], None]) -> Iterator[str]:
    """A second ``tiled serve`` over the deployed catalog with its configuration changed by
    ``change`` (its tree's args, say), for as long as the block runs: its URI."""
    config = yaml.safe_load(tiled.config.read_text())
    config["trees"][0]["args"]["init_if_not_exists"] = False
    config["uvicorn"]["port"] = free_port()
    change(config)
    path = directory / "config.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config))
    server = TiledService(path)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


def test_across_hosts_both_devices_record_into_postgresql_and_every_run_survives_restarts(
        deployment, ioc_host, tmp_path: Path) -> None:
    """The whole deployment at once: the IOC in its own mount namespace writes by its path, the
    PostgreSQL-backed server (its own process, the kit's configuration) reads by this host's;
    both devices count, the async one flies 2000 frames (a virtual dataset over two data
    files); the doctor PASSes every hop; after Tiled and PostgreSQL restart every run reads."""
    from bluesky import RunEngine
    from ophyd_async.core import TriggerInfo

    from id3c_eiger.plans import fly_frames

    postgres, tiled, _ = deployment
    config = yaml.safe_load(tiled.config.read_text())
    args = config["trees"][0]["args"]
    assert config["trees"][0]["tree"] == TREE and args["init_if_not_exists"] is True
    assert args["uri"] == postgres.uri == args["writable_storage"][1]  # tables in SQL too
    unit = (tiled.config.parent.parent / "tiled.service").read_text()
    assert f"serve config {tiled.config}" in unit
    sim, share = ioc_host
    write, read = f"{IOC_VIEW}/%Y/%m/%d/", f"{share}/%Y/%m/%d/"
    catalog = open_catalog(tiled.uri, api_key=API_KEY)
    RE = RunEngine({}, call_returns_result=False)
    catalog.subscribe(RE, spool_directory=tmp_path / "spool")
    runs: dict[str, tuple[Path, int]] = {}  # uid: (devices file, a frame index to compare)
    for flavour in (CLASSIC, ASYNC):
        (tmp_path / flavour).mkdir()
        eiger2 = load_eiger2(flavour, tmp_path / flavour, sim, write, read,
                             file_source="file_writer")
        sim.put("cam1:ArrayCounter", 0)  # the generator's frames counted from each run's first
        (uid,) = RE(bp.count([eiger2], num=2))
        runs[uid] = (tmp_path / flavour / "devices.yml", 1)
    sim.put("cam1:ArrayCounter", 0)
    (uid,) = RE(fly_frames(eiger2, TriggerInfo(number_of_events=2000, livetime=FASTEST_16BIT)))
    runs[uid] = (tmp_path / ASYNC / "devices.yml", 1500)
    catalog.close()
    assert not IOC_VIEW.exists()  # the write path is the IOC host's alone

    def read_back() -> None:
        with open_catalog(tiled.uri, api_key=API_KEY) as catalog:
            for uid, (_, index) in runs.items():
                images = catalog.runs[uid].primary["eiger2_image"]
                masters = master_files(images)
                assert all(m.is_relative_to(share) for m in masters)
                master = masters[index] if len(masters) > 1 else masters[0]  # a series a point
                np.testing.assert_array_equal(images[index],
                                              expected_frames(master, range(index, index + 1))[0])

    read_back()
    for uid, (devices, _) in runs.items():
        hops = list(check_chain(devices, tiled_uri=tiled.uri, api_key=API_KEY, run=uid))
        assert all(hop.passed for hop in hops), [str(h) for h in hops if not h.passed]
    # The catalog served without the kit's tree: Tiled's stock adapter reads the fly scan's
    # whole virtual dataset for frame 0, which the doctor names with the fix.
    def stock(config: dict) -> None:
        config["trees"][0]["tree"] = "catalog"
        config["trees"][0]["args"].pop("path_map", None)

    with _same_catalog_served(tiled, tmp_path / "stock", stock) as uri, \
            open_catalog(uri, api_key=API_KEY) as catalog:
        hops = list(check_tiled(catalog, "eiger2_image", uid))
    assert [hop.name for hop in hops if not hop.passed] == ["Tiled frame 0"], [str(h) for h in hops]
    assert "virtual dataset" in hops[-1].detail and TREE in hops[-1].detail
    tiled.stop()
    postgres.stop()
    postgres.start()
    tiled.start()
    read_back()


def _tiled_hop(devices: Path, uri: str, api_key: str) -> str:
    """The doctor's 'Tiled answers' hop (or the last one) as text, with its wall time."""
    started = time.monotonic()
    hops = list(check_chain(devices, tiled_uri=uri, api_key=api_key))
    elapsed = time.monotonic() - started
    named = [h for h in hops if h.name == "Tiled answers"] or hops[-1:]
    # Not a speed goal: Tiled's client would retry a 500 for about 45 s; the doctor must not.
    assert elapsed < 20, f"the doctor took {elapsed:.1f} s: retried like Tiled's client?"
    return str(named[0])


def test_the_doctor_names_key_database_and_server_each_and_runs_survive_restarts(
        deployment, sim: Sim, tmp_path: Path) -> None:
    postgres, tiled, _ = deployment
    catalog, uid = _count(tiled, sim, tmp_path, 2)
    before = catalog.runs[uid].primary["eiger2_image"][1]
    catalog.close()
    devices = tmp_path / "devices.yml"  # the count's own, so the doctor's IOC hops pass
    # A wrong key: named, and the right one passes.
    assert "refuses the API key" in _tiled_hop(devices, tiled.uri, "wrongkey")
    with pytest.raises(TiledKeyRefused):
        open_catalog(tiled.uri, api_key="wrongkey")
    assert _tiled_hop(devices, tiled.uri, API_KEY).startswith("PASS")
    # The catalog database down: named as such, not as the server or the key; then the server.
    for part, named, error in ((postgres, "catalog database is down", TiledCatalogDown),
                               (tiled, "nothing answers", TiledUnreachable)):
        part.stop()
        try:
            hop = _tiled_hop(devices, tiled.uri, API_KEY)
            assert hop.startswith("FAIL") and named in hop, hop
            with pytest.raises(error):
                open_catalog(tiled.uri, api_key=API_KEY)
        finally:
            part.start()
        assert _tiled_hop(devices, tiled.uri, API_KEY).startswith("PASS")
    # After both restarts the earlier run reads, frame for frame.
    with open_catalog(tiled.uri, api_key=API_KEY) as catalog:
        np.testing.assert_array_equal(catalog.runs[uid].primary["eiger2_image"][1], before)


def test_a_run_recorded_outside_the_servers_storage_is_refused_named_at_once(
        deployment, sim: Sim, tmp_path: Path) -> None:
    """The read path is a second mount of the share that the server was not configured with:
    the server answers 403 naming the file and the fix (Tiled's own check is a bare 500 that
    its client retries for ~25 s), and the doctor shows it at the frame-0 hop."""
    _, tiled, _ = deployment
    mount = tmp_path / "unlisted-mount"
    mount.symlink_to(sim.directory, target_is_directory=True)
    catalog, uid = _count(tiled, sim, tmp_path, 1, f"{mount}/%Y/%m/%d/")
    started = time.monotonic()
    with pytest.raises(Exception, match="403") as refused:
        catalog.runs[uid].primary["eiger2_image"][0]
    assert time.monotonic() - started < 20, "retried like a 500, not refused as a 403"
    assert str(mount) in str(refused.value) and "readable_storage" in str(refused.value)
    catalog.close()
    hops = list(check_chain(tmp_path / "devices.yml", tiled_uri=tiled.uri, api_key=API_KEY))
    failed = [hop for hop in hops if not hop.passed]
    assert [hop.name for hop in failed] == ["Tiled frame 0"], [str(h) for h in hops]
    assert "403" in failed[0].detail and "readable_storage" in failed[0].detail
    # The fix, applied: that mount in readable_storage (a second server on the same catalog).
    def fixed(config: dict) -> None:
        config["trees"][0]["args"]["readable_storage"].append(str(mount))

    with _same_catalog_served(tiled, tmp_path / "fixed", fixed) as uri:
        hops = list(check_chain(tmp_path / "devices.yml", tiled_uri=uri, api_key=API_KEY))
    assert all(hop.passed for hop in hops), [str(h) for h in hops if not h.passed]


def test_tiled_config_names_each_value_it_cannot_serve(tmp_path: Path, capsys) -> None:
    devices = tmp_path / "devices.yml"
    devices.write_text(yaml.safe_dump({CLASSIC: [{
        "name": "eiger2", "prefix": "X:", "write_path_template": "/detector/eiger/%Y/%m/%d/",
        "read_path_template": "/gdata/3idc/eiger/%Y/%m/%d/"}]}))
    argv = ["tiled-config", "--devices", str(devices), "--writable", "/var/lib/tiled",
            "--output", str(tmp_path / "c.yml")]
    cases = [(["--database", "sqlite:///catalog.db"], "is not a PostgreSQL URI"),
             (["--database", "postgresql://t@h/db", "--tables", "sqlite:///t.db"], "tables database"),
             (["--database", "postgresql://t@h/db", "--writable", "var/tiled"], "must be absolute")]
    for extra, named in cases:
        assert cli.main([*argv, *extra]) == cli.EXIT_ERROR
        assert named in capsys.readouterr().err
    assert cli.main([*argv, "--database", "postgresql://t@h/db"]) == 0
    args = yaml.safe_load((tmp_path / "c.yml").read_text())["trees"][0]["args"]
    assert args["readable_storage"] == ["/gdata/3idc/eiger"]  # the read root, not the write one
    assert args["path_map"] == {"/detector": "/gdata/3idc"}  # the IOC's root to the read root
    devices.write_text(yaml.safe_dump({CLASSIC: [{
        "name": "eiger2", "prefix": "X:", "write_path_template": "%Y/data/"}]}))
    assert cli.main([*argv, "--database", "postgresql://t@h/db"]) == cli.EXIT_ERROR
    assert "no fixed absolute directory" in capsys.readouterr().err
