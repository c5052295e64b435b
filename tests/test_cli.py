"""The id3c-eiger command on real masters (and HDF1 files) written by the simulator: inspect, show, doctor
--master, and one clear line with a non-zero status for each bad input."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest

from helpers import Sim, master_frames
from id3c_eiger.cli import EXIT_ERROR, EXIT_FAIL, main
from id3c_eiger.layout import DATA_DATASET, data_file_name
from id3c_eiger.plotting import (
    MASK_COLOUR,
    frame_from_array,
    frame_from_images,
    frame_from_master,
    plot_frame,
)


@pytest.fixture
def master(sim: Sim) -> Path:
    """A 3-frame series written by the simulator's DCU and downloaded (external link, BSLZ4)."""
    return sim.series(3)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_inspect_lists_datasets_links_and_metadata(master, capsys) -> None:
    status, out, _ = run(capsys, "inspect", str(master))
    assert status == 0
    datasets = out.split("links:")[0].splitlines()
    rows = {line.split()[0]: line for line in datasets if line.startswith("    ")}
    assert rows["pixel_mask"].split()[1:] == ["(512,", "1028)", "uint32", "deflate"]
    assert rows["count_time"].split()[1:] == ["0.001", "s", "float32"]  # value and its units
    assert rows["description"].split()[1:] == ["Dectris", "EIGER2", "Si", "500K", "ascii[22]"]
    value_columns = {re.match(r" +\S+ +", line).end() for line in rows.values()}
    assert len(value_columns) == 1  # aligned
    data_file = data_file_name(master, 1)
    assert f"/entry/data/data (external link) -> {data_file}:/entry/data/data" in out
    assert f"OK: {master.parent / data_file}" in out
    metadata = out.split("metadata:\n")[1].splitlines()
    assert ["nimages", "3"] in [line.split() for line in metadata]
    assert ["photon_energy", "12000"] in [line.split() for line in metadata]


def test_doctor_passes_every_file_hop_of_a_good_master(master, capsys) -> None:
    status, out, _ = run(capsys, "doctor", "--master", str(master))
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()] == ["PASS", "PASS", "PASS"]
    assert "frame 0 reads as (512, 1028)" in out


def test_inspect_and_doctor_take_the_hdf1_file_with_no_links(sim: Sim, capsys) -> None:
    path = sim.stream(2)
    status, out, _ = run(capsys, "inspect", str(path))
    assert status == 0
    assert "links: none (the frames are in this file)" in out
    assert "  /entry/instrument/NDAttributes\n" in out
    count_time = next(line for line in out.splitlines() if line.strip().startswith("CountTime"))
    assert count_time.split()[1:] == ["[0.001,", "0.001]", "float64"]  # one per frame
    metadata = [line.split() for line in out.split("metadata:\n")[1].splitlines()]
    assert ["nimages", "2"] in metadata and ["count_time", "0.001"] in metadata
    status, out, _ = run(capsys, "doctor", "--master", str(path))
    assert status == 0, out
    assert "HDF1 (NDFileHDF5) file of 2 frames" in out and "none: the frames are in the file" in out


def test_show_draws_the_frame_with_masked_pixels_in_their_own_colour(master, tmp_path,
                                                                      capsys) -> None:
    png = tmp_path / "frame.png"
    status, out, _ = run(capsys, "show", str(master), "--frames", "0:2", "--output", str(png))
    assert status == 0 and "frames 0..1 summed" in out
    pixels = matplotlib.image.imread(png)[..., :3]
    magenta = np.all(np.isclose(pixels, MASK_COLOUR, atol=0.02), axis=-1)
    assert magenta.sum() > 50  # the dead column and dead pixels of the model's mask
    image = frame_from_master(master, range(0, 2))
    assert image.counts.shape == (512, 1028) and image.masked.sum() > 100
    figure = plot_frame(image, output=tmp_path / "again.png")
    assert figure.axes[0].images[0].get_array().shape == (512, 1028)
    # Without masked pixels nothing is magenta: the colour is the mask's alone.
    clean = frame_from_array(np.full((512, 1028), 7, dtype=np.uint16), "clean")
    plot_frame(clean, output=tmp_path / "clean.png")
    pixels = matplotlib.image.imread(tmp_path / "clean.png")[..., :3]
    assert not np.all(np.isclose(pixels, MASK_COLOUR, atol=0.02), axis=-1).any()


def test_show_without_a_display_writes_frame_png(master, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    status, out, _ = run(capsys, "show", str(master), "--frames", "1")
    assert status == 0 and out.startswith("wrote frame.png:")
    assert matplotlib.image.imread(tmp_path / "frame.png").shape[:2] == (550, 1000)


def test_show_accepts_a_tiled_or_numpy_frame_and_an_roi(master, tmp_path) -> None:
    frame = master_frames(master)[0]
    image = frame_from_array(frame, "images[0]")
    figure = plot_frame(image, roi=(100, 200, 300, 500), vmax=1000, output=tmp_path / "roi.png")
    assert figure.axes[0].images[0].get_array().shape == (100, 200)


def test_frames_of_a_stack_are_summed_per_event_with_every_image_of_it() -> None:
    """A Tiled stack with several images per point is (events, n, y, x): frames index events."""
    stack = np.arange(3 * 2 * 4 * 5, dtype=np.uint16).reshape(3, 2, 4, 5)
    stack[2, 1, 0, 0] = np.iinfo(np.uint16).max  # flagged in one image of event 2
    image = frame_from_images(stack, range(1, 3), "run x")
    np.testing.assert_array_equal(image.counts, stack[1:3].astype(float).sum(axis=(0, 1)))
    assert image.masked[0, 0] and image.masked.sum() == 1
    assert image.title == "run x, frames 1..2 summed"
    with pytest.raises(IndexError, match="run x has 3 frames"):
        frame_from_images(stack, 3, "run x")


def _relink(master: Path, target: str) -> None:
    with h5py.File(master, "r+") as f:
        del f[DATA_DATASET]
        f[DATA_DATASET] = h5py.ExternalLink(target, DATA_DATASET)


@pytest.mark.parametrize(
    ("case", "status", "named"),
    [
        ("missing path", EXIT_ERROR, "does not exist"),
        ("not hdf5", EXIT_ERROR, "is not an HDF5 file"),
        ("data file, not master", EXIT_ERROR, "not an EIGER master"),
        ("frame out of range", EXIT_ERROR, "has 3 frames, numbered 0..2"),
        ("bad roi", EXIT_ERROR, "outside the 512 x 1028 frame"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_status(master, tmp_path, capsys, case, status,
                                                     named) -> None:
    path = {
        "missing path": tmp_path / "nowhere_master.h5",
        "not hdf5": tmp_path / "notes_master.h5",
        "data file, not master": master.parent / data_file_name(master, 1),
    }.get(case, master)
    (tmp_path / "notes_master.h5").write_text("not an HDF5 file")
    extra = {"frame out of range": ["--frames", "3"], "bad roi": ["--roi", "0:600,0:10"]}
    code, out, err = run(capsys, "show", str(path), "--output", str(tmp_path / "x.png"),
                         *extra.get(case, []))
    assert code == status
    assert err.count("\n") == 1 and err.startswith("id3c-eiger: error: ") and named in err
    assert "Traceback" not in err + out


def test_broken_and_foreign_links_fail_the_doctor_with_the_fix(master, tmp_path, capsys) -> None:
    data_file = master.parent / data_file_name(master, 1)
    moved = tmp_path / data_file.name
    shutil.move(data_file, moved)
    code, out, _ = run(capsys, "doctor", "--master", str(master))
    assert code == EXIT_FAIL and "FAIL  links" in out and "missing file" in out
    assert str(data_file) in out
    # A link written by another host's absolute path: named, with the prefix fix.
    _relink(master, "/gpfs/ioc-host/eiger/" + data_file.name)
    code, out, _ = run(capsys, "doctor", "--master", str(master))
    assert code == EXIT_FAIL and "/gpfs/ioc-host/eiger/" in out and "HDF5_EXT_PREFIX" in out
    code, out, _ = run(capsys, "inspect", str(master))
    assert code == EXIT_FAIL and "missing file: file does not exist: /gpfs/ioc-host" in out


def test_the_doctor_follows_links_where_hdf5_prefixes_send_libhdf5(master, tmp_path, capsys,
                                                                    monkeypatch) -> None:
    """The fix the doctor gives for a foreign absolute link (HDF5_EXT_PREFIX) makes it PASS:
    it resolves link targets as libhdf5 does, so the frame it then decodes is the file's."""
    data_file = master.parent / data_file_name(master, 1)
    frames = master_frames(master)
    here = tmp_path / "mounted"
    here.mkdir()
    shutil.move(data_file, here / data_file.name)
    _relink(master, "/gpfs/ioc-host/eiger/" + data_file.name)
    monkeypatch.setenv("HDF5_EXT_PREFIX", f"/nowhere:{here}")
    code, out, _ = run(capsys, "doctor", "--master", str(master))
    assert code == 0 and "FAIL" not in out, out
    code, out, _ = run(capsys, "inspect", str(master))
    assert code == 0 and "missing file" not in out
    np.testing.assert_array_equal(master_frames(master), frames)  # libhdf5 reads them there


def test_missing_compression_filter_is_named(tmp_path, master, capsys) -> None:
    """A data file compressed with a filter nobody here has (id 32099)."""
    data = tmp_path / "odd_data_000001.h5"
    with h5py.File(data, "w") as f:
        dataset = f.create_dataset(DATA_DATASET, shape=(1, 4, 4), dtype="u2", chunks=(1, 4, 4),
                                   compression=32099, allow_unknown_filter=True)
        dataset.id.write_direct_chunk((0, 0, 0), b"\x00" * 32)
    odd = tmp_path / "odd_master.h5"
    shutil.copy(master, odd)
    _relink(odd, data.name)
    code, out, _ = run(capsys, "doctor", "--master", str(odd))
    assert code == EXIT_FAIL and "filter unavailable" in out and "32099" in out
    assert "hdf5plugin" in out
    assert "frame decodes" not in out  # the doctor stops at the first broken hop


def _broken_copy(master: Path, tmp_path: Path, how: str) -> Path:
    """A copy of the series whose data file is a FIFO, or cut to a third of its size."""
    copy = tmp_path / master.name
    shutil.copy(master, copy)
    data = tmp_path / data_file_name(master, 1)
    if how == "fifo":
        os.mkfifo(data)  # an open of it would block until a writer comes: never
    else:
        shutil.copy(master.parent / data.name, data)
        os.truncate(data, data.stat().st_size // 3)
    return copy


@pytest.mark.parametrize("how, named", [("fifo", "is a FIFO, not a regular file"),
                                        ("truncated", "is cut short")])
@pytest.mark.parametrize("command", ["inspect", "show", "doctor"])
def test_a_fifo_or_cut_short_data_file_is_named_never_waited_on(master, tmp_path, how, named,
                                                                command) -> None:
    """On a thread with a deadline: a hang is a failure, not a stuck suite."""
    copy = _broken_copy(master, tmp_path, how)
    argv = {"inspect": ["inspect", str(copy)],
            "show": ["show", str(copy), "--output", str(tmp_path / "f.png")],
            "doctor": ["doctor", "--master", str(copy)]}[command]
    out, err = io.StringIO(), io.StringIO()
    statuses: list[int] = []

    def command_line() -> None:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            statuses.append(main(argv))

    thread = threading.Thread(target=command_line, daemon=True)
    thread.start()
    thread.join(30)
    assert statuses, f"id3c-eiger {command} still waiting after 30 s on a {how} data file"
    assert statuses[0] == {"inspect": EXIT_FAIL, "show": EXIT_ERROR, "doctor": EXIT_FAIL}[command]
    assert named in out.getvalue() + err.getvalue()
    if command == "show":
        assert len(err.getvalue().strip().splitlines()) == 1  # one line, no traceback


def test_help_and_version_answer_without_loading_the_heavy_libraries() -> None:
    """``--help``/``--version`` import no Tiled, ophyd, bluesky or h5py (seconds of imports);
    the help is plain text (no reST markup); the version is the installed one's."""
    probe = ("import sys, contextlib, io\n"
             "from id3c_eiger.cli import main\n"
             "for argv in (['--help'], ['--version']):\n"
             "    out = io.StringIO()\n"
             "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
             "        main(argv)\n"
             "    print(out.getvalue())\n"
             "heavy = ('tiled', 'ophyd', 'ophyd_async', 'bluesky', 'h5py', 'matplotlib')\n"
             "print('LOADED', sorted(m for m in heavy if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    assert "``" not in result.stdout and "usage: id3c-eiger" in result.stdout
    assert f"id3c-eiger {version('id3c-eiger')}" in result.stdout


def test_on_a_terminal_the_doctor_wraps_at_100_columns_in_colour(tmp_path) -> None:
    """Under a pseudo-terminal: every line within 100 columns, PASS green and FAIL red; in a
    pipe (every other test) one line a hop, uncoloured."""
    import pty

    devices = tmp_path / "devices.yml"
    long_dir = "/tmp/" + "a-long-directory-name/" * 6 + "%Y/%m/%d/"
    devices.write_text(f"id3c_eiger.devices.Eiger2Detector:\n  - name: eiger2\n"
                       f"    prefix: 'NOIOC9:'\n    write_path_template: '{long_dir}'\n")
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    env |= {"EPICS_CA_ADDR_LIST": "127.0.0.1:9", "EPICS_CA_AUTO_ADDR_LIST": "NO"}
    process = subprocess.Popen([sys.executable, "-m", "id3c_eiger.cli", "doctor", "--devices",
                                str(devices), "--timeout", "0.5"], stdout=follower,
                               stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 1
    text = output.decode()
    assert "\x1b[32mPASS\x1b[0m  devices file" in text and "\x1b[1;31mFAIL\x1b[0m  IOC" in text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
    assert len(plain) > 2 and max(map(len, plain)) <= 100  # the devices hop took several lines
    assert plain[1].startswith("      ")  # continuation lines indented under the name


def test_the_readme_show_example_draws_the_roi_it_describes(sim: Sim, tmp_path, capsys) -> None:
    """The README's own ``show`` line, on a 10-frame series: a picture of counts, not one
    colour; axes in detector pixels; the ROI in the title."""
    master = sim.series(10)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("id3c-eiger show <"))
    argv = line.split()[1:]
    argv[argv.index("<master.h5>")] = str(master)
    argv[argv.index("--output") + 1] = str(tmp_path / "roi.png")
    status, out, _ = run(capsys, *argv)
    assert status == 0, out
    pixels = matplotlib.image.imread(tmp_path / "roi.png")[..., :3]
    axes_area = pixels[80:470, 150:800].reshape(-1, 3)  # inside the axes of the 10 x 5.5 figure
    colours, counts = np.unique(np.round(axes_area, 2), axis=0, return_counts=True)
    assert len(colours) > 20 and counts.max() < 0.5 * len(axes_area)  # not all one colour
    image = frame_from_master(master, range(10))
    figure = plot_frame(image, roi=(100, 300, 200, 600), output=tmp_path / "again.png")
    axes = figure.axes[0]
    assert axes.get_xlim() == (199.5, 599.5) and axes.get_ylim() == (299.5, 99.5)
    assert "ROI y 100:300, x 200:600" in axes.get_title()


def test_zero_counts_take_the_lowest_colour_not_the_mask_colour(tmp_path) -> None:
    counts = np.zeros((512, 1028), dtype=np.uint16)
    counts[:, 514:] = 50
    plot_frame(frame_from_array(counts, "half empty"), output=tmp_path / "zeros.png")
    pixels = matplotlib.image.imread(tmp_path / "zeros.png")[..., :3]
    lowest = np.array(matplotlib.colormaps["viridis"](0.0)[:3])
    assert np.all(np.isclose(pixels, lowest, atol=0.02), axis=-1).sum() > 10_000
    assert not np.all(np.isclose(pixels, MASK_COLOUR, atol=0.02), axis=-1).any()
