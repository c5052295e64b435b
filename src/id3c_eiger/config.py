"""``devices.yml``, read as APS beamlines read it: guarneri ``Instrument.load``.

The file maps the dotted path of a device class or factory to a list of keyword maps, one per
device (apsbits' ``make_devices()`` reads the same file the same way). Before guarneri builds
anything, every entry is checked against its class's signature, so a typo or a wrong type names
the file, the entry and the key instead of failing deep inside a constructor.

Which file: the one given, else ``$ID3C_EIGER_DEVICES`` (a site's own), else the one shipped in
the package (``id3c_eiger/configs/devices.yml``; ``configs/devices.yml`` of a checkout links to
it), so an installed wheel works as a checkout does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import tempfile
import typing
from pathlib import Path
from typing import Any

import guarneri
import ophyd_async.core
import yaml
from bluesky.run_engine import call_in_bluesky_event_loop, get_bluesky_event_loop
from guarneri.helpers import dynamic_import
from pydantic import TypeAdapter, ValidationError

logger = logging.getLogger(__name__)

PACKAGED_DEVICES_FILE = Path(__file__).resolve().parent / "configs" / "devices.yml"
DEVICES_VARIABLE = "ID3C_EIGER_DEVICES"  # a site's devices file
CONNECT_TIMEOUT = 10.0  # s


def find_devices_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The devices file to read: ``path``, else ``$ID3C_EIGER_DEVICES``, else the packaged one."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(DEVICES_VARIABLE) or PACKAGED_DEVICES_FILE)


class DevicesFileError(ValueError):
    """A devices file breaks a rule; the message names the file, the entry and the key."""


class DevicesNotConnected(ConnectionError):
    """Devices whose IOC did not answer, named in one message with their prefixes; the others
    were loaded and connected (``instrument``)."""

    def __init__(self, path: Path, failures: dict[str, str], instrument: guarneri.Instrument):
        self.failures = failures
        self.instrument = instrument
        named = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        loaded = ", ".join(sorted(d.name for d in instrument.devices.root_devices
                                  if d.name not in failures)) or "none"
        super().__init__(
            f"{path}: {len(failures)} device(s) did not connect ({named}); loaded: {loaded}. "
            "Fix: start the IOC, check the prefix, and that EPICS_CA_ADDR_LIST reaches the "
            "IOC's host; load_devices(..., skip_unreachable=True) loads the rest without them")


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
    path: str | os.PathLike[str] | None = None, *, connect: bool = True,
    timeout: float = CONNECT_TIMEOUT, skip_unreachable: bool = False, **overrides: Any,
) -> guarneri.Instrument:
    """Build (and connect) every device of a devices file with guarneri, as apsbits does.

    ``path``: see ``find_devices_file``. ``overrides`` replace keys of every entry for this call
    (``prefix="SIM1:"``, ``write_path_template=...``). Returns the guarneri ``Instrument``;
    ``instrument.devices["eiger2"]`` is a device by name. ophyd-async devices connect in the
    RunEngine's event loop, so create the RunEngine first (as an apsbits startup does).

    Devices whose IOC does not answer are named in one ``DevicesNotConnected``, which holds the
    instrument with the others connected; with ``skip_unreachable`` they are left out, logged in
    that one message, and the rest is returned.
    """
    path = find_devices_file(path)
    content = check_devices_file(path)
    if overrides:
        content = {class_path: [{**entry, **overrides} for entry in entries]
                   for class_path, entries in content.items()}
        for class_path, entries in content.items():
            for index, entry in enumerate(entries):
                _check_entry(path, class_path, index, entry)
    instrument = guarneri.Instrument({})
    if overrides:  # (guarneri 0.3 cannot load an open file: a file with the overrides applied)
        with tempfile.TemporaryDirectory(prefix="id3c-eiger-devices-") as directory:
            overridden = Path(directory) / path.name
            overridden.write_text(yaml.safe_dump(content))
            instrument.load(overridden)
    else:
        instrument.load(path)
    if not connect:
        return instrument
    loop = get_bluesky_event_loop()
    if loop is not None and loop.is_running():
        connecting = call_in_bluesky_event_loop(
            instrument.connect(timeout=timeout, return_exceptions=True), timeout + CONNECT_TIMEOUT)
    else:
        asynchronous = sorted(d.name for d in instrument.devices.root_devices
                              if isinstance(d, ophyd_async.core.Device))
        if asynchronous:
            raise RuntimeError(
                f"{path}: ophyd-async device(s) {', '.join(asynchronous)} must connect in the "
                "RunEngine's event loop, and there is none yet; create the RunEngine, then load")
        connecting = asyncio.run(instrument.connect(timeout=timeout, return_exceptions=True))
    _, exceptions = connecting
    if not exceptions:
        return instrument
    failures = {name: _unreachable(instrument, name, err) for name, err in exceptions.items()}
    error = DevicesNotConnected(path, failures, instrument)
    if not skip_unreachable:
        raise error
    for name in failures:
        instrument.devices.pop(name)
    logger.warning("%s", error)
    return instrument


def _unreachable(instrument: guarneri.Instrument, name: str, err: BaseException) -> str:
    """One line for a device that did not connect: its prefix and the first cause."""
    device = next((d for d in instrument.devices.root_devices if d.name == name), None)
    prefix = getattr(device, "prefix", None) or getattr(device, "_prefix", None)
    first = " ".join(str(err).split())[:200]
    return f"prefix {prefix!r} did not answer ({first})" if prefix else first
