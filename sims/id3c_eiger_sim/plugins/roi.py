"""NDPluginROI (``ROI1:``): a region of each array, binned, scaled and typed as ADCore does, sent
on its own port (``Stats2:`` listens there in commonPlugins).

The requested region (``MinX``/``SizeX``/``BinX`` ...) is clamped to the array received, and the
readbacks show the region used: an offset past the edge becomes the last pixel, a size past it
what is left, a bin at most the size. Binning sums pixels; the output is ``size // bin`` long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import DTYPE_BY_NAME, NDArray, PluginDriver, post


@dataclass(frozen=True)
class Axis:
    """One dimension of a region: first pixel, pixels taken, pixels summed per output pixel."""

    offset: int
    size: int
    binning: int

    @classmethod
    def clamped(cls, enabled: bool, offset: int, size: int, binning: int, extent: int,
                auto_size: bool = False) -> Axis:
        """NDPluginROI's rules for a dimension of ``extent`` pixels."""
        if not enabled:
            return cls(0, extent, 1)
        offset = min(max(offset, 0), extent - 1)
        size = extent if auto_size else size
        size = min(max(size, 1), extent - offset)
        return cls(offset, size, min(max(binning, 1), size))

    def take(self, data: np.ndarray, axis: int) -> np.ndarray:
        """This region of ``data`` along ``axis``, binned (sums, in 64 bits)."""
        n_out = self.size // self.binning
        part = np.take(data, range(self.offset, self.offset + n_out * self.binning), axis=axis)
        if self.binning == 1:
            return part
        shape = list(part.shape)
        shape[axis : axis + 1] = [n_out, self.binning]
        summing = np.float64 if part.dtype.kind == "f" else np.int64
        return part.reshape(shape).sum(axis=axis + 1, dtype=summing)


def region(data: np.ndarray, x: Axis, y: Axis, out_type: str, scale: float | None) -> np.ndarray:
    """The ROI output for a (y, x) array: cut, binned, divided by ``scale``, typed ``out_type``
    (an NDDataType name, or "Automatic" for the input's type; values wrap as in C)."""
    dtype = data.dtype if out_type == "Automatic" else DTYPE_BY_NAME[out_type]
    cut = x.take(y.take(data, 0), 1)
    if scale is not None and scale not in (0, 1):
        cut = cut.astype(np.float64) / scale
    return np.ascontiguousarray(cut).astype(dtype, copy=False)


class ROIPlugin(PluginDriver):
    """NDPluginROI: one region of interest of each array, published on the ROI's port."""

    PLUGIN_TYPE = "NDPluginROI"

    def _axis(self, name: str, extent: int) -> Axis:
        return Axis.clamped(
            getattr(self, f"Enable{name}_RBV").value == "Enable",
            int(getattr(self, f"Min{name}").value),
            int(getattr(self, f"Size{name}").value),
            int(getattr(self, f"Bin{name}").value),
            extent,
            getattr(self, f"AutoSize{name}_RBV").value == "Yes",
        )

    def compute(self, array: NDArray) -> dict[str, Any]:
        height, width = array.data.shape
        x, y = self._axis("X", width), self._axis("Y", height)
        scale = float(self.Scale_RBV.value) if self.EnableScale_RBV.value == "Enable" else None
        data = region(array.data, x, y, self.DataTypeOut_RBV.value, scale)
        return {
            "x": x, "y": y, "extent": (width, height),
            "output": NDArray(data, array.unique_id, array.timestamp),
        }

    async def show(self, result: dict[str, Any]) -> None:
        (width, height), output = result["extent"], result["output"].data
        for name, axis, extent in (("X", result["x"], width), ("Y", result["y"], height)):
            await post(getattr(self, f"MaxSize{name}_RBV"), extent)
            await post(getattr(self, f"Min{name}_RBV"), axis.offset)
            await post(getattr(self, f"Size{name}_RBV"), axis.size)
            await post(getattr(self, f"Bin{name}_RBV"), axis.binning)
        await post(self.ArraySizeX_RBV, output.shape[1])
        await post(self.ArraySizeY_RBV, output.shape[0])
        await post(self.ArraySize0_RBV, output.shape[1])
        await post(self.ArraySize1_RBV, output.shape[0])
