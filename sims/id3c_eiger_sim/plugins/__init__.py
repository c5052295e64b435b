"""The areaDetector plugins of the simulated IOC, as ADCore's commonPlugins load them for an
EIGER2: one small class per plugin kind over ``PluginDriver`` (ports, queues, drops, counters),
each mixed into the record surface generated from ``adcore_plugins_records.tsv``."""

from __future__ import annotations

from caproto.server import SubGroup

from ..surface import surface_class
from .base import NDArray, PluginDriver, PortError, Ports
from .pva import PvaPlugin, pva_server_config
from .roi import ROIPlugin
from .stats import StatsPlugin
from .std_arrays import StdArraysPlugin

__all__ = [
    "NDArray",
    "PluginDriver",
    "PortError",
    "Ports",
    "PvaPlugin",
    "ROIPlugin",
    "StatsPlugin",
    "StdArraysPlugin",
    "plugin_group",
    "pva_server_config",
]


def plugin_group(prefix: str, port_name: str, kind: type[PluginDriver]) -> SubGroup:
    """A SubGroup serving plugin ``prefix`` with the full record surface and ``kind``'s work."""
    name = prefix.rstrip(":")
    cls = type(f"{name}PVs", (kind, surface_class(prefix, f"{name}Surface")),
               {"__doc__": f"{prefix} ({kind.PLUGIN_TYPE}, port {port_name})"})
    return SubGroup(cls, prefix=prefix, port_name=port_name)
