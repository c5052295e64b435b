"""The IOC on a host of its own: the simulator runs in a private mount namespace where the share
is ``/mnt/ioc-host/detector/eiger`` and the Bluesky/Tiled side's path to it shows nothing, while
Bluesky and Tiled see the share only at their own path. Both devices write by the IOC's path and
record by theirs; a read template that names the IOC's path is refused before any frame, named
by stage and by the doctor, and the fix makes the doctor PASS."""

from __future__ import annotations

from pathlib import Path

import bluesky.plans as bp
import numpy as np
import pytest
import yaml

from helpers import ASYNC, CLASSIC, Sim, expected_frames, load_eiger2
from id3c_eiger.catalog import master_files
from id3c_eiger.doctor import check_chain
from id3c_eiger.paths import ReadPathError
from id3c_eiger_sim.process import start_simulator

IOC_VIEW = Path("/mnt/ioc-host/detector/eiger")  # the share as the IOC host mounts it


@pytest.fixture
def ioc_host(data_root: Path, spare_port: int):
    """(client, the share as this host sees it) of a simulator on its own 'host'."""
    share = data_root / "gdata-3idc-eiger"
    (share / "reset").mkdir(parents=True, exist_ok=True)
    with start_simulator("XHOST:", spare_port, [IOC_VIEW], ioc_host=(share, IOC_VIEW)):
        sim = Sim("XHOST:")
        sim.reset(IOC_VIEW / "reset", "xhost")
        sim.directory = share / "reset"  # where this host finds what the IOC wrote there
        yield sim, share


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
