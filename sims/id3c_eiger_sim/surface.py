"""The PV surface of a real ADEiger IOC, generated from the record table.

``surface_class("cam1:")`` is a caproto ``PVGroup`` with one ``pvproperty`` per record of the
table: same name, CA type, enum strings, waveform type and length, record fields (``.DISA`` ...).
Setpoints echo to their ``_RBV`` partner as asyn parameters do. Behaviour classes subclass it
and redeclare the records that do more with ``record_pv(...)`` and a putter.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, PvpropertyChar, pvproperty
from caproto.server.records import records as caproto_records

from id3c_eiger.records import Record, records_for

# caproto has no "busy" or "sseq" record; "bo" and "seq" carry the same fields.
_FIELD_RECORD = {"busy": "bo", "sseq": "seq"}

# The fields a client of the IOC reads or writes: dbCommon's identity, scan, disable and alarm
# fields, and each record kind's display, limit, array, raw-value, state-string and link fields
# (caproto's bi/bo/mbbi/mbbo write RVAL with every value). caproto serves ~60 fields a record;
# these make a 1600-record IOC start in 4 s instead of 9.
CLIENT_FIELDS = frozenset((
    "NAME", "RTYP", "DESC", "SCAN", "PINI", "PROC", "DTYP", "DISA", "DISV", "SDIS", "STAT",
    "SEVR", "ACKS", "ACKT", "UDF", "TSE", "TPRO", "FLNK", "EGU", "PREC", "HOPR", "LOPR", "DRVH",
    "DRVL", "NELM", "NORD", "FTVL", "INP", "OUT", "DOL", "OMSL", "RVAL", "ZNAM", "ONAM",
    "ZRST", "ONST", "TWST", "THST", "FRST", "FVST", "SXST", "SVST", "EIST", "NIST", "TEST",
    "ELST", "TVST", "TTST", "FTST", "FFST"))

# A bo without ZNAM/ONAM: an IOC serves no strings and clients show the number; caproto cannot
# serve an enum without strings, so these are the strings clients would show.
NUMBERED_STATES = ("0", "1")

Putter = Callable[[PVGroup, Any, Any], Awaitable[Any]]


class PvpropertyText(PvpropertyChar):
    """A CHAR waveform holding text. An empty string arrives as one NUL byte, which caproto 1.3
    decodes to ``''`` and then fails to convert (ophyd-async puts ``XMLFileName=""``)."""

    async def write_from_dbr(self, data: Any, data_type: ChannelType, metadata: Any,
                             **kwargs: Any) -> None:
        if data_type == ChannelType.CHAR and not np.any(np.asarray(data)):
            await self.write("")
            return
        await super().write_from_dbr(data, data_type, metadata, **kwargs)


@cache
def client_fields(record_type: str) -> type[PVGroup]:
    """caproto's field group of ``record_type`` serving only ``CLIENT_FIELDS`` (those it has)."""
    full = caproto_records[_FIELD_RECORD.get(record_type, record_type)]
    kept = {attr: prop for attr, prop in full._pvs_.items() if prop.pvspec.name in CLIENT_FIELDS}
    # A field not served reads as None (caproto's alarm-limit check looks for HHSV ... so).
    namespace: dict[str, Any] = {attr: None for attr in full._pvs_ if attr not in kept}
    lean = type(full.__name__, (full,), namespace | {"__doc__": f"{record_type} client fields"})
    lean._pvs_ = OrderedDict(kept)
    return lean


def record_pv(record: Record, put: Putter | None = None, **overrides: Any) -> pvproperty:
    """A pvproperty serving ``record`` as the real IOC does (type, size, enum strings, fields)."""
    kind = record.kind
    kwargs: dict[str, Any] = {
        "name": record.suffix,
        "record": client_fields(record.record_type),
        "doc": f"{record.plugin}{record.suffix} ({record.record_type})",
        # Its own SEVR/STAT, as a record has: caproto's default shares one alarm among all a
        # group's PVs, so one raised alarm showed on every record and was sent to all of them.
        "alarm_group": record.suffix,
    }
    if kind == "enum":
        index = int(record.default or 0)
        choices = record.choices or NUMBERED_STATES
        kwargs |= {
            "value": choices[index],
            "dtype": ChannelType.ENUM,
            "enum_strings": choices,
        }
    elif kind == "float":
        kwargs |= {"value": float(record.default or 0.0), "dtype": float, "precision": 6}
    elif kind == "int":
        kwargs |= {"value": int(record.default or 0), "dtype": int}
    elif kind == "string":
        kwargs |= {"value": record.default, "dtype": ChannelType.STRING}
    elif kind == "char":
        kwargs |= {
            "value": record.default,
            "dtype": PvpropertyText,
            "max_length": record.nelm,
            "string_encoding": "latin-1",
        }
    elif kind == "float_array":
        kwargs |= {"value": [0.0] * record.nelm, "dtype": float, "max_length": record.nelm}
    else:  # integer array
        kwargs |= {"value": [0] * record.nelm, "dtype": int, "max_length": record.nelm}
    if put is not None:
        kwargs["put"] = put
    kwargs.update(overrides)
    return pvproperty(**kwargs)


def _echo_to(rbv: Record) -> Putter:
    """Putter copying a written setpoint into its readback (enum by index, strings differ)."""

    async def put(group: PVGroup, instance: Any, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            await group.report_error(f"{instance.pvspec.name} {value} refused: not a finite "
                                     "number; give a finite value (the previous value is kept)")
            return instance.value
        changed = getattr(group, "setting_changed", None)
        if changed is not None:  # behaviour attached where it matters (plugins); it may refuse
            kept = await changed(instance.pvspec.name, value)
            value = value if kept is None else kept
        readback = getattr(group, rbv.suffix)
        if rbv.kind == "enum" and instance.enum_strings:
            index = list(instance.enum_strings).index(value)
            value_rbv = readback.enum_strings[min(index, len(readback.enum_strings) - 1)]
            await readback.write(value_rbv)
        else:
            await readback.write(value)
        return value

    return put


def surface_class(plugin: str, name: str) -> type[PVGroup]:
    """A PVGroup class serving every record of ``plugin`` ("cam1:", "Stats1:" ...)."""
    records = records_for(plugin)
    namespace: dict[str, Any] = {"__doc__": f"Every record of an ADEiger IOC's {plugin}"}
    for suffix, record in records.items():
        readback = records.get(f"{suffix}_RBV")
        namespace[suffix] = record_pv(record, put=_echo_to(readback) if readback else None)
    return type(name, (PVGroup,), namespace)


async def apply_disabled_fields(group: PVGroup, plugin: str) -> None:
    """Set ``.DISA`` on the records the template disables, as clients read it."""
    for suffix, record in records_for(plugin).items():
        if record.disabled:
            await getattr(group, suffix).fields["DISA"].write(1)


async def sync_readbacks(group: PVGroup, plugin: str) -> None:
    """Show every setpoint's start-up value in its ``_RBV``, as the driver's parameters do."""
    records = records_for(plugin)
    for suffix in records:
        readback = records.get(f"{suffix}_RBV")
        if readback is not None:
            setpoint = getattr(group, suffix)
            await _echo_to(readback)(group, setpoint, setpoint.value)
