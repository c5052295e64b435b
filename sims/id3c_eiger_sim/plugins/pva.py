"""NDPluginPva (``Pva1:``): the latest array as an NTNDArray over PV Access at
``<prefix>Pva1:Image``, what c2dataviewer, Phoebus and ImageJ's NTNDA viewer display.

The PV Access server is p4p's, started with the IOC on its own UDP search port (``--pva-port``),
so several simulators share a host as their Channel Access servers do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from p4p.nt import NTNDArray
from p4p.server import Server
from p4p.server.thread import SharedPV

from .base import NDArray, PluginDriver

IMAGE_SUFFIX = "Image"


def pva_server_config(port: int, interfaces: list[str]) -> dict[str, str]:
    """p4p server settings: search (UDP) on ``port``, any TCP port, only ``interfaces``."""
    return {
        "EPICS_PVAS_INTF_ADDR_LIST": " ".join(interfaces),
        "EPICS_PVAS_BROADCAST_PORT": str(port),
        "EPICS_PVAS_SERVER_PORT": "0",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_PVAS_BEACON_ADDR_LIST": "",
    }


class PvaPlugin(PluginDriver):
    """NDPluginPva: each array taken is posted to the PV Access channel."""

    PLUGIN_TYPE = "NDPluginPva"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_pv = SharedPV()
        self.image_name = f"{self.prefix}{IMAGE_SUFFIX}"
        self._server: Server | None = None

    def serve(self, config: dict[str, str]) -> None:
        """Start the PV Access server of this plugin's channel."""
        self.image_pv.open(NTNDArray().wrap(np.zeros((1, 1), np.uint8)))
        self._server = Server(providers=[{self.image_name: self.image_pv}], conf=config,
                              useenv=False)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    async def start(self) -> None:
        await super().start()
        await self.PvName_RBV.write(self.image_name)

    def compute(self, array: NDArray) -> dict[str, Any]:
        if self._server is not None:
            value = NTNDArray().wrap(array.data, timestamp=array.timestamp)
            value["uniqueId"] = array.unique_id
            self.image_pv.post(value)
        return {}
