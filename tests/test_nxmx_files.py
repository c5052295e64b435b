"""Masters and data files as DECTRIS writes them, judged by outside readers: NeXus validation
against NXmx (punx), the NXmx reader of the data-reduction suites (nxmx, as dxtbx uses it) and
fabio; DECTRIS's attribute string types, integer and float widths, and nimages per trigger."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import Sim, master_frames
from id3c_eiger.layout import DATA_DATASET, DETECTOR, DETECTOR_SPECIFIC, data_file_name


@pytest.fixture
def master(sim: Sim) -> Path:
    """4 images x 3 triggers, 5 images per data file: three data files, a virtual dataset."""
    sim.put("cam1:NumTriggers", 3)
    sim.put("cam1:FWNImagesPerFile", 5)
    sim.put("cam1:BeamX", 612.5)
    sim.put("cam1:BeamY", 201.25)
    return sim.stream(4, AcquireTime=0.002, AcquirePeriod=0.003)


def test_types_and_counts_are_dectris_s(master: Path) -> None:
    with h5py.File(master, "r") as f:
        assert f["/entry"].attrs["NX_class"] == b"NXentry"  # fixed-length ASCII, read as bytes
        assert f["/entry"].attrs.get_id("NX_class").dtype == np.dtype("S8")
        assert f[f"{DETECTOR}/x_pixel_size"].attrs["units"] == b"m"
        specific = f[DETECTOR_SPECIFIC]
        assert (specific["nimages"][()], specific["ntrigger"][()]) == (4, 3)  # per trigger
        assert specific["nimages"].dtype == np.int32
        assert f[f"{DETECTOR}/x_pixel_size"].dtype == np.float32
        assert f[DATA_DATASET].shape == (12, 512, 1028)
    with h5py.File(master.with_name(data_file_name(master, 1)), "r") as f:
        assert f["/entry/data"].attrs["NX_class"] == b"NXdata"


def test_nexus_validation_against_nxmx_finds_no_error(master: Path) -> None:
    punx = Path(sys.executable).with_name("punx")
    result = subprocess.run([punx, "validate", str(master)], capture_output=True, text=True,
                            timeout=120)
    errors = [line for line in result.stdout.splitlines() if " ERROR " in line]
    summary = [line for line in result.stdout.splitlines() if line.startswith("ERROR ")]
    assert summary and summary[0].split()[1] == "0", "\n".join(errors) or result.stdout[-2000:]
    assert "NXmx:" in result.stdout  # validated against the application definition


def test_the_nxmx_reader_finds_the_geometry_the_settings_put_there(master: Path,
                                                                   sim: Sim) -> None:
    import nxmx

    with h5py.File(master, "r") as f:
        (entry,) = nxmx.NXmx(f).entries
        (instrument,) = entry.instruments
        (detector,) = instrument.detectors
        (module,) = detector.modules
        (sample,) = entry.samples
        assert list(module.data_size) == [512, 1028]
        assert detector.sensor_material == "Si"
        offset = module.fast_pixel_direction.depends_on  # module_offset
        position = offset.vector * offset[()].to("m").magnitude
        pixel = module.fast_pixel_direction[()].to("m").magnitude
        np.testing.assert_allclose(position[:2] / pixel, [612.5, 201.25], rtol=1e-6)
        distance = detector.depends_on[()].to("m").magnitude
        assert distance == pytest.approx(sim.get("cam1:DetDist"), rel=1e-6)
        assert sample.depends_on.path == "/entry/sample/goniometer/omega"
        assert entry.end_time_estimated >= entry.start_time


def test_fabio_opens_the_master_and_reads_every_frame(master: Path) -> None:
    import fabio

    frames = master_frames(master)  # first: fabio then holds the file open without SWMR
    image = fabio.open(str(master))
    assert image.nframes == 12
    np.testing.assert_array_equal(image.data, frames[0])
    np.testing.assert_array_equal(image.getframe(11).data, frames[11])
