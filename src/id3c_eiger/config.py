"""``configs/devices.yml``, read as APS beamlines read it: guarneri ``Instrument.load``.

The file maps the dotted path of a device class or factory to a list of keyword maps, one per
device (apsbits' ``make_devices()`` reads the same file the same way). Before guarneri builds
anything, every entry is checked against its class's signature, so a typo or a wrong type names
the file, the entry and the key instead of failing deep inside a constructor.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from pathlib import Path
from typing import Any

import guarneri
import ophyd_async.core
import yaml
from bluesky.run_engine import call_in_bluesky_event_loop, get_bluesky_event_loop
from guarneri.helpers import dynamic_import
from pydantic import TypeAdapter, ValidationError

DEFAULT_DEVICES_FILE = Path(__file__).resolve().parents[2] / "configs" / "devices.yml"
CONNECT_TIMEOUT = 10.0  # s


class DevicesFileError(ValueError):
    """A devices file breaks a rule; the message names the file, the entry and the key."""


def _entry_name(index: int, kwargs: dict[str, Any]) -> str:
    name = kwargs.get("name")
    return f"entry {index + 1} (name {name!r})" if name else f"entry {index + 1}"


def _check_entry(path: Path, class_path: str, index: int, kwargs: Any) -> None:
    where = f"{path}: {class_path}, "
    if not isinstance(kwargs, dict):
        raise DevicesFileError(
            f"{where}entry {index + 1} is {kwargs!r}, not a map of keyword arguments; write it "
            "as '- name: ...' followed by 'key: value' lines"
        )
    entry = where + _entry_name(index, kwargs)
    try:
        factory = dynamic_import(class_path)
    except (ImportError, AttributeError, ValueError) as err:
        raise DevicesFileError(
            f"{where}cannot import {class_path!r} ({err}); the top-level key must be the dotted "
            "path of a class or factory, e.g. id3c_eiger.devices.Eiger2Detector"
        ) from err
    signature = inspect.signature(factory)
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key, value in kwargs.items():
        if key not in params and not takes_any:
            raise DevicesFileError(
                f"{entry}: unknown key {key!r}; {class_path} accepts: {', '.join(accepted)}"
            )
        if key in hints:
            try:
                TypeAdapter(hints[key]).validate_python(value, strict=True)
            except ValidationError as err:
                expected = getattr(hints[key], "__name__", None) or str(hints[key])
                raise DevicesFileError(
                    f"{entry}: key {key!r} is {value!r} ({type(value).__name__}), expected "
                    f"{expected}; {err.errors()[0]['msg']}"
                ) from err
    missing = [
        n for n, p in params.items()
        if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and n not in kwargs
    ]
    if missing:
        raise DevicesFileError(f"{entry}: missing required key(s) {', '.join(missing)}")


def check_devices_file(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read and check a devices file without building anything; returns its entries."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as err:
        raise DevicesFileError(f"cannot read devices file {path}: {err}") from err
    except yaml.YAMLError as err:
        raise DevicesFileError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(content, dict):
        raise DevicesFileError(
            f"{path}: the top level must map 'dotted.path.Class:' to a list of entries, "
            f"found {type(content).__name__}"
        )
    for class_path, entries in content.items():
        if not isinstance(entries, list):
            raise DevicesFileError(
                f"{path}: {class_path}: the value must be a list of entries ('- name: ...'), "
                f"found {type(entries).__name__}"
            )
        for index, kwargs in enumerate(entries):
            _check_entry(path, class_path, index, kwargs)
    return content


def device_names(path: str | Path) -> list[str]:
    """The names of the devices of a checked devices file, sorted."""
    return sorted(str(k.get("name")) for entries in check_devices_file(path).values()
                  for k in entries)


def device_entry(path: str | Path, name: str) -> tuple[str, dict[str, Any]]:
    """The class path and keywords of the device called ``name`` in a checked devices file."""
    content = check_devices_file(path)
    for class_path, entries in content.items():
        for kwargs in entries:
            if kwargs.get("name") == name:
                return class_path, kwargs
    names = device_names(path)
    raise DevicesFileError(
        f"{path} has no device named {name!r}; it names: {', '.join(names) or '(none)'}. "
        "Fix: give one of these, or add the entry"
    )


def load_devices(
    path: str | Path = DEFAULT_DEVICES_FILE, *, connect: bool = True, timeout: float = CONNECT_TIMEOUT
) -> guarneri.Instrument:
    """Build (and connect) every device of a devices file with guarneri, as apsbits does.

    Returns the guarneri ``Instrument``; ``instrument.devices["eiger2"]`` is a device by name.
    ophyd-async devices connect in the RunEngine's event loop, so create the RunEngine first
    (as an apsbits startup does). Connection failures raise ophyd-async's ``NotConnectedError``
    naming each device.
    """
    path = Path(path)
    check_devices_file(path)
    instrument = guarneri.Instrument({})
    instrument.load(path)
    if not connect:
        return instrument
    loop = get_bluesky_event_loop()
    if loop is not None and loop.is_running():
        call_in_bluesky_event_loop(instrument.connect(timeout=timeout), timeout + CONNECT_TIMEOUT)
        return instrument
    asynchronous = sorted(
        d.name for d in instrument.devices.root_devices if isinstance(d, ophyd_async.core.Device)
    )
    if asynchronous:
        raise RuntimeError(
            f"{path}: ophyd-async device(s) {', '.join(asynchronous)} must connect in the "
            "RunEngine's event loop, and there is none yet; create the RunEngine, then load"
        )
    asyncio.run(instrument.connect(timeout=timeout))
    return instrument
