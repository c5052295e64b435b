"""The record tables of a real ADEiger EIGER2 IOC: the driver, its NDFileHDF5 plugin and the
plugins ADCore's commonPlugins load.

Read from the tables shipped with the package: ``data/adeiger2_records.tsv`` (``cam1:``,
``HDF1:``) and ``data/adcore_plugins_records.tsv`` (``ROI1:``, ``Stats1:``, ``Stats2:``,
``image1:``, ``Pva1:``), each record with its type, enum strings, waveform type/size and default.
The simulator builds its PV surfaces from them and tests check a served surface against them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

ENUM_TYPES = frozenset({"bi", "bo", "busy", "mbbi", "mbbo"})
FLOAT_TYPES = frozenset({"ai", "ao", "calc", "calcout", "dfanout"})
INT_TYPES = frozenset({"longin", "longout", "fanout", "asyn", "sseq"})
STRING_TYPES = frozenset({"stringin", "stringout"})
ARRAY_TYPES = frozenset({"waveform", "subArray"})

_MACRO = re.compile(r"^\$\((?P<name>[A-Z_]+)(=(?P<default>[^)]*))?\)$")


@dataclass(frozen=True)
class Record:
    """One EPICS record as a real IOC serves it."""

    plugin: str  # "cam1:", "HDF1:", "Stats1:", ...
    suffix: str  # PV name after the plugin prefix, e.g. "Acquire_RBV"
    record_type: str
    choices: tuple[str, ...]  # enum strings in order (enum records only)
    ftvl: str  # waveform element type: CHAR, LONG (array records only)
    nelm: int  # waveform length (array records only)
    default: str  # initial VAL as the template gives it (macros resolved to their default)
    disabled: bool  # the template sets DISA=1 (the driver does not support the record)

    @property
    def kind(self) -> str:
        """How the value travels over CA: enum, float, int, string, char (text), array
        (integers) or float_array."""
        if self.record_type in ENUM_TYPES:
            return "enum"
        if self.record_type in FLOAT_TYPES:
            return "float"
        if self.record_type in INT_TYPES:
            return "int"
        if self.record_type in STRING_TYPES:
            return "string"
        if self.record_type in ARRAY_TYPES:
            return {"CHAR": "char", "DOUBLE": "float_array"}.get(self.ftvl, "array")
        raise ValueError(f"record {self.plugin}{self.suffix}: unknown type {self.record_type!r}")


def _resolve_macro(text: str) -> str:
    match = _MACRO.match(text)
    if match:
        return match.group("default") or ""
    return text


def _parse_nelm(text: str) -> int:
    return int(_resolve_macro(text) or 0)


TABLES = ("adeiger2_records.tsv", "adcore_plugins_records.tsv")


@cache
def load_records() -> tuple[Record, ...]:
    """Every record of the tables, in table order."""
    text = "\n".join(files("id3c_eiger").joinpath(f"data/{name}").read_text() for name in TABLES)
    rows = csv.reader(
        (line for line in text.splitlines() if line and not line.startswith("#")),
        delimiter="\t",
    )
    records = []
    for plugin, suffix, rtype, choices, ftvl, nelm, default, disabled, _source in rows:
        records.append(
            Record(
                plugin=plugin,
                suffix=suffix,
                record_type=rtype,
                choices=tuple(choices.split("|")) if choices else (),
                ftvl=ftvl,
                nelm=_parse_nelm(nelm) if nelm else 0,
                default=_resolve_macro(default),
                disabled=disabled == "1",
            )
        )
    return tuple(records)


def records_for(plugin: str) -> dict[str, Record]:
    """The records of one plugin (``"cam1:"``, ``"Stats1:"`` ...) by suffix."""
    return {r.suffix: r for r in load_records() if r.plugin == plugin}
