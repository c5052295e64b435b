"""The simulator's PV surface against the record table of a real ADEiger IOC, over real CA."""

from __future__ import annotations

import asyncio

import pytest

from helpers import Sim
from id3c_eiger.records import load_records
from id3c_eiger_sim.surface import NUMBERED_STATES

CA_TYPES = {  # record kind -> the DBR field type a real IOC serves
    "enum": "enum",
    "float": "double",
    "int": "long",
    "string": "string",
    "char": "char",
    "array": "long",
    "float_array": "double",
}


def test_every_record_connects_with_its_type_enum_strings_and_size(ioc) -> None:
    import epics

    records = load_records()
    pvs = {r: epics.get_pv(f"{ioc.prefix}{r.plugin}{r.suffix}", connect=False) for r in records}
    for pv in pvs.values():
        pv.wait_for_connection(timeout=10)
    missing = [pv.pvname for pv in pvs.values() if not pv.connected]
    assert not missing
    wrong = []
    for record, pv in pvs.items():
        field_type = pv.type.replace("time_", "").replace("ctrl_", "")
        if field_type != CA_TYPES[record.kind]:
            wrong.append(f"{pv.pvname}: {field_type} != {CA_TYPES[record.kind]}")
        if record.kind == "enum":
            strings = tuple(pv.get_ctrlvars(timeout=5)["enum_strs"])
            if strings != (record.choices or NUMBERED_STATES):
                wrong.append(f"{pv.pvname}: {strings} != {record.choices}")
        if record.kind in {"char", "array", "float_array"} and pv.nelm != record.nelm:
            wrong.append(f"{pv.pvname}: nelm {pv.nelm} != {record.nelm}")
    assert not wrong, "\n".join(wrong)
    assert len(pvs) == 661 + 965  # cam1: and HDF1:, then the commonPlugins


def test_disabled_records_serve_disa_and_identity_is_eiger2(sim: Sim) -> None:
    assert sim.get("cam1:DataType_RBV.DISA") == 1
    assert sim.get("cam1:BinX.DISA") == 1
    assert sim.get("cam1:AcquireTime.DISA") == 0
    assert sim.text("cam1:Manufacturer_RBV") == "Dectris"
    assert "EIGER2" in sim.text("cam1:Model_RBV")
    assert (sim.get("cam1:MaxSizeX_RBV"), sim.get("cam1:MaxSizeY_RBV")) == (1028, 512)
    assert sim.text("HDF1:NDArrayPort") == sim.text("cam1:PortName_RBV")


def test_stock_ophyd_eiger_cam_without_eiger1_records_connects(ioc) -> None:
    from ophyd.areadetector import EigerDetectorCam
    from ophyd.areadetector.plugins import HDF5Plugin_V34

    class Eiger2Cam(EigerDetectorCam):
        """As APS beamlines declare it for EIGER2 IOCs.

        EIGER1-only records removed, and the three pre-R3 ADCore records stock ophyd still
        declares (no ADCore 3 IOC serves them, as apstools' CamMixin_V34 knows).
        """

        link_0 = link_1 = link_2 = link_3 = None
        dcu_buff_free = None
        fw_clear = None
        file_number_sync = file_number_write = pool_max_buffers = None

    cam = Eiger2Cam(f"{ioc.prefix}cam1:", name="cam")
    cam.wait_for_connection(all_signals=True, timeout=30)
    hdf = HDF5Plugin_V34(f"{ioc.prefix}HDF1:", name="hdf")
    hdf.wait_for_connection(all_signals=True, timeout=30)
    assert cam.model.get() == "EIGER2 Si 500K"
    assert hdf.file_path_exists.get() in (0, 1)


def test_ophyd_async_adcore_io_classes_connect(ioc) -> None:
    from ophyd_async.epics.adcore import ADBaseIO, NDFileHDF5IO

    async def connect() -> tuple[str, str]:
        driver = ADBaseIO(f"{ioc.prefix}cam1:", name="driver")
        hdf = NDFileHDF5IO(f"{ioc.prefix}HDF1:", name="hdf")
        await driver.connect(timeout=30)
        await hdf.connect(timeout=30)
        return await driver.detector_state.get_value(), await hdf.compression.get_value()

    state, compression = asyncio.run(connect())
    assert state in ("Idle", "Aborted")
    assert compression == "BSLZ4"


@pytest.mark.parametrize("suffix", ["cam1:FilePath", "HDF1:FilePath", "HDF1:FullFileName_RBV"])
def test_path_records_are_char_waveforms_beyond_40_characters(sim: Sim, suffix: str) -> None:
    pv = sim.pv(suffix)
    assert pv.type.endswith("char")
    assert pv.nelm >= 256


def test_each_record_has_its_own_alarm(sim: Sim, data_root) -> None:
    """As in an IOC's database: a refused FilePath raises WriteStatus's alarm only, and a
    refused port NDArrayPort_RBV's only (caproto's PVGroup shares one alarm among all its PVs
    unless told otherwise, so every HDF1: record turned MAJOR with WriteStatus)."""

    def severity(suffix: str) -> int:
        return sim.pv(suffix).get_with_metadata(form="time", use_monitor=False, timeout=5)["severity"]

    sim.put("HDF1:FilePath", "relative/not/allowed")
    assert severity("HDF1:WriteStatus") == 2
    assert [severity(s) for s in ("HDF1:FileName", "HDF1:NumCaptured_RBV", "cam1:AcquireTime")] == [0, 0, 0]
    sim.put("Stats2:NDArrayPort", "NOPE")
    assert severity("Stats2:NDArrayPort_RBV") == 2
    assert severity("Stats2:MeanValue_RBV") == 0
    sim.put("HDF1:FilePath", f"{data_root}/")
    assert severity("HDF1:WriteStatus") == 0
