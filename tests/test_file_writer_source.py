"""Both device flavours with ``file_source: file_writer``: the DCU's FileWriter writes a series
per arm (a step scan's point, a whole fly scan), the IOC downloads it (SaveFiles) into the write
path, and the run is read back through Tiled, from the masters at the read path, by the external
link / VDS DECTRIS writes."""

from __future__ import annotations

from pathlib import Path

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky.utils import FailedStatus
from ophyd_async.core import TriggerInfo

from helpers import ASYNC, CLASSIC, FASTEST_16BIT, Sim, expected_frames, load_eiger2, master_frames
from id3c_eiger.catalog import master_files
from id3c_eiger.doctor import check_chain
from id3c_eiger.file_writer import DownloadTimeout
from id3c_eiger.health import DetectorError
from id3c_eiger.layout import DATA_DATASET, data_file_name
from id3c_eiger.plans import fly_frames


def downloaded(directory: Path) -> list[str]:
    """The names of the files in ``directory``, sorted."""
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(("flavour", "per_point"), [
    pytest.param(CLASSIC, 2, id="classic"),
    pytest.param(ASYNC, 1, id="async"),  # ophyd-async records plugin values at 1 per point
])
def test_count_reads_back_the_downloaded_series(flavour, per_point, tmp_path, sim: Sim, RE, catalog,
                                                data_root, alias_root) -> None:
    """Write by the IOC's path, read by another: a series per point (its master and one data
    file), each named by its sequence id; Tiled serves the generator's pixels from them all."""
    relative = sim.directory.relative_to(data_root)
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/fw",
                         f"{alias_root / relative}/fw", file_source="file_writer",
                         images_per_point=per_point)
    RE(bp.count([eiger2], num=3))
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == ((3, 2, 512, 1028) if per_point == 2 else (3, 512, 1028))
    masters = master_files(images)
    assert all(str(m).startswith(str(alias_root)) for m in masters)  # recorded by the read path
    last_id = sim.get("cam1:SequenceId")
    assert [int(m.name.removesuffix("_master.h5").rpartition("_")[2]) for m in masters] == [
        last_id - 2, last_id - 1, last_id]  # named by the DCU, $id -> SequenceId, one per arm
    assert downloaded(masters[0].parent) == sorted(
        name for m in masters for name in (m.name, data_file_name(m, 1)))
    for point, master in enumerate(masters):
        on_disk = master_frames(master)
        assert on_disk.shape == (per_point, 512, 1028)
        taken = range(point * per_point, (point + 1) * per_point)  # the camera's array numbers
        np.testing.assert_array_equal(on_disk, expected_frames(master, taken))
        np.testing.assert_array_equal(images[point], on_disk.squeeze())
    assert sim.text("HDF1:FullFileName_RBV") not in map(str, masters)  # HDF1 wrote nothing
    run = catalog.runs[-1]
    totals = run.primary[eiger2.stats1.total.name].read()
    np.testing.assert_allclose(totals[-1], on_disk[-1].sum(dtype=np.float64), rtol=1e-9)


def test_a_read_path_that_misses_the_downloads_names_the_file_and_the_fix(
        tmp_path, sim: Sim, RE) -> None:
    """A read directory that exists but is not where the IOC downloads: the first point fails
    naming its master, SaveFiles and the read path template; nothing is claimed."""
    elsewhere = tmp_path / "not-the-share"
    elsewhere.mkdir()
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/fw", str(elsewhere),
                         file_source="file_writer")
    eiger2.download_timeout = 1.0
    with pytest.raises(FailedStatus) as err:
        RE(bp.count([eiger2], num=2))
    assert isinstance(err.value.__cause__, DownloadTimeout)
    message = str(err.value.__cause__)
    assert "_master.h5" in message and "read path template" in message
    (master,) = (sim.directory / "fw").glob("*_master.h5")  # the series is kept whole
    assert master_frames(master).shape[0] == 1


def test_a_fly_scan_is_one_series_and_ends_once_every_file_is_downloaded(
        tmp_path, sim: Sim, RE, catalog) -> None:
    """2500 frames at 2.2 kHz through the FileWriter: one arm, one master (downloaded first),
    data files of 1000 frames land as they fill, StreamDatum follows them, and the scan ends
    with every file at the read path."""
    eiger2 = load_eiger2(ASYNC, tmp_path, sim, f"{sim.directory}/fwfly", file_source="file_writer")
    documents = []
    RE(fly_frames(eiger2, TriggerInfo(number_of_events=2500, livetime=FASTEST_16BIT)),
       lambda name, doc: documents.append((name, doc)))
    stops = [doc["indices"]["stop"] for name, doc in documents if name == "stream_datum"]
    assert stops[-1] == 2500 and len(stops) > 1  # documents as data files land
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (2500, 512, 1028)
    (master,) = master_files(images)
    assert downloaded(master.parent) == sorted(
        [master.name, *(data_file_name(master, n) for n in (1, 2, 3))])
    np.testing.assert_array_equal(images[2499], expected_frames(master, range(2499, 2500))[0])
    with h5py.File(master, "r", swmr=True) as f:  # the first frame of the second data file, by the VDS
        np.testing.assert_array_equal(images[1000], f[DATA_DATASET][1000, 0])  # threshold 1


def test_a_full_dcu_disk_fails_the_point_named_and_keeps_what_was_downloaded(
        tmp_path, sim: Sim, RE, catalog) -> None:
    """The detector's disk fills during the third point: the plan fails with FWState_RBV and
    the DCU's message; the two points before are downloaded, in their masters and in Tiled; the
    doctor names the DCU hop, and passes again once the disk has room."""
    sim.put("cam1:FWCompression", "Disable")  # known bytes per frame (the device re-enables it)
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/full",
                         file_source="file_writer")
    eiger2.file_writer.stage_sigs["compression"] = "Disable"
    sim.put("sim:DcuDiskFullAfterBytes", int(2.5 * 512 * 1028 * 2))
    with pytest.raises(FailedStatus) as err:
        RE(bp.count([eiger2], num=5))
    cause = err.value.__cause__
    assert isinstance(cause, DetectorError)
    assert "cam1:FWState_RBV" in str(cause) and "No space left" in str(cause)
    images = catalog.runs[-1].primary["eiger2_image"]
    assert images.shape == (2, 512, 1028)  # the points that completed
    masters = master_files(images)
    assert [master_frames(m).shape[0] for m in masters] == [1, 1]  # downloaded, whole
    np.testing.assert_array_equal(images[1], master_frames(masters[1])[0])
    hops = list(check_chain(tmp_path / "devices.yml", catalog=catalog))
    assert [hop.name for hop in hops if not hop.passed] == ["DCU FileWriter"]
    assert "FWFree_RBV" in hops[-1].detail
    sim.put("sim:DcuDiskFullAfterBytes", 0)  # room again: the next run works
    RE(bp.count([eiger2], num=1))
    assert catalog.runs[-1].primary["eiger2_image"].shape == (1, 512, 1028)
