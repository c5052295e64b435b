"""NDPluginStdArrays (``image1:``): the latest array in ``ArrayData``, a Channel Access LONG
waveform of one 1028 x 512 frame, as ImageJ's and Phoebus' CA viewers read it.

Values are converted to the waveform's 32-bit signed type as the C plugin does (a flagged UInt32
pixel, 2**32-1, reads -1); clients need ``EPICS_CA_MAX_ARRAY_BYTES`` of at least 2.1 MB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import NDArray, PluginDriver


class StdArraysPlugin(PluginDriver):
    """NDPluginStdArrays: each array taken becomes ``ArrayData``."""

    PLUGIN_TYPE = "NDPluginStdArrays"

    def compute(self, array: NDArray) -> dict[str, Any]:
        flat = array.data.ravel().astype(np.int32)
        size = len(self.ArrayData.value)
        if flat.size < size:  # a smaller array (an ROI upstream) fills the front
            flat = np.concatenate([flat, np.zeros(size - flat.size, np.int32)])
        return {"data": flat[:size]}

    async def show(self, result: dict[str, Any]) -> None:
        await self.ArrayData.write(result["data"])
