"""Detector geometry and timing limits of the EIGER models the project knows.

One place for frame shape, pixel size, dead time, the image bit depth that follows the timing
(as ADEiger reports it in ``DataType_RBV``), the model's pixel mask and regions of interest in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np

# DECTRIS pixel_mask bits (SIMPLON API 1.8).
MASK_GAP = 1 << 0
MASK_DEAD = 1 << 1
MASK_UNDER_RESPONDING = 1 << 2
MASK_OVER_RESPONDING = 1 << 3
MASK_NOISY = 1 << 4

HC_EV_ANGSTROM = 12398.419843320026  # h*c in eV*Angstrom: wavelength[A] = HC / energy[eV]

DATA_TYPE_BY_BITS = {8: "UInt8", 16: "UInt16", 32: "UInt32"}


class TimingError(ValueError):
    """Exposure settings the detector cannot do; the message names the limit and the fix."""


@dataclass(frozen=True)
class DetectorModel:
    """What one EIGER model is: shape, pixels, limits and the timing rule for its bit depth."""

    key: str
    description: str
    width: int
    height: int
    chips_x: int
    chips_y: int
    chip_gap: int  # pixels between chips, flagged MASK_GAP (0 for EIGER2: contiguous module)
    pixel_size: float = 75e-6  # m
    sensor_material: str = "Si"
    sensor_thickness: float = 450e-6  # m
    dead_time: float = 3e-6  # s between frames, continuous readout
    min_period_16bit: float = 0.00045  # s: faster than this the detector reads out 8-bit
    min_period: float = 1 / 4500  # s: fastest 8-bit frame period
    max_time: float = 3600.0  # s: longest count_time / frame_time accepted
    summation_time: float = 0.0066  # s: longer count_time is auto-summed to 32 bit
    max_count_rate: float = 2e6  # counts/s/pixel before count-rate correction cuts off
    energy_range: tuple[float, float] = (3500.0, 40000.0)  # eV, photon energy
    threshold_range: tuple[float, float] = (1750.0, 36000.0)  # eV
    serial_number: str = "E-01-0000"
    firmware_version: str = "2022.1.2"

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape as numpy and HDF5 store it: (height, width)."""
        return (self.height, self.width)

    def bit_depth(self, count_time: float, frame_time: float) -> int:
        """Image bit depth for the timing, the ADEiger rule: 32 summed, 8 above 2.2 kHz, else 16."""
        if count_time > self.summation_time:
            return 32
        if frame_time < self.min_period_16bit:
            return 8
        return 16

    def data_type(self, count_time: float, frame_time: float) -> str:
        """``DataType_RBV`` enum string for the timing (``UInt32``/``UInt16``/``UInt8``)."""
        return DATA_TYPE_BY_BITS[self.bit_depth(count_time, frame_time)]

    def frame_period(self, livetime: float, deadtime: float = 0.0, allow_8bit: bool = False) -> float:
        """The frame period for ``livetime`` plus ``deadtime`` (0: the readout dead time), checked
        against the model's limits; ``TimingError`` names the limit that is broken."""
        if not livetime > 0:
            raise TimingError(f"livetime {livetime!r} s must be > 0: the exposure of each frame")
        if livetime > self.max_time:
            raise TimingError(
                f"livetime {livetime:g} s exceeds the {self.description} limit of "
                f"{self.max_time:g} s per frame; split the exposure into more frames"
            )
        if deadtime and deadtime < self.dead_time:
            raise TimingError(
                f"deadtime {deadtime:g} s is below the {self.description} readout dead time of "
                f"{self.dead_time:g} s; give deadtime >= {self.dead_time:g} s, or 0 for the minimum"
            )
        period = livetime + (deadtime or self.dead_time)
        fastest = self.min_period if allow_8bit else self.min_period_16bit
        if period < fastest * (1 - 1e-9):
            bits = "8-bit" if allow_8bit else "16-bit"
            hint = "" if allow_8bit else (
                f"; faster, up to {1 / self.min_period:.0f} Hz, only as 8-bit frames "
                "(allow_8bit=True)"
            )
            raise TimingError(
                f"frame period {period * 1e3:.4g} ms (livetime {livetime:g} s + deadtime "
                f"{deadtime or self.dead_time:g} s) is below the {self.description} limit for "
                f"{bits} data: {fastest * 1e3:.4g} ms ({1 / fastest:.0f} Hz). Fix: lengthen "
                f"livetime to >= {fastest - (deadtime or self.dead_time):.4g} s{hint}"
            )
        return period

    def saturation_value(self, count_time: float, bit_depth: int) -> int:
        """Largest count a pixel reports: the count-rate cutoff, below the flagged value."""
        cutoff = int(self.max_count_rate * max(count_time, 1e-7))
        return max(1, min(cutoff, flagged_value(bit_depth) - 1))

    def pixel_mask(self) -> np.ndarray:
        """The model's pixel mask (uint32, DECTRIS bits), the same on every call."""
        return _pixel_mask(self)


def check_images_per_point(images_per_point: object) -> int:
    """``images_per_point`` if it is a frame count a trigger can take, else ValueError."""
    if not isinstance(images_per_point, int) or images_per_point < 1:
        raise ValueError(
            f"images_per_point {images_per_point!r} must be an integer >= 1 (frames per "
            "trigger, cam1:NumImages)"
        )
    return images_per_point


class Roi(NamedTuple):
    """A region of interest in detector pixels: first column and row, width and height."""

    x: int
    y: int
    width: int
    height: int


def check_roi(roi: object, model: DetectorModel) -> Roi:
    """``roi`` as an ``Roi`` inside ``model``'s frame, else ValueError naming the rule."""
    try:
        region = Roi(*roi)  # type: ignore[misc]
    except TypeError:
        region = None
    if region is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in region):
        raise ValueError(
            f"roi {roi!r} must be four integers [x, y, width, height] in detector pixels"
        )
    x, y, width, height = region
    if x < 0 or y < 0 or width < 1 or height < 1 or x + width > model.width or (
            y + height > model.height):
        raise ValueError(
            f"roi {list(region)} is not inside the {model.width} x {model.height} frame of the "
            f"{model.description}: need x >= 0, y >= 0, width and height >= 1, "
            f"x + width <= {model.width}, y + height <= {model.height}"
        )
    return region


def flagged_value(bit_depth: int) -> int:
    """The value a masked pixel reads: (2**bit_depth) - 1."""
    return (1 << bit_depth) - 1


@cache
def _pixel_mask(model: DetectorModel) -> np.ndarray:
    mask = np.zeros(model.shape, dtype=np.uint32)
    if model.chip_gap:
        chip_w = (model.width - (model.chips_x - 1) * model.chip_gap) // model.chips_x
        chip_h = (model.height - (model.chips_y - 1) * model.chip_gap) // model.chips_y
        for i in range(1, model.chips_x):
            start = i * chip_w + (i - 1) * model.chip_gap
            mask[:, start : start + model.chip_gap] |= MASK_GAP
        for j in range(1, model.chips_y):
            start = j * chip_h + (j - 1) * model.chip_gap
            mask[start : start + model.chip_gap, :] |= MASK_GAP
    # A fixed set of defects, the same for every instance of a model: a dead column segment,
    # scattered dead pixels and a small noisy cluster.
    rng = np.random.default_rng(sum(map(ord, model.key)))
    mask[40:160, model.width // 3] |= MASK_DEAD
    ys = rng.integers(0, model.height, 60)
    xs = rng.integers(0, model.width, 60)
    mask[ys, xs] |= MASK_DEAD
    mask[model.height - 30 : model.height - 27, 25:28] |= MASK_NOISY
    mask.setflags(write=False)
    return mask


EIGER2_500K = DetectorModel(
    key="eiger2-500k",
    description="Dectris EIGER2 Si 500K",
    width=1028,
    height=512,
    chips_x=4,
    chips_y=2,
    chip_gap=0,
)

EIGER_500K = DetectorModel(
    key="eiger-500k",
    description="Dectris EIGER Si 500K",
    width=1030,
    height=514,
    chips_x=4,
    chips_y=2,
    chip_gap=2,
    min_period_16bit=1 / 2000,
    min_period=1 / 4000,
    summation_time=0.01,
    energy_range=(5400.0, 25000.0),
    threshold_range=(2700.0, 20000.0),
    firmware_version="1.8.0",
)

MODELS: dict[str, DetectorModel] = {m.key: m for m in (EIGER2_500K, EIGER_500K)}


def model_by_key(key: str) -> DetectorModel:
    """Look up a model by its key, with an error listing the known keys."""
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(
            f"unknown detector model {key!r}; known models: {', '.join(MODELS)}"
        ) from None
