"""The ophyd-async EIGER2 without an IOC, for fast tests of plan logic (as ``ophyd_async.testing``
does for its own devices).

``mock_eiger2`` connects the device with mocked signals and answers its puts as the IOC's
``HDF1:`` source would: a capture opens a real NDFileHDF5 file (the layout of
``id3c_eiger.layout``) at the write path; the detector arms at ``Acquire`` and each exposure (the
arm itself, or with ``ManualTrigger`` each ``cam1:Trigger``) appends ``images_per_point`` frames
of zeros, counted by HDF1 and the Stats plugins; ``Acquire`` Done disarms. The device stages, counts and
unstages through its own logic and health checks; plans see the documents, shapes and files of
a real run, with zero counts. For the IOC's behaviour (timing, errors, the FileWriter), test
against the simulator (``pytest --eiger-simulators N``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from ophyd_async.core import EnableDisable, callback_on_mock_put, set_mock_value
from ophyd_async.epics.adcore import ADState

from .async_devices import Eiger2Detector
from .geometry import EIGER2_500K
from .layout import NDFile

MOCK_PREFIX = "MOCKEIG2:"
BIT_DEPTH = 32  # frames as at exposures the detector counts in 32 bits


async def mock_eiger2(directory: str | Path, name: str = "eiger2",
                      images_per_point: int = 1) -> Eiger2Detector:
    """The ophyd-async EIGER2, connected with mocked signals that behave as the IOC's HDF1
    source, writing into ``directory`` (an existing directory). Await it in the RunEngine's
    event loop (``call_in_bluesky_event_loop``), as ophyd-async devices connect."""
    eiger2 = Eiger2Detector(MOCK_PREFIX, name=name, write_path_template=str(directory),
                            images_per_point=images_per_point)
    await eiger2.connect(mock=True)
    driver, hdf1 = eiger2.driver, eiger2.hdf1
    model = EIGER2_500K
    for signal, value in ((driver.array_size_x, model.width), (driver.array_size_y, model.height),
                          (driver.bit_depth_image, BIT_DEPTH), (driver.detector_state, ADState.IDLE),
                          (driver.model, "EIGER2 Si 500K"), (hdf1.file_path_exists, True),
                          (hdf1.write_status, "Write OK")):
        set_mock_value(signal, value)
    state: dict[str, Any] = {"file": None, "exposures": set()}  # (tasks kept from the GC)
    dtype = np.dtype(f"<u{BIT_DEPTH // 8}")
    frame = np.zeros((model.height, model.width), dtype=dtype).tobytes()

    async def on_capture(value: Any, wait: bool = True) -> None:
        if value and state["file"] is None:
            path = Path(await hdf1.file_path.get_value()) / f"{await hdf1.file_name.get_value()}.h5"
            state["file"] = NDFile(path, (model.height, model.width), dtype, {},
                                   store_attributes=False, swmr=True)
            set_mock_value(hdf1.full_file_name, str(path))
        elif not value and state["file"] is not None:
            state["file"].close()
            state["file"] = None

    async def expose(disarm: bool) -> None:
        await asyncio.sleep(0)
        n = eiger2.images_per_point
        if state["file"] is not None:
            state["file"].append(n, lambda _k: frame, 0, {})
        for counter in (hdf1.num_captured, eiger2.stats1.array_counter,
                        eiger2.stats2.array_counter):
            set_mock_value(counter, await counter.get_value() + n)
        if disarm:
            set_mock_value(driver.armed, False)
            set_mock_value(driver.acquire, False)

    def start(exposure: Any) -> None:
        task = asyncio.get_running_loop().create_task(exposure)
        state["exposures"].add(task)
        task.add_done_callback(state["exposures"].discard)

    async def on_acquire(value: Any, wait: bool = True) -> None:
        if not value:
            set_mock_value(driver.armed, False)
            return
        set_mock_value(driver.armed, True)
        if await driver.manual_trigger.get_value() != EnableDisable.ENABLE:
            start(expose(disarm=True))

    def on_trigger(value: Any, wait: bool = True) -> None:
        start(expose(disarm=False))

    callback_on_mock_put(hdf1.capture, on_capture)
    callback_on_mock_put(driver.acquire, on_acquire)
    callback_on_mock_put(driver.software_trigger, on_trigger)
    return eiger2

