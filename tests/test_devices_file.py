"""configs/devices.yml and the loader: the shipped file, its apstools equivalent, bad entries."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml
from bluesky.run_engine import (
    call_in_bluesky_event_loop,
    get_bluesky_event_loop,
    set_bluesky_event_loop,
)

from helpers import ASYNC, CLASSIC
from id3c_eiger.async_devices import Eiger2Detector as AsyncEiger2Detector
from id3c_eiger.config import (
    PACKAGED_DEVICES_FILE,
    DevicesFileError,
    DevicesNotConnected,
    check_devices_file,
    load_devices,
)
from id3c_eiger.devices import Eiger2Detector
from id3c_eiger.paths import PathTemplateError, PathTemplates


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "devices.yml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_shipped_file_declares_both_flavours_and_loads_with_guarneri(sim, tmp_path, RE) -> None:
    entries = check_devices_file(PACKAGED_DEVICES_FILE)
    (classic,) = entries[CLASSIC]
    (modern,) = entries[ASYNC]
    assert classic["prefix"] == "3idcEIG2:" and "FIXME" not in PACKAGED_DEVICES_FILE.read_text()
    assert classic["name"] == "eiger2" and modern["name"] == "eiger2_async"
    assert {k: v for k, v in modern.items() if k != "name"} == {
        k: v for k, v in classic.items() if k != "name"}  # the same settings, one YAML anchor
    # The same entries, pointed at the test simulator, are built and connected by guarneri.
    here = {"prefix": sim.prefix, "write_path_template": str(sim.directory),
            "read_path_template": str(sim.directory)}
    instrument = load_devices(write(tmp_path, {CLASSIC: [{**classic, **here}],
                                               ASYNC: [{**modern, **here}]}))
    eiger2 = instrument.devices["eiger2"]
    assert isinstance(eiger2, Eiger2Detector) and eiger2.connected
    assert eiger2.cam.model.get() == "EIGER2 Si 500K"
    eiger2_async = instrument.devices["eiger2_async"]
    assert isinstance(eiger2_async, AsyncEiger2Detector)
    model = call_in_bluesky_event_loop(eiger2_async.driver.model.get_value(), timeout=5)
    assert model == "EIGER2 Si 500K"  # connected in the RunEngine's loop
    assert set(instrument.devices.findall(label="detectors")) == {eiger2, eiger2_async}


def test_the_default_file_with_per_call_overrides(sim, RE, monkeypatch) -> None:
    """No path: the packaged file; keywords given to the call replace those of every entry."""
    monkeypatch.delenv("ID3C_EIGER_DEVICES", raising=False)
    instrument = load_devices(prefix=sim.prefix, write_path_template=str(sim.directory),
                              read_path_template=str(sim.directory))
    eiger2 = instrument.devices["eiger2"]
    assert eiger2.prefix == sim.prefix and eiger2.connected
    assert eiger2.store.templates.write == str(sim.directory)
    assert instrument.devices["eiger2_async"]._prefix == sim.prefix
    with pytest.raises(DevicesFileError, match="key 'images_per_point' is 'x'"):
        load_devices(images_per_point="x", connect=False)  # overrides are checked too


def test_an_unreachable_ioc_is_named_and_the_rest_still_loads(sim, tmp_path, RE) -> None:
    here = {"write_path_template": str(sim.directory), "read_path_template": str(sim.directory)}
    path = write(tmp_path, {CLASSIC: [{"name": "eiger2", "prefix": sim.prefix, **here},
                                      {"name": "eiger2_b", "prefix": "NOWHERE7:", **here}]})
    with pytest.raises(DevicesNotConnected) as err:
        load_devices(path, timeout=1.0)
    message = str(err.value)
    assert "eiger2_b: prefix 'NOWHERE7:' did not answer" in message and "loaded: eiger2" in message
    assert err.value.instrument.devices["eiger2"].connected
    instrument = load_devices(path, timeout=1.0, skip_unreachable=True)
    assert instrument.devices["eiger2"].connected
    assert [d.name for d in instrument.devices.root_devices] == ["eiger2"]


def test_loading_async_devices_without_a_run_engine_says_what_to_do(tmp_path) -> None:
    path = write(tmp_path, {ASYNC: [{"name": "eiger2", "prefix": "NOWHERE:",
                                     "write_path_template": "/tmp/"}]})
    saved = get_bluesky_event_loop()
    set_bluesky_event_loop(None)
    try:
        with pytest.raises(RuntimeError, match="create the RunEngine, then load"):
            load_devices(path)
    finally:
        set_bluesky_event_loop(saved)


def test_apstools_ad_creator_entry_builds_the_same_parts(sim, tmp_path) -> None:
    """The README's ad_creator form of the entry: our camera and plugin classes, same templates."""
    entry = {
        "name": "eiger2", "prefix": sim.prefix, "labels": ["detectors"],
        "plugins": [
            {"cam": {"class": "id3c_eiger.devices.Eiger2Cam"}},
            {"hdf1": {"class": "id3c_eiger.devices.Eiger2HDF5Plugin",
                      "write_path_template": str(sim.directory), "kind": "normal"}},
        ],
    }
    instrument = load_devices(write(tmp_path, {"apstools.devices.ad_creator": [entry]}))
    eiger2 = instrument.devices["eiger2"]
    assert eiger2.connected and eiger2.hdf1.templates.expand().write == f"{sim.directory}/"
    assert eiger2._acquisition_busy_signal is eiger2.cam.acquire_busy  # waits on AcquireBusy


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "eiger2", "prefix": "X:", "write_path_template": "/d/", "write_path": "/d/"},
         "entry 1 (name 'eiger2'): unknown key 'write_path'"),
        ({"name": "eiger2", "prefix": "X:", "write_path_template": "/d/", "images_per_point": "5"},
         "entry 1 (name 'eiger2'): key 'images_per_point' is '5' (str), expected int"),
        ({"name": "eiger2", "prefix": 7, "write_path_template": "/d/"},
         "key 'prefix' is 7 (int), expected str"),
        ({"name": "eiger2", "prefix": "X:"}, "missing required key(s) write_path_template"),
    ],
)
def test_bad_entries_name_file_entry_and_key(tmp_path, entry, expected) -> None:
    path = write(tmp_path, {"id3c_eiger.devices.Eiger2Detector": [entry]})
    with pytest.raises(DevicesFileError) as err:
        load_devices(path, connect=False)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_unimportable_class_and_bad_shapes_are_named(tmp_path) -> None:
    path = write(tmp_path, {"id3c_eiger.devices.Eiger3Detector": [{"name": "x"}]})
    with pytest.raises(DevicesFileError, match=r"cannot import 'id3c_eiger\.devices\.Eiger3Detector'"):
        check_devices_file(path)
    path = write(tmp_path, {"id3c_eiger.devices.Eiger2Detector": {"name": "x"}})
    with pytest.raises(DevicesFileError, match="must be a list of entries"):
        check_devices_file(path)


def test_bad_path_templates_are_refused_with_the_rule() -> None:
    with pytest.raises(PathTemplateError, match="not absolute"):
        PathTemplates("data/%Y")
    with pytest.raises(PathTemplateError, match="empty"):
        PathTemplates("/data/", "  ")


def test_templates_expand_once_with_one_trailing_separator() -> None:
    when = datetime(2026, 11, 24, 23, 59, 59)
    paths = PathTemplates("/ioc/data/%Y/%m/%d", "/mnt/eiger//%Y/%m/%d/").expand(when)
    assert (paths.write, paths.read) == ("/ioc/data/2026/11/24/", "/mnt/eiger//2026/11/24/")
    same = PathTemplates("/ioc/data/").expand(when)
    assert same.read == same.write == "/ioc/data/"


def test_apsbits_make_devices_loads_the_file_and_both_flavours_count_into_tiled(
        sim, tmp_path, RE, catalog) -> None:
    """An APS instrument's startup: apsbits' own make_devices reads the devices file (here the
    packaged one, pointed at the simulator) into __main__; both flavours count, and the images
    read back through Tiled (apsbits' default databroker catalog cannot read them: use Tiled)."""
    import sys

    import bluesky.plans as bp
    import guarneri
    from apsbits.core.instrument_init import make_devices

    here = {"prefix": sim.prefix, "write_path_template": f"{sim.directory}/aps/",
            "read_path_template": f"{sim.directory}/aps/"}
    content = {class_path: [{**entry, **here} for entry in entries]
               for class_path, entries in check_devices_file(PACKAGED_DEVICES_FILE).items()}
    write(tmp_path, content)
    instrument = guarneri.Instrument({})
    make_devices(path=tmp_path, file="devices.yml", device_manager=instrument, pause=0)
    main = sys.modules["__main__"]
    try:
        for name in ("eiger2", "eiger2_async"):
            device = getattr(main, name)  # in the startup's namespace, as a session sees it
            assert device is instrument.devices[name]
            (uid,) = RE(bp.count([device], num=2))
            assert catalog.runs[uid].primary[f"{name}_image"].shape == (2, 512, 1028)
    finally:
        for name in ("eiger2", "eiger2_async"):
            if hasattr(main, name):
                delattr(main, name)
