"""The doctor over the whole chain (devices file, IOC over CA, read path, Tiled, files, frame 0),
against the simulator process and an embedded Tiled server: every hop passes on a good run, and
each broken hop is named with its fix, one FAIL line, non-zero exit, no traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import bluesky.plans as bp
import caproto
import h5py
import matplotlib.image
import numpy as np
import pytest
import yaml

from helpers import ASYNC, CLASSIC, Sim, expected_frames, fly_through_file_writer, load_eiger2
from id3c_eiger.catalog import master_files
from id3c_eiger.cli import EXIT_ERROR, EXIT_FAIL, main
from id3c_eiger.config import load_devices
from id3c_eiger.doctor import check_chain, check_master_file
from id3c_eiger.layout import DATA_DATASET, data_file_name
from id3c_eiger.plotting import MASK_COLOUR
from id3c_eiger_sim.process import free_port

CHAIN = ["devices file", "IOC answers", "DCU FileWriter", "write path", "IOC can write", "read path",
         "Tiled answers", "run in Tiled", "frames in the run", "data source", "master file",
         "links", "frame decodes", "other masters", "Tiled frame 0"]


@pytest.fixture
def counted(tmp_path, sim, RE) -> tuple[Path, str]:
    """A 2-point classic count into ``<sim dir>/%Y/%m/%d`` through the FileWriter, as
    configs/devices.yml has it (a series per point: a master linking its data file):
    (devices file, run uid)."""
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/%Y/%m/%d/",
                         file_source="file_writer")
    (uid,) = RE(bp.count([eiger2], num=2))
    return tmp_path / "devices.yml", uid


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def failing(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL")]


def rewrite(devices: Path, **changes: str) -> Path:
    """The devices file with keys of its eiger2 entry changed."""
    content = yaml.safe_load(devices.read_text())
    content[CLASSIC][0].update(changes)
    devices.write_text(yaml.safe_dump(content))
    return devices


def datetime_expand(template: str) -> str:
    """``template`` expanded for now, as the device expands it at stage."""
    return datetime.now().strftime(template)


def test_every_hop_passes_on_a_good_run(counted, catalog, capsys) -> None:
    devices, uid = counted
    hops = list(check_chain(devices, catalog=catalog, run=uid))
    assert [hop.name for hop in hops] == CHAIN
    assert all(hop.passed for hop in hops), [str(h) for h in hops if not h.passed]
    assert "(2, 512, 1028)" in hops[CHAIN.index("frames in the run")].detail
    # The same from the command line, with the URI of the (here embedded) server.
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--tiled", catalog.uri,
                         "--run", uid)
    assert status == 0 and len(out.splitlines()) == len(CHAIN) and not failing(out)
    assert "api_key" not in out  # the URI is shown without its key
    assert "virtual dataset" not in hops[-1].detail  # one data file: an external link


def test_a_virtual_dataset_master_passes_with_its_read_cost_named(tmp_path, sim, RE, catalog,
                                                                   capsys) -> None:
    """A fly scan's 1500 frames over two data files: the master's frames are a virtual dataset.
    The embedded server reads it frame by frame; for a server reached by URI the doctor cannot
    see its adapter, so it names the stock adapter's cost and the one to configure."""
    uid = fly_through_file_writer(tmp_path, sim, RE, f"{sim.directory}/vds/", 1500)
    devices = tmp_path / "devices.yml"
    hops = list(check_chain(devices, catalog=catalog, run=uid))
    assert all(hop.passed for hop in hops) and hops[-1].name == "Tiled frame 0"
    assert "virtual dataset" not in hops[-1].detail
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--tiled", catalog.uri,
                         "--run", uid)
    last = out.splitlines()[-1]
    assert status == 0 and last.startswith("PASS  Tiled frame 0")
    assert "reads all 1500 frames for each slice" in last
    assert "id3c_eiger.tiled_adapter:FramewiseHDF5Adapter" in last


def test_the_doctor_checks_the_detector_the_run_recorded(tmp_path, sim, RE, catalog,
                                                          capsys) -> None:
    """A devices file with both flavours and a run of ``eiger2_async``: with no --detector the
    doctor and ``show`` take the run's detector, rather than FAIL a healthy system on eiger2."""
    write = f"{sim.directory}/%Y/%m/%d/"
    devices = tmp_path / "devices.yml"
    devices.write_text(yaml.safe_dump({
        CLASSIC: [{"name": "eiger2", "prefix": sim.prefix, "write_path_template": write}],
        ASYNC: [{"name": "eiger2_async", "prefix": sim.prefix, "write_path_template": write}]}))
    eiger2_async = load_devices(devices).devices["eiger2_async"]
    (uid,) = RE(bp.count([eiger2_async], num=2))
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--tiled", catalog.uri)
    assert status == 0 and not failing(out), out
    assert out.startswith("PASS  devices file: eiger2_async is")
    assert "primary/eiger2_async_image has shape (2, 512, 1028)" in out.replace("'", "")
    status, out, _ = run(capsys, "show", "--tiled", catalog.uri, "--run", uid, "--output",
                         str(tmp_path / "f.png"))
    assert status == 0 and "eiger2_async" in out
    # Named explicitly, a detector the run did not record still fails at the frames, named.
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--tiled", catalog.uri,
                         "--detector", "eiger2")
    assert status == EXIT_FAIL and failing(out)[0].startswith("FAIL  frames in the run")


def test_doctor_runs_checks_the_last_runs_a_line_each(tmp_path, sim, RE, catalog,
                                                       capsys) -> None:
    """The nightly check: the last N runs read through Tiled, one line each; a run whose data
    file went missing is the one FAIL, named with its fix; no IOC is asked."""
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/nightly/",
                         file_source="file_writer")
    uids = [RE(bp.count([eiger2], num=2))[0] for _ in range(3)]
    broken = master_files(catalog.runs[uids[1]].primary["eiger2_image"])[0]
    os.remove(broken.parent / data_file_name(broken, 1))
    status, out, _ = run(capsys, "doctor", "--tiled", catalog.uri, "--runs", "3")
    lines = out.splitlines()
    assert status == EXIT_FAIL and len(lines) == 3
    (line,) = failing(out)
    assert line.startswith(f"FAIL  run {uids[1][:8]}") and "links" in line
    assert data_file_name(broken, 1) in line
    passed = [line for line in lines if line.startswith("PASS")]
    assert sorted(p.split()[2] for p in passed) == sorted(u[:8] for u in (uids[0], uids[2]))
    assert all("(2, 512, 1028)" in p and "frame 0 is the file's" in p for p in passed)
    status, _, err = run(capsys, "doctor", "--runs", "0", "--tiled", catalog.uri)
    assert status == EXIT_ERROR and "at least 1" in err


def _devices_for(prefix: str, tmp_path: Path) -> Path:
    """A devices file naming ``prefix``, for the hops that need no count (the IOC's)."""
    devices = tmp_path / "devices.yml"
    devices.write_text(yaml.safe_dump({CLASSIC: [{
        "name": "eiger2", "prefix": prefix, "write_path_template": f"{tmp_path}/%Y/"}]}))
    return devices


def test_ioc_that_does_not_answer_is_named_with_the_prefix(tmp_path, capsys) -> None:
    devices = _devices_for("NOSUCHIOC:", tmp_path)
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--timeout", "0.5")
    assert status == EXIT_FAIL
    (line,) = failing(out)
    assert line.startswith("FAIL  IOC answers") and "'NOSUCHIOC:'" in line
    assert "EPICS_CA_ADDR_LIST" in line


def test_an_address_list_that_cannot_be_sent_to_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "127.0.0.1:0")  # caproto reads it at each search
    hops = list(check_chain(_devices_for("NOSUCHIOC:", tmp_path), ca_timeout=0.5))
    assert [hop.passed for hop in hops] == [True, False]
    detail = hops[-1].detail
    assert "the search for NOSUCHIOC:cam1:Model_RBV could not be sent" in detail
    assert "127.0.0.1:0" in detail and "Fix: set EPICS_CA_ADDR_LIST" in detail


@contextlib.contextmanager
def _searches_answered(port: int, prefix: str, tcp_port: int) -> Iterator[None]:
    """CA's UDP search for ``prefix``'s PVs answered on ``port`` with a TCP port that refuses:
    an IOC behind a firewall that passes UDP 5064 and rejects TCP."""
    version = caproto.DEFAULT_PROTOCOL_VERSION
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    udp.settimeout(0.1)
    stop = threading.Event()

    def answer() -> None:
        broadcaster = caproto.Broadcaster(our_role=caproto.SERVER)
        while not stop.is_set():
            try:
                data, client = udp.recvfrom(65536)
            except TimeoutError:
                continue
            replies = [caproto.SearchResponse(tcp_port, "127.0.0.1", command.cid, version)
                       for command in broadcaster.recv(data, client)
                       if isinstance(command, caproto.SearchRequest)
                       and command.name.startswith(prefix)]
            if replies:
                udp.sendto(broadcaster.send(caproto.VersionResponse(version), *replies), client)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        udp.close()


def test_an_ioc_whose_tcp_is_refused_is_named_with_its_address(tmp_path, spare_port) -> None:
    closed = free_port()  # nothing listens there
    with _searches_answered(spare_port, "WALLED:", closed):
        hops = list(check_chain(_devices_for("WALLED:", tmp_path), ca_timeout=1))
    assert [hop.passed for hop in hops] == [True, False]
    detail = hops[-1].detail
    assert f"the IOC at 127.0.0.1:{closed} answered the search for WALLED:cam1:Model_RBV" in detail
    assert "not the read" in detail and f"let TCP through to 127.0.0.1:{closed}" in detail


def test_an_ioc_that_is_not_an_adeiger_is_named_with_the_pv_it_lacks(tmp_path,
                                                                      spare_port) -> None:
    """A prefix that names another areaDetector IOC: its camera answers, its HDF1 does not."""
    server = textwrap.dedent("""
        from caproto.server import PVGroup, pvproperty, run
        class Camera(PVGroup):
            model = pvproperty(name="cam1:Model_RBV", value="Basic simulator", read_only=True)
        run(Camera(prefix="SIMDET:").pvdb, interfaces=["127.0.0.1"])
    """)
    env = {**os.environ, "EPICS_CA_SERVER_PORT": str(spare_port)}
    process = subprocess.Popen([sys.executable, "-c", server], env=env)
    try:
        devices = _devices_for("SIMDET:", tmp_path)
        deadline = time.monotonic() + 20
        while (hops := list(check_chain(devices, ca_timeout=1)))[1].detail.startswith("no answ"):
            assert time.monotonic() < deadline, "the stand-in camera IOC did not start"
    finally:
        process.terminate()
        process.wait(10)
    assert [hop.passed for hop in hops] == [True, False]
    assert ("SIMDET: answers, but no IOC answered the search for SIMDET:HDF1:FilePath_RBV"
            in hops[-1].detail)
    assert "point prefix 'SIMDET:' at the ADEiger IOC" in hops[-1].detail


@pytest.mark.parametrize(
    ("change", "hop", "named", "fix"),
    [
        ({"write_path_template": "data/%Y/"}, "devices file", "is not absolute", "start it with"),
        ({"write_path_template": "/elsewhere/%Y/%m/%d/"}, "write path", "cannot produce",
         "set write_path_template"),
        ({"read_path_template": "/nonexistent/%Y/%m/%d/"}, "read path", "does not exist here",
         "set read_path_template"),
        ({"compression": "ZIP9"}, "devices file", "'ZIP9'", "use one of"),
    ],
)
def test_devices_file_that_disagrees_with_the_ioc_names_the_hop(counted, capsys, change, hop,
                                                                named, fix) -> None:
    devices = rewrite(counted[0], **change)
    status, out, _ = run(capsys, "doctor", "--devices", str(devices))
    assert status == EXIT_FAIL
    (line,) = failing(out)
    assert line.startswith(f"FAIL  {hop}:") and named in line and fix in line


def test_read_path_showing_another_directory_is_caught(counted, tmp_path, capsys) -> None:
    other = tmp_path / "other-share"
    devices, _ = counted
    written = yaml.safe_load(devices.read_text())[CLASSIC][0]["write_path_template"]
    Path(datetime_expand(f"{other}/%Y/%m/%d/")).mkdir(parents=True)
    rewrite(devices, read_path_template=f"{other}/%Y/%m/%d/")
    status, out, _ = run(capsys, "doctor", "--devices", str(devices))
    (line,) = failing(out)
    assert status == EXIT_FAIL and line.startswith("FAIL  read path")
    assert "does not show the IOC's last file" in line and datetime_expand(written) in line


def test_a_capture_that_wrote_no_frame_leaves_the_read_path_passing(counted, sim, capsys) -> None:
    """A count aborted before its first frame: with LazyOpen no file was opened, so (as in
    NDPluginFile) FullFileName_RBV is empty, and the doctor judges the read path by its
    directory rather than FAIL on a file that never existed."""
    devices, _ = counted
    sim.start_capture()
    assert sim.text("HDF1:FullFileName_RBV") == ""
    assert sim.text("HDF1:WriteMessage") == "Lazy Open..."
    sim.put("HDF1:Capture", "Done")
    status, out, _ = run(capsys, "doctor", "--devices", str(devices))
    assert status == 0 and not failing(out) and "PASS  read path" in out


def test_directory_the_ioc_cannot_write_is_named(sim, tmp_path, capsys) -> None:
    """The IOC's FilePath fits the template but lies outside the simulator's data roots."""
    outside = f"/id3c-no-such-root/{datetime_expand('%Y')}/"
    sim.put("HDF1:FilePath", outside)
    sim.wait_for("HDF1:FilePathExists_RBV", "No")
    devices = tmp_path / "devices.yml"
    devices.write_text(yaml.safe_dump({CLASSIC: [{"name": "eiger2", "prefix": sim.prefix,
                                                  "write_path_template": "/id3c-no-such-root/%Y/"}]}))
    status, out, _ = run(capsys, "doctor", "--devices", str(devices))
    (line,) = failing(out)
    assert status == EXIT_FAIL and line.startswith("FAIL  IOC can write") and outside in line


def test_tiled_that_refuses_and_a_run_that_does_not_exist(counted, catalog, capsys) -> None:
    devices, _ = counted
    refused = f"http://127.0.0.1:{free_port()}"
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--tiled", refused)
    (line,) = failing(out)
    assert status == EXIT_FAIL and line.startswith("FAIL  Tiled answers") and refused in line
    assert "nothing answers" in line and "start the Tiled server" in line
    status, out, _ = run(capsys, "doctor", "--devices", str(devices), "--tiled", catalog.uri,
                         "--run", "0000000-no-such-run")
    (line,) = failing(out)
    assert status == EXIT_FAIL and line.startswith("FAIL  run in Tiled")
    assert "'0000000-no-such-run'" in line and "the latest is" in line
    # --master checks a file alone: with --tiled too it is bad input, not a silent choice.
    status, _, err = run(capsys, "doctor", "--master", "x_master.h5", "--tiled", catalog.uri)
    assert status == EXIT_ERROR and err.count("\n") == 1 and "not both" in err
    # show: the same bad input is one error line and status 2.
    for argv in (["--tiled", refused], ["--tiled", catalog.uri, "--run", "0000000-no-such-run"]):
        status, _, err = run(capsys, "show", *argv, "--output", "unused.png")
        assert status == EXIT_ERROR and err.count("\n") == 1 and "Fix" in err


def test_data_outside_tileds_readable_storage_is_named(tmp_path, sim, RE, catalog) -> None:
    """The read path is a second mount of the IOC's directory that Tiled was not told about."""
    mount = tmp_path / "unlisted-mount"
    mount.symlink_to(sim.directory, target_is_directory=True)
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/", f"{mount}/")
    (uid,) = RE(bp.count([eiger2], num=1))
    hops = list(check_chain(tmp_path / "devices.yml", catalog=catalog, run=uid))
    assert hops[-1].name == "data source" and not hops[-1].passed
    assert "outside Tiled's readable storage" in hops[-1].detail and str(mount) in hops[-1].detail


def test_missing_data_file_of_a_run_stops_at_links(counted, catalog) -> None:
    devices, uid = counted
    master = master_files(catalog.runs[uid].primary["eiger2_image"])[1]  # the second point's
    os.remove(master.parent / data_file_name(master, 1))
    hops = list(check_chain(devices, catalog=catalog, run=uid))
    assert [h.name for h in hops][-1] == "links" and not hops[-1].passed
    assert master.name in hops[-1].detail and data_file_name(master, 1) in hops[-1].detail


def test_missing_virtual_source_is_named_with_the_zeros_warning(sim: Sim) -> None:
    """A v2024.2 series over three data files: the master's frames are a virtual dataset, which
    reads a missing source as zeros rather than failing."""
    master = sim.series(5, FWNImagesPerFile=2)
    with h5py.File(master, "r") as f:
        assert f[DATA_DATASET].is_virtual
    os.remove(master.parent / data_file_name(master, 2))
    with h5py.File(master, "r") as f:
        assert not f[DATA_DATASET][2].any()  # the silent failure the doctor is there to catch
    hops = list(check_master_file(master))
    assert hops[-1].name == "links" and not hops[-1].passed
    assert "virtual source" in hops[-1].detail and "zeros" in hops[-1].detail
    assert data_file_name(master, 2) in hops[-1].detail


def test_show_draws_frames_of_a_run_in_tiled(counted, catalog, tmp_path, capsys) -> None:
    _, uid = counted
    png = tmp_path / "run.png"
    status, out, _ = run(capsys, "show", "--tiled", catalog.uri, "--run", uid, "--frames", "0:2",
                         "--output", str(png))
    assert status == 0 and f"run {uid[:8]}" in out and "frames 0..1 summed" in out
    pixels = matplotlib.image.imread(png)[..., :3]
    assert np.all(np.isclose(pixels, MASK_COLOUR, atol=0.02), axis=-1).sum() > 50
    master = master_files(catalog.runs[uid].primary["eiger2_image"])[1]
    np.testing.assert_array_equal(catalog.runs[uid].primary["eiger2_image"][1],
                                  expected_frames(master, range(1, 2))[0])
