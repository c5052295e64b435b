"""What every areaDetector plugin shares (ADCore's NDPluginDriver): NDArray ports, queues, drops
and counters.

A plugin takes NDArrays from the port its ``NDArrayPort`` names (the camera's ``EIG`` or another
plugin's output), re-wired at once when that record changes. With ``BlockingCallbacks`` Yes it
works in the sender's thread (the sender waits); with No, arrays wait in a queue of
``QueueSize`` and one arriving at a full queue is dropped and counted in ``DroppedArrays_RBV``.
``MinCallbackTime`` skips arrays arriving sooner than that after the last one taken. The work of
a plugin kind is ``compute`` (on the array alone) and ``show`` (its records);
a plugin with an output publishes it on its own port for the plugins downstream.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from caproto import AlarmSeverity, AlarmStatus

log = logging.getLogger(__name__)

COUNTER_UPDATE_PERIOD = 0.1  # s between CA updates of drop and queue counters while arrays flow
DEFAULT_QUEUE_SIZE = 20  # commonPlugins' QSIZE

# NDDataType_t names, as DataType records show them.
_DATA_TYPES = {
    np.dtype(np.int8): "Int8", np.dtype(np.uint8): "UInt8",
    np.dtype(np.int16): "Int16", np.dtype(np.uint16): "UInt16",
    np.dtype(np.int32): "Int32", np.dtype(np.uint32): "UInt32",
    np.dtype(np.int64): "Int64", np.dtype(np.uint64): "UInt64",
    np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64",
}
DTYPE_BY_NAME = {name: dtype for dtype, name in _DATA_TYPES.items()}


def data_type_name(dtype: np.dtype) -> str:
    """The NDDataType name of a numpy dtype (``UInt16`` ...)."""
    return _DATA_TYPES[np.dtype(dtype)]


@dataclass(frozen=True)
class NDArray:
    """One array as it travels between ports: a frame (y, x) with its id and time stamp."""

    data: np.ndarray
    unique_id: int
    timestamp: float  # s since the Unix epoch


async def post(record: Any, value: Any) -> None:
    """Set a scalar readback as a record the driver processes does: with MDEL 0 (ai, longin;
    bi and mbbi alike) a monitor is posted only when the value changes, so an unchanged value
    costs nothing on the wire."""
    if record.value != value:
        await record.write(value)


class PortError(ValueError):
    """An ``NDArrayPort`` that names no port, or one that would feed a plugin its own output."""


class Ports:
    """The IOC's NDArray ports by name: the camera's and each plugin's output, and who listens.

    It also counts the arrays queued or in work anywhere, so the camera can keep ``AcquireBusy``
    until its plugins are done (``WaitForPlugins``).
    """

    def __init__(self) -> None:
        self._owners: dict[str, PluginDriver | None] = {}  # None: a driver (the camera)
        self._listeners: dict[str, list[PluginDriver]] = collections.defaultdict(list)
        self._in_work = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def add_driver(self, name: str) -> None:
        """A port that only sends (the camera)."""
        self._owners[name] = None

    def add_plugin(self, plugin: PluginDriver) -> None:
        """A plugin's own output port (its ``PortName_RBV``)."""
        self._owners[plugin.port_name] = plugin

    def connect(self, plugin: PluginDriver, source: str) -> None:
        """Make ``plugin`` listen to ``source``; ``PortError`` (and no change) if it cannot."""
        if source not in self._owners:
            raise PortError(
                f"NDArrayPort {source!r} names no port of this IOC; choose one of "
                f"{', '.join(sorted(self._owners))}"
            )
        upstream = source
        while (owner := self._owners.get(upstream)) is not None:
            if owner is plugin:
                raise PortError(
                    f"NDArrayPort {source!r} would feed {plugin.port_name} its own output (a "
                    "loop); choose a port upstream of it"
                )
            upstream = owner.source
        for listeners in self._listeners.values():
            if plugin in listeners:
                listeners.remove(plugin)
        self._listeners[source].append(plugin)

    def wanted(self, port: str) -> bool:
        """Some enabled plugin listens to ``port`` (else the sender may skip making arrays)."""
        return any(p.enabled for p in self._listeners.get(port, ()))

    async def publish(self, port: str, array: NDArray) -> None:
        """Offer ``array`` to every plugin listening to ``port``."""
        for plugin in tuple(self._listeners.get(port, ())):
            await plugin.offer(array)

    def started(self) -> None:
        """An array was queued or taken into work."""
        self._in_work += 1
        self._idle.clear()

    def finished(self) -> None:
        """An array's work (and its publishing downstream) is over."""
        self._in_work -= 1
        if self._in_work == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Until no array is queued or in work anywhere; False if that took over ``timeout``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def flush_counters(self) -> None:
        """Show every plugin's counters as they are now (not throttled)."""
        for owner in self._owners.values():
            if owner is not None:
                await owner.show_counters()


class PluginDriver:
    """The NDPluginDriver behaviour, mixed into a plugin's record surface (a caproto PVGroup).

    Subclasses set ``PLUGIN_TYPE`` and implement ``compute`` (pure, on the array alone) and
    ``show`` (write its result to the records). ``compute`` returning an ``NDArray`` in the
    result's ``"output"`` publishes it on this plugin's port.
    """

    PLUGIN_TYPE = "NDPluginDriver"

    def __init__(self, *args: Any, port_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.port_name = port_name
        self.ports: Ports = self.parent.ports  # the IOC's, made before its groups
        self.source = ""
        self._queue: collections.deque[NDArray] = collections.deque()
        self._wake = asyncio.Event()
        self._last_taken = -float("inf")
        self._dropped = 0
        self._counters_shown = 0.0
        self._worker: asyncio.Task | None = None
        self.ports.add_plugin(self)

    # --- settings ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """``EnableCallbacks`` is Enable."""
        return self.EnableCallbacks_RBV.value == "Enable"

    @property
    def queue_size(self) -> int:
        """``QueueSize`` (at least 1)."""
        return max(1, int(self.QueueSize_RBV.value))

    async def start(self) -> None:
        """Identity, defaults and wiring as the IOC's start-up script leaves them."""
        await self.PortName_RBV.write(self.port_name)
        await self.PluginType_RBV.write(self.PLUGIN_TYPE)
        for name in ("QueueSize", "QueueSize_RBV", "QueueFree"):
            await getattr(self, name).write(DEFAULT_QUEUE_SIZE, verify_value=False)
        await self.MaxThreads_RBV.write(1)
        await self.NumThreads.write(1, verify_value=False)
        await self.NumThreads_RBV.write(1)
        await self.rewire(self.NDArrayPort.value)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def setting_changed(self, suffix: str, value: Any) -> Any:
        """A setpoint is being written; returns the value to keep instead, if any (its readback
        then shows that one)."""
        if suffix == "NDArrayPort":
            return await self.rewire(value)
        if suffix == "QueueSize":
            await self.QueueFree.write(max(0, max(1, int(value)) - len(self._queue)))
        elif suffix == "DroppedArrays":  # clients reset the counter by writing 0
            self._dropped = int(value)
        return None

    async def rewire(self, source: str) -> str:
        """Listen to ``source``; an unusable port keeps the old wiring, raises the readback's
        alarm and logs why (as asyn's error print does). Returns the port listened to."""
        try:
            self.ports.connect(self, source)
        except PortError as err:
            log.warning("%s: %s", self.port_name, err)
            await self.NDArrayPort_RBV.write(
                self.source, status=AlarmStatus.LINK, severity=AlarmSeverity.MAJOR_ALARM
            )
            return self.source
        self.source = source
        await self.NDArrayPort_RBV.write(source, status=AlarmStatus.NO_ALARM,
                                         severity=AlarmSeverity.NO_ALARM)
        return source

    # --- arrays -----------------------------------------------------------------------------

    async def offer(self, array: NDArray) -> None:
        """An array from the source port: worked now (blocking), queued, skipped or dropped."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_taken < self.MinCallbackTime_RBV.value:
            return
        if self.BlockingCallbacks_RBV.value == "Yes":
            self._last_taken = now
            self.ports.started()
            try:
                await self._process(array)
            finally:
                self.ports.finished()
            return
        if len(self._queue) >= self.queue_size:
            self._dropped += 1
            await self.show_counters(throttled=True)
            return
        self._last_taken = now
        self.ports.started()
        self._queue.append(array)
        self._wake.set()
        await self.show_counters(throttled=True)

    async def _work(self) -> None:
        """The plugin's own task (its thread in ADCore): take queued arrays one by one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await asyncio.sleep(0)  # the camera's deliveries go first
                array = self._queue.popleft()
                try:
                    await self._process(array)
                except Exception:
                    log.exception("%s: processing array %d failed", self.port_name,
                                  array.unique_id)
                finally:
                    self.ports.finished()

    async def _process(self, array: NDArray) -> None:
        started = time.perf_counter()
        # In the IOC's loop, not a thread: the work is ~1 ms of numpy, while each hand-off to
        # a thread and back waited out the GIL's 5 ms switch interval behind the file writer
        # (measured: 22 arrays/s per plugin instead of hundreds).
        result = self.compute(array)
        await self._show_array(array)
        await self.show(result)
        await self.UniqueId_RBV.write(array.unique_id)  # last: a client seeing it sees the rest
        await self.ExecutionTime_RBV.write((time.perf_counter() - started) * 1e3)
        await self.show_counters(throttled=True)
        output = result.get("output")
        if output is not None:
            await self.ports.publish(self.port_name, output)

    async def _show_array(self, array: NDArray) -> None:
        """The array-describing records of NDPluginDriver, for the array just taken."""
        height, width = array.data.shape
        counter = self.ArrayCounter_RBV.value + 1
        await self.ArrayCounter.write(counter, verify_value=False)
        await self.ArrayCounter_RBV.write(counter)
        await self.TimeStamp_RBV.write(array.timestamp)
        if self.ArraySize0_RBV.value != width or self.ArraySize1_RBV.value != height:
            await self.NDimensions_RBV.write(2)
            for name, value in (("ArraySize0_RBV", width), ("ArraySize1_RBV", height),
                                ("ArraySize2_RBV", 0), ("ArraySizeX_RBV", width),
                                ("ArraySizeY_RBV", height), ("ArraySizeZ_RBV", 0),
                                ("ArraySize_RBV", array.data.nbytes)):
                await getattr(self, name).write(value)
            dims = [width, height] + [0] * (len(self.Dimensions_RBV.value) - 2)
            await self.Dimensions_RBV.write(dims)
        type_name = data_type_name(array.data.dtype)
        if self.DataType_RBV.value != type_name:
            await self.DataType_RBV.write(type_name)

    async def show_counters(self, throttled: bool = False) -> None:
        """``DroppedArrays_RBV``, ``QueueFree`` and ``NumQueuedArrays`` (throttled while
        arrays flow, as a real IOC's scan rates do)."""
        now = time.monotonic()
        if throttled and now - self._counters_shown < COUNTER_UPDATE_PERIOD:
            return
        self._counters_shown = now
        queued = len(self._queue)
        if self.DroppedArrays_RBV.value != self._dropped:
            await self.DroppedArrays.write(self._dropped, verify_value=False)
            await self.DroppedArrays_RBV.write(self._dropped)
        await post(self.QueueFree, max(0, self.queue_size - queued))
        await post(self.NumQueuedArrays, queued)

    # --- the plugin kind's work ---------------------------------------------------------------

    def compute(self, array: NDArray) -> dict[str, Any]:
        """The work on one array; returns what ``show`` needs."""
        return {}

    async def show(self, result: dict[str, Any]) -> None:
        """Write the result of ``compute`` to the records."""

