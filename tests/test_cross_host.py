"""The IOC on a host of its own: the simulator runs in a private mount namespace where the share
is ``/mnt/ioc-host/detector/eiger`` and the Bluesky/Tiled side's path to it shows nothing, while
Bluesky and Tiled see the share only at their own path. Both devices write by the IOC's path and
record by theirs; a read template that names the IOC's path is refused before any frame, named
by stage and by the doctor, and the fix makes the doctor PASS."""

from __future__ import annotations

import shutil
from pathlib import Path

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
import yaml

from helpers import ASYNC, CLASSIC, IOC_VIEW, expected_frames, load_eiger2
from id3c_eiger.catalog import master_files
from id3c_eiger.deploy import path_map_of
from id3c_eiger.doctor import check_chain
from id3c_eiger.inspection import inspect_master
from id3c_eiger.layout import link_targets
from id3c_eiger.path_map import PATH_MAP_VARIABLE
from id3c_eiger.paths import ReadPathError


@pytest.mark.parametrize("flavour", [CLASSIC, ASYNC], ids=["classic", "async"])
def test_each_device_writes_by_the_ioc_path_and_records_by_this_hosts(flavour, ioc_host,
                                                                      tmp_path, RE,
                                                                      catalog) -> None:
    sim, share = ioc_host
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{IOC_VIEW}/%Y/%m/%d/", f"{share}/%Y/%m/%d/",
                         file_source="file_writer")
    (uid,) = RE(bp.count([eiger2], num=3))
    assert not IOC_VIEW.exists()  # the write path is the IOC host's alone
    images = catalog.runs[uid].primary["eiger2_image"]
    masters = master_files(images)  # a series per point
    assert len(masters) == 3 and all(m.is_relative_to(share) for m in masters)
    np.testing.assert_array_equal(images[2], expected_frames(masters[2], range(2, 3))[0])
    hops = list(check_chain(tmp_path / "devices.yml", catalog=catalog, run=uid))
    assert hops[-1].name == "Tiled frame 0"
    assert all(hop.passed for hop in hops), [str(h) for h in hops if not h.passed]


def test_the_ioc_hosts_path_as_read_path_is_refused_named_and_fixed(ioc_host, tmp_path,
                                                                    RE) -> None:
    """A read template copied from the write one: the directory exists only on the IOC host."""
    sim, share = ioc_host
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{IOC_VIEW}/%Y/%m/%d/",
                         file_source="file_writer")
    before = sim.get("cam1:ArrayCounter_RBV")
    with pytest.raises(ReadPathError) as refused:
        RE(bp.count([eiger2], num=2))
    assert str(IOC_VIEW) in str(refused.value) and "read_path_template" in str(refused.value)
    assert sim.get("cam1:ArrayCounter_RBV") == before  # refused before any frame
    devices = tmp_path / "devices.yml"
    hops = list(check_chain(devices))
    assert hops[-1].name == "read path" and not hops[-1].passed, [str(h) for h in hops]
    assert "read_path_template" in hops[-1].detail
    content = yaml.safe_load(devices.read_text())  # the fix the message gives, applied
    content[CLASSIC][0]["read_path_template"] = f"{share}/%Y/%m/%d/"
    devices.write_text(yaml.safe_dump(content))
    hops = list(check_chain(devices))
    assert all(hop.passed for hop in hops), [str(h) for h in hops if not h.passed]


def _link_absolutely(master: Path, data_dir: Path, written: Path) -> None:
    """What an IOC that keeps data files apart from its masters writes: each data file moved to
    ``data_dir``, its link naming it by the IOC's own absolute path under ``written``."""
    with h5py.File(master, "r+") as f:
        targets = link_targets(f)
        assert [t.kind for t in targets] == ["external link"] * len(targets)
        for target in targets:
            shutil.move(master.parent / target.target, data_dir / target.target)
            del f[target.link]
            f[target.link] = h5py.ExternalLink(str(written / target.target), target.dataset)


def test_absolute_links_as_the_ioc_wrote_them_read_through_the_generated_path_map(
        ioc_host, tmp_path, RE, catalog, monkeypatch) -> None:
    """The server, the doctor and inspect find a data file by the IOC's absolute path through
    the map the kit generates from the devices file (no HDF5_EXT_PREFIX, which maps file names
    only and applies to the whole process)."""
    sim, share = ioc_host
    monkeypatch.delenv(PATH_MAP_VARIABLE, raising=False)
    eiger2 = load_eiger2(CLASSIC, tmp_path, sim, f"{IOC_VIEW}/%Y/%m/%d/", f"{share}/%Y/%m/%d/",
                         file_source="file_writer")
    (uid,) = RE(bp.count([eiger2], num=1))
    images = catalog.runs[uid].primary["eiger2_image"]
    (master,) = master_files(images)
    kept = expected_frames(master, range(1))[0]
    (share / "data").mkdir()
    _link_absolutely(master, share / "data", IOC_VIEW / "data")
    # Unmapped, the server names the target as written and as it resolved, and the fix.
    with pytest.raises(Exception, match=PATH_MAP_VARIABLE) as refused:
        catalog.runs[uid].primary["eiger2_image"][0]
    assert f"{IOC_VIEW}/data/" in str(refused.value)
    devices = tmp_path / "devices.yml"
    hops = list(check_chain(devices, catalog=catalog, run=uid))  # the devices file maps here
    assert [h.name for h in hops if not h.passed] == ["Tiled frame 0"], [str(h) for h in hops]
    assert PATH_MAP_VARIABLE in hops[-1].detail
    # The fix: the map tiled-config generates from the devices file, in the server's environment.
    generated = path_map_of(devices)
    assert str(generated) == f"{IOC_VIEW}={share}"
    monkeypatch.setenv(PATH_MAP_VARIABLE, str(generated))
    np.testing.assert_array_equal(catalog.runs[uid].primary["eiger2_image"][0], kept)
    hops = list(check_chain(devices, catalog=catalog, run=uid))
    assert all(hop.passed for hop in hops), [str(h) for h in hops if not h.passed]
    report = inspect_master(master)  # inspect honours the same variable
    assert [link.status for link in report.links] == ["OK"] * len(report.links)
    assert all(link.detail.startswith(f"{share}/data/") for link in report.links)
