"""NDPluginStats (``Stats1:`` on the camera, ``Stats2:`` on ROI1): the numbers of each array as
ADCore computes them, on every pixel it receives (the EIGER's flagged pixels included).

Statistics (``ComputeStatistics``): Total, Net (Total less the mean of a ``BgdWidth`` border,
times the pixel count; corners counted twice, as ADCore does), Min/Max value and first position,
Mean and population Sigma. Centroid (``ComputeCentroid``): moments of the pixels at or above
``CentroidThreshold`` with ADCore's formulas, and the average/threshold profiles they come from
(also with ``ComputeProfiles``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import NDArray, PluginDriver, post


def statistics(data: np.ndarray, bgd_width: int) -> dict[str, float]:
    """ADCore's ``doComputeStatistics`` and its background, for a 2-D array (y, x)."""
    flat = data.ravel()  # min, max and where on the native type: cheaper, the same values
    n = flat.size
    imin, imax = int(np.argmin(flat)), int(np.argmax(flat))
    width = data.shape[1]
    values = flat.astype(np.float64)
    total = float(values.sum())
    mean = total / n
    sigma = math.sqrt(max(float(np.dot(values, values)) / n - mean * mean, 0.0))
    net = total
    if bgd_width > 0:
        w = bgd_width
        borders = (data[:, :w], data[:, -w:], data[:w, :], data[-w:, :])
        pixels = sum(b.size for b in borders) or 1
        net = total - sum(float(b.sum(dtype=np.float64)) for b in borders) / pixels * n
    return {
        "Total_RBV": total, "Net_RBV": net, "MeanValue_RBV": mean, "Sigma_RBV": sigma,
        "MinValue_RBV": float(flat[imin]), "MaxValue_RBV": float(flat[imax]),
        "MinX_RBV": imin % width, "MinY_RBV": imin // width,
        "MaxX_RBV": imax % width, "MaxY_RBV": imax // width,
    }


def centroid(data: np.ndarray, threshold: float) -> dict[str, Any]:
    """ADCore's ``doComputeCentroid``: profiles and moments of the pixels >= ``threshold``."""
    values = data.astype(np.float64, copy=False)
    height, width = values.shape
    above = np.where(values >= threshold, values, 0.0)
    px, py = above.sum(axis=0), above.sum(axis=1)
    ix, iy = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    result: dict[str, Any] = {
        "ProfileAverageX_RBV": values.sum(axis=0) / height,
        "ProfileAverageY_RBV": values.sum(axis=1) / width,
        "ProfileThresholdX_RBV": px / height,
        "ProfileThresholdY_RBV": py / width,
        "ProfileSizeX_RBV": width, "ProfileSizeY_RBV": height,
    }
    m00 = float(px.sum())
    if m00 <= 0:
        return result
    m10, m20 = float(px @ ix), float(px @ ix**2)
    m01, m02 = float(py @ iy), float(py @ iy**2)
    m11 = float(iy @ above @ ix)
    var_x = (m20 - m10 * m10 / m00) / m00
    var_y = (m02 - m01 * m01 / m00) / m00
    var_xy = (m11 - m10 * m01 / m00) / m00
    sigma_x, sigma_y = math.sqrt(max(var_x, 0.0)), math.sqrt(max(var_y, 0.0))
    result |= {
        "CentroidTotal_RBV": m00, "CentroidX_RBV": m10 / m00, "CentroidY_RBV": m01 / m00,
        "SigmaX_RBV": sigma_x, "SigmaY_RBV": sigma_y,
        "SigmaXY_RBV": var_xy / (sigma_x * sigma_y) if sigma_x and sigma_y else 0.0,
        "Orientation_RBV": math.degrees(0.5 * math.atan2(2.0 * var_xy, var_x - var_y)),
    }
    return result


class StatsPlugin(PluginDriver):
    """NDPluginStats: statistics and centroid of every array taken."""

    PLUGIN_TYPE = "NDPluginStats"

    def compute(self, array: NDArray) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.ComputeStatistics_RBV.value == "Yes":
            result |= statistics(array.data, int(self.BgdWidth_RBV.value))
        if "Yes" in (self.ComputeCentroid_RBV.value, self.ComputeProfiles_RBV.value):
            result |= centroid(array.data, float(self.CentroidThreshold_RBV.value))
        return result

    async def show(self, result: dict[str, Any]) -> None:
        for name, value in result.items():
            record = getattr(self, name)
            if isinstance(value, np.ndarray):  # a profile, in a waveform of the maximum size
                padded = np.zeros(len(record.value))
                padded[: value.size] = value[: len(padded)]
                await record.write(padded)  # a waveform posts each time it is processed
            else:
                await post(record, value)
