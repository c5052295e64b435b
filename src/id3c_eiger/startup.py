"""An instrument's startup namespace: the RunEngine, every device by name, and Tiled.

What a beamline session, or a bluesky-queueserver worker, needs at start: a RunEngine whose
documents go to Tiled (TiledWriter, behind a spool), then the devices of the devices file
(``config.find_devices_file``) by their names. The queueserver sees only what its startup code
leaves in the worker's namespace, so the startup script for ``start-re-manager
--startup-script`` is::

    from id3c_eiger.startup import instrument_namespace
    globals().update(instrument_namespace())
    from bluesky.plans import count, scan  # the plans the queue may run

Tiled: ``tiled_uri`` or ``$ID3C_EIGER_TILED_URI`` (key: ``$TILED_API_KEY``); none, no Tiled.
Devices whose IOC does not answer are left out and named in one warning.
"""

from __future__ import annotations

import os
from typing import Any

TILED_URI_VARIABLE = "ID3C_EIGER_TILED_URI"


def instrument_namespace(devices_file: str | os.PathLike[str] | None = None, *,
                         tiled_uri: str | None = None, api_key: str | None = None,
                         spool_directory: str | os.PathLike[str] | None = None
                         ) -> dict[str, Any]:
    """``{"RE": ..., "catalog": ..., "<device name>": device, ...}`` for a startup's globals."""
    from bluesky import RunEngine

    from .catalog import open_catalog
    from .config import load_devices

    RE = RunEngine({})  # first: ophyd-async devices connect in its loop
    namespace: dict[str, Any] = {"RE": RE, "catalog": None}
    uri = tiled_uri or os.environ.get(TILED_URI_VARIABLE)
    if uri:
        catalog = open_catalog(uri, api_key=api_key or os.environ.get("TILED_API_KEY"))
        catalog.subscribe(RE, spool_directory=spool_directory)
        namespace["catalog"] = catalog
    instrument = load_devices(devices_file, skip_unreachable=True)
    namespace |= {device.name: device for device in instrument.devices.root_devices}
    return namespace
