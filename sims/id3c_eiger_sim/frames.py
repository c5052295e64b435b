"""Deterministic photon-counting frames, and pools of them compressed once.

Frame ``i`` of a series depends only on (model, seed, settings, i): Poisson counts of a
diffraction-like rate map (background, powder rings placed by the beam geometry, Bragg spots),
clipped at the saturation value, with the model's masked pixels flagged as (2**bits)-1. Series
cycle through ``POOL_SIZE`` distinct frames so the simulator can compress each once and write
precompressed chunks at the detector's full rate; tests recompute any frame with ``frame()``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from id3c_eiger.geometry import DetectorModel, flagged_value

POOL_SIZE = 16

# LaB6 (a = 4.15689 A) d-spacings in Angstrom with relative ring intensities.
_RINGS = (
    (4.1569, 0.55),
    (2.9394, 1.0),
    (2.4000, 0.45),
    (2.0784, 0.25),
    (1.8590, 0.5),
    (1.6971, 0.35),
    (1.4697, 0.15),
    (1.3856, 0.3),
    (1.3145, 0.2),
)
_RING_PEAK_RATE = 2.0e4  # counts/s/pixel at the strongest ring
_BACKGROUND_RATE = 40.0  # counts/s/pixel far from the beam
_N_SPOTS = 40


@dataclass(frozen=True)
class FrameSettings:
    """Everything a frame's content depends on besides model, seed and index."""

    count_time: float  # s
    bit_depth: int
    beam_center_x: float  # pixels
    beam_center_y: float  # pixels
    distance: float  # m
    wavelength: float  # Angstrom

    @property
    def dtype(self) -> np.dtype:
        """Numpy dtype of the frames: unsigned, ``bit_depth`` bits."""
        return np.dtype(f"uint{self.bit_depth}")


class FrameGenerator:
    """Frames of one model and seed; ``frame(i, settings)`` is pure and repeatable."""

    def __init__(self, model: DetectorModel, seed: int = 0) -> None:
        self.model = model
        self.seed = seed
        self._rates: OrderedDict[tuple[float, ...], np.ndarray] = OrderedDict()
        self._series: OrderedDict[FrameSettings, tuple[np.ndarray, ...]] = OrderedDict()
        self._lock = threading.Lock()  # the file writer's pool and the plugins ask from threads

    def rate_map(self, settings: FrameSettings) -> np.ndarray:
        """Expected counts/s per pixel for the beam geometry (float64, cached)."""
        key = (settings.beam_center_x, settings.beam_center_y, settings.distance,
               settings.wavelength)
        if key not in self._rates:
            self._rates[key] = self._compute_rates(settings)
            while len(self._rates) > 4:
                self._rates.popitem(last=False)
        return self._rates[key]

    def _compute_rates(self, settings: FrameSettings) -> np.ndarray:
        height, width = self.model.shape
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        radius = np.hypot(xx - settings.beam_center_x, yy - settings.beam_center_y)
        rates = _BACKGROUND_RATE * (1.0 + 30.0 / (1.0 + (radius / 60.0) ** 2))
        distance_px = max(settings.distance, 1e-3) / self.model.pixel_size
        for d_spacing, strength in _RINGS:
            sin_theta = settings.wavelength / (2.0 * d_spacing)
            if sin_theta >= 1.0:
                continue
            ring_radius = distance_px * math.tan(2.0 * math.asin(sin_theta))
            rates += _RING_PEAK_RATE * strength * np.exp(-0.5 * ((radius - ring_radius) / 1.5) ** 2)
        rng = np.random.default_rng([self.seed, 7])
        for _ in range(_N_SPOTS):
            cy, cx = rng.uniform(8, height - 8), rng.uniform(8, width - 8)
            peak = rng.uniform(5e4, 5e5)
            y0, x0 = int(cy) - 4, int(cx) - 4
            py, px = yy[y0 : y0 + 9, x0 : x0 + 9], xx[y0 : y0 + 9, x0 : x0 + 9]
            rates[y0 : y0 + 9, x0 : x0 + 9] += peak * np.exp(
                -0.5 * ((py - cy) ** 2 + (px - cx) ** 2) / 1.1**2
            )
        return rates

    def series_frames(self, settings: FrameSettings) -> tuple[np.ndarray, ...]:
        """The ``POOL_SIZE`` distinct frames a series cycles through (read-only, a few cached):
        what the camera hands to its plugins and what the file pools compress."""
        with self._lock:
            frames = self._series.get(settings)
            if frames is None:
                frames = tuple(self.frame(slot, settings) for slot in range(POOL_SIZE))
                for frame in frames:
                    frame.flags.writeable = False
                self._series[settings] = frames
                while len(self._series) > 3:
                    self._series.popitem(last=False)
            self._series.move_to_end(settings)
            return frames

    def frame(self, index: int, settings: FrameSettings) -> np.ndarray:
        """Frame ``index`` (0-based in its series) as the detector would deliver it."""
        slot = index % POOL_SIZE
        rng = np.random.default_rng([self.seed, slot])
        counts = rng.poisson(self.rate_map(settings) * settings.count_time)
        saturation = self.model.saturation_value(settings.count_time, settings.bit_depth)
        np.minimum(counts, saturation, out=counts)
        counts[self.model.pixel_mask() != 0] = flagged_value(settings.bit_depth)
        return counts.astype(settings.dtype)

    def threshold_images(self, frame: np.ndarray, thresholds: int, bit_depth: int) -> np.ndarray:
        """The (thresholds, H, W) images of one exposure, as v2024.2 files hold them: the first
        threshold's is ``frame``; the second, higher threshold counts half its photons (rounded
        down), flagged pixels staying flagged."""
        second = frame // 2
        flagged = flagged_value(bit_depth)
        second[frame == flagged] = flagged
        return np.stack([frame, second][:thresholds])


@dataclass(frozen=True)
class FramePool:
    """``POOL_SIZE`` frames as the bytes of compressed HDF5 chunks, ready for direct writes: one
    (H, W) image each, or (thresholds, H, W) for a v2024.2 data file."""

    settings: FrameSettings
    filters: tuple[tuple[str, Any], ...]
    chunks: tuple[bytes, ...]
    filter_mask: int
    frame_shape: tuple[int, ...]  # of one frame in the file: (H, W) or (thresholds, H, W)

    def chunk(self, index: int) -> bytes:
        """The chunk of frame ``index`` of a series."""
        return self.chunks[index % POOL_SIZE]

    @property
    def thresholds(self) -> int | None:
        """The threshold axis of the frames: None for (H, W) frames."""
        return self.frame_shape[0] if len(self.frame_shape) == 3 else None

    @property
    def nbytes(self) -> int:
        """Bytes the pool holds."""
        return sum(len(c) for c in self.chunks)


def build_pool(generator: FrameGenerator, settings: FrameSettings, filters: dict[str, Any],
               thresholds: int | None = None) -> FramePool:
    """Generate the pool and compress each frame once through the real HDF5 filter pipeline;
    with ``thresholds``, each frame holds that many threshold images (v2024.2's 4-D data)."""
    frames = generator.series_frames(settings)
    if thresholds is not None:
        frames = tuple(generator.threshold_images(f, thresholds, settings.bit_depth)
                       for f in frames)
    shape = frames[0].shape
    with h5py.File(
        f"pool-{id(generator)}", "w", driver="core", backing_store=False
    ) as scratch:
        dataset = scratch.create_dataset(
            "frames", shape=(POOL_SIZE, *shape), chunks=(1, *shape), dtype=settings.dtype,
            **filters,
        )
        chunks = []
        mask = 0
        for slot, frame in enumerate(frames):
            dataset[slot] = frame
            mask, chunk = dataset.id.read_direct_chunk((slot,) + (0,) * len(shape))
            chunks.append(bytes(chunk))
    return FramePool(settings, tuple(sorted(filters.items())), tuple(chunks), mask, shape)
