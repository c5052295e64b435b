"""The deployed chain's figures: frame 0 through the PostgreSQL-backed server against the embedded
one and h5py, and the doctor's wall time on a healthy chain and on each broken one.

One run (a classic count through the DCU's FileWriter) is written to both servers at once: the
deployed one (PostgreSQL on loopback, ``tiled serve config`` with what ``id3c-eiger
tiled-config`` generates) and an embedded one; frame 0 is read through each and with h5py from
the master (the baseline). Then the doctor runs against the deployed server as it is, and with
one part broken at a time: a wrong API key, the catalog database down, the server down, a run
recorded outside the server's readable storage, a data file missing. Goal: a named FAIL within
5 s each (no client retries). Beside frame 0 of the run: frame 0 of a long FileWriter step scan
(a master a point: goal, as cheap as the short run's), and the same frame written to each server
as a plain array in Tiled's own storage, at its root and at the run's depth
(runs/uid/primary/...: Tiled looks up each hop): what any Tiled read costs, whatever the adapter.

Run with ``python benchmarks/bench_deployment.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bluesky.plans as bp
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import yaml
from bluesky import RunEngine
from common import PREFIX, median_seconds, simulator_with_dcu
from tiled.client import from_uri

from helpers import API_KEY, CLASSIC, PostgresServer, TiledService, load_eiger2
from id3c_eiger import cli
from id3c_eiger.catalog import master_files, open_catalog, response_encoding
from id3c_eiger.doctor import check_chain
from id3c_eiger.layout import DATA_DATASET, data_file_name, frame_images
from id3c_eiger_sim.process import free_port

POINTS = 3
LONG_POINTS = 50  # a long FileWriter step scan: 50 masters, 50 data files


def _plain_array(uri: str, api_key: str | None, frame: np.ndarray,
                 containers: tuple[str, ...]) -> Callable[[], object]:
    """Reading ``frame`` back, written as a plain array in the server's own storage under
    ``containers`` (the run's depth is runs/uid/primary: Tiled looks up each hop)."""
    node = from_uri(uri, api_key=api_key, headers=response_encoding(uri))  # as open_catalog
    for key in containers[:-1]:
        node = node[key] if key in node else node.create_container(key)
    array = node.write_array(frame[None], key=containers[-1] if len(containers) > 1 else
                             f"plain-frame-{containers[0]}")
    return lambda: array[0]


def _doctor(devices: Path, uri: str, run: str, api_key: str = API_KEY) -> tuple[float, str]:
    """The doctor's wall time and its first FAIL (or its last hop) against ``uri``."""
    started = time.perf_counter()
    hops = list(check_chain(devices, tiled_uri=uri, api_key=api_key, run=run))
    took = time.perf_counter() - started
    shown = next((hop for hop in hops if not hop.passed), hops[-1])
    return took, f"{'PASS' if shown.passed else 'FAIL'} {shown.name}"


def main() -> None:
    os.environ.setdefault("TILED_RETRY_ATTEMPTS", "10")  # the client as users have it
    with simulator_with_dcu("deploy") as (root, sim, _), \
            tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        base = Path(tmp)
        devices = base / "devices.yml"
        devices.write_text(yaml.safe_dump({CLASSIC: [{
            "name": "eiger2", "prefix": PREFIX, "write_path_template": f"{root}/%Y/%m/%d/"}]}))
        config = base / "tiled" / "config.yml"
        (base / "tiled" / "writable").mkdir(parents=True)
        postgres = PostgresServer()
        tiled: TiledService | None = None
        try:
            postgres.start()
            postgres.create_database()
            assert cli.main(["tiled-config", "--devices", str(devices), "--database",
                             postgres.uri, "--writable", str(base / "tiled" / "writable"),
                             "--host", "127.0.0.1", "--port", str(free_port()),
                             "--output", str(config)]) == 0
            tiled = TiledService(config)
            tiled.start()
            deployed = open_catalog(tiled.uri, api_key=API_KEY)
            with open_catalog(readable_storage=[root]) as embedded:
                RE = RunEngine({}, call_returns_result=False)
                deployed.subscribe(RE, spool_directory=base / "spool-deployed")
                embedded.subscribe(RE, spool_directory=base / "spool-embedded")
                eiger2 = load_eiger2(CLASSIC, base, sim, f"{root}/%Y/%m/%d/",
                                     file_source="file_writer")
                (uid,) = RE(bp.count([eiger2], num=POINTS))
                (long_uid,) = RE(bp.count([eiger2], num=LONG_POINTS))
                master = master_files(embedded.runs[uid].primary["eiger2_image"])[0]

                def h5py_frame() -> object:
                    with h5py.File(master, "r", swmr=True) as f:
                        return frame_images(f[DATA_DATASET], 0)

                baseline = median_seconds(h5py_frame)
                print(f"frame 0 of a {POINTS}-point FileWriter count (a master and a data file a "
                      "point), median of repeats:")
                print(f"  h5py on the master (baseline)          {baseline * 1e3:8.1f} ms")
                for label, catalog, key in (("deployed (PostgreSQL)", deployed, API_KEY),
                                            ("embedded (SQLite)", embedded, None)):
                    images = catalog.runs[uid].primary["eiger2_image"]
                    long_run = catalog.runs[long_uid].primary["eiger2_image"]
                    frame = np.asarray(h5py_frame())
                    reads: dict[str, Callable[[], object]] = {
                        "images[0]": lambda images=images: images[0],
                        f"the {LONG_POINTS}-point run's":
                            lambda long_run=long_run: long_run[0],
                        "plain array, root": _plain_array(catalog.uri, key, frame, (uid,)),
                        "plain, run's depth": _plain_array(catalog.uri, key, frame,
                                                           ("floor", uid, "primary")),
                        "from the run's uid": lambda catalog=catalog: (
                            catalog.runs[uid].primary["eiger2_image"][0]),
                    }
                    for what, read in reads.items():
                        took = median_seconds(read)
                        print(f"  Tiled {label:21s} {what:20s} {took * 1e3:8.1f} ms = "
                              f"{took / baseline:6.1f} x h5py")
                # A second run recorded through a mount the server was not configured with.
                mount = base / "unlisted-mount"
                mount.symlink_to(root, target_is_directory=True)
                (base / "outside").mkdir()
                unlisted = load_eiger2(CLASSIC, base / "outside", sim, f"{root}/%Y/%m/%d/",
                                       f"{mount}/%Y/%m/%d/", file_source="file_writer")
                (outside,) = RE(bp.count([unlisted], num=1))
            deployed.close()
            print("the doctor against the deployed server (goal: a named FAIL within 5 s):")
            cases: list[tuple[str, Callable[[], tuple[float, str]]]] = [
                ("healthy", lambda: _doctor(devices, tiled.uri, uid)),
                ("wrong API key", lambda: _doctor(devices, tiled.uri, uid, "wrongkey")),
                ("outside readable storage",
                 lambda: _doctor(base / "outside" / "devices.yml", tiled.uri, outside)),
            ]
            for label, case in cases:
                took, shown = case()
                print(f"  {label:26s} {took:6.2f} s  {shown}")
            os.remove(master.parent / data_file_name(master, 1))
            took, shown = _doctor(devices, tiled.uri, uid)
            print(f"  {'a data file missing':26s} {took:6.2f} s  {shown}")
            for label, part in (("catalog database down", postgres), ("server down", tiled)):
                part.stop()
                try:
                    took, shown = _doctor(devices, tiled.uri, uid)
                finally:
                    part.start()
                print(f"  {label:26s} {took:6.2f} s  {shown}")
        finally:
            if tiled is not None:
                tiled.stop()
            postgres.remove()


if __name__ == "__main__":
    main()
