"""A picture of one frame (or a sum of frames): logarithmic colours, a colour bar, a title with
the run, frame, exposure and energy, and masked or gap pixels drawn in their own colour rather
than as the 2**bits - 1 counts they read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from .geometry import flagged_value
from .inspection import check_frames_readable, open_master
from .layout import DATA_DATASET, frame_images, open_dataset, read_metadata

MASK_COLOUR = (1.0, 0.0, 1.0)  # magenta: masked, gap and flagged pixels
OVER_COLOUR = (1.0, 1.0, 1.0)  # white: counts above --vmax
COLOUR_MAP = "viridis"  # zero counts take its lowest colour, as one count does


@dataclass
class FrameImage:
    """Counts of one frame or a sum of frames, the pixels to draw as masked, and a title."""

    counts: np.ndarray
    masked: np.ndarray  # bool, same shape
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _frame_range(frames: int | range, total: int, source: str) -> range:
    chosen = range(frames, frames + 1) if isinstance(frames, int) else frames
    if not chosen or chosen.start < 0 or chosen.stop > total:
        last = total - 1
        raise IndexError(
            f"frame(s) {chosen.start}..{chosen.stop - 1} out of range: {source} has {total} "
            f"frames, numbered 0..{last}"
        )
    return chosen


def _summed(stack: np.ndarray, flagged: int, mask: np.ndarray | None, chosen: range, source: str,
            metadata: dict[str, Any]) -> FrameImage:
    """The frames of ``stack`` (frames first) summed; a pixel is masked when ``mask`` says so or
    when any frame gives it the flagged value."""
    stack = stack.reshape(-1, *stack.shape[-2:])  # several images per point: every one counts
    masked = (stack == flagged).any(axis=0)
    if mask is not None:
        masked |= mask != 0
    last = chosen.stop - 1
    which = f"frame {last}" if len(chosen) == 1 else f"frames {chosen.start}..{last} summed"
    return FrameImage(stack.astype(np.float64).sum(axis=0), masked, f"{source}, {which}", metadata)


def frame_from_master(path: str | os.PathLike[str], frames: int | range = 0) -> FrameImage:
    """Frame ``frames`` (or their sum) of a master file, masked by its pixel_mask and by the
    flagged value of its bit depth (absolute link targets also through ``$ID3C_EIGER_PATH_MAP``)."""
    with open_master(path) as master:
        check_frames_readable(path, master)
        metadata = read_metadata(master)
        data = open_dataset(master, DATA_DATASET)
        chosen = _frame_range(frames, data.shape[0], str(path))
        stack = frame_images(data, slice(chosen.start, chosen.stop))
    bits = int(metadata.get("bit_depth_image", stack.dtype.itemsize * 8))
    return _summed(stack, flagged_value(bits), metadata.get("pixel_mask"), chosen,
                   Path(path).name, metadata)


def frame_from_images(images: Any, frames: int | range = 0, source: str = "images",
                      metadata: dict[str, Any] | None = None) -> FrameImage:
    """Frame ``frames`` (or their sum) of a stack such as ``run.primary["eiger2_image"]`` in
    Tiled; only those frames are fetched. Pixels at the dtype's maximum are drawn as masked."""
    chosen = _frame_range(frames, len(images), source)
    stack = np.asarray(images[chosen.start : chosen.stop])
    return _summed(stack, np.iinfo(stack.dtype).max, None, chosen, source, metadata or {})


def frame_from_run(run: Any, detector: str = "eiger2", frames: int | range = 0,
                   stream: str = "primary") -> FrameImage:
    """Frame ``frames`` (or their sum) of ``run[stream]["<detector>_image"]`` in Tiled, titled
    with the run and with the exposure and energy the run recorded."""
    from .catalog import recorded_settings, run_images

    images = run_images(run, stream, f"{detector}_image")
    start = run.metadata["start"]
    source = f"run {start['uid'][:8]} (scan {start.get('scan_id')}), {detector}"
    return frame_from_images(images, frames, source, recorded_settings(run[stream], detector))


def frame_from_array(frame: Any, title: str = "") -> FrameImage:
    """A frame read elsewhere (e.g. ``images[0]`` from Tiled): pixels at the dtype's maximum, the
    value the detector gives masked pixels, are drawn as masked."""
    array = np.asarray(frame)
    if array.ndim != 2:
        raise ValueError(f"a frame is 2-D (height, width); this array has shape {array.shape}")
    masked = array == np.iinfo(array.dtype).max if array.dtype.kind in "ui" else ~np.isfinite(array)
    return FrameImage(array.astype(np.float64), masked, title)


def plot_frame(
    image: FrameImage,
    *,
    roi: tuple[int, int, int, int] | None = None,
    vmax: float | None = None,
    output: str | os.PathLike[str] | None = None,
) -> Any:
    """Draw ``image`` (``roi`` = y0, y1, x0, x1, axes in detector pixels, the region in the
    title); counts above ``vmax`` in white; save a PNG to ``output``. Returns the Figure."""
    if output is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    counts, masked = image.counts, image.masked
    if roi is not None:
        y0, y1, x0, x1 = roi
        h, w = counts.shape
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"roi {roi} is outside the {h} x {w} frame; give y0 < y1 <= {h} "
                             f"and x0 < x1 <= {w}")
        counts, masked = counts[y0:y1, x0:x1], masked[y0:y1, x0:x1]
    else:
        y0, x0 = 0, 0
    height, width = counts.shape
    # A log scale has no place for 0: LogNorm would mask it (drawn as the mask's colour); as
    # 0.5, below the scale's 1, it takes the colour map's lowest colour.
    shown = np.ma.masked_array(np.where(counts > 0, counts, 0.5), mask=masked)
    valid = counts[~masked & (counts > 0)]
    top = vmax if vmax is not None else (float(valid.max()) if valid.size else 1.0)
    base = plt.get_cmap(COLOUR_MAP)
    cmap = base.with_extremes(bad=MASK_COLOUR, under=base(0.0), over=OVER_COLOUR)
    figure, axes = plt.subplots(figsize=(10, 5.5))
    picture = axes.imshow(shown, cmap=cmap, norm=LogNorm(vmin=1, vmax=max(top, 1.0 + 1e-9)),
                          origin="upper", interpolation="nearest",
                          extent=(x0 - 0.5, x0 + width - 0.5, y0 + height - 0.5, y0 - 0.5))
    label = "counts (log scale; 0 in the lowest colour); magenta = masked/gap"
    if vmax is not None:
        label += f"; white > {vmax:g}"
    figure.colorbar(picture, ax=axes, label=label, extend="max" if vmax is not None else "neither")
    md = image.metadata
    details = []
    if "count_time" in md:
        details.append(f"exposure {float(md['count_time']):.4g} s")
    if "photon_energy" in md:
        details.append(f"energy {float(md['photon_energy']):.0f} eV")
    if roi is not None:
        details.append(f"ROI y {y0}:{y0 + height}, x {x0}:{x0 + width}")
    axes.set_title("\n".join(filter(None, [image.title, ", ".join(details)])))
    axes.set_xlabel("x (pixel)")
    axes.set_ylabel("y (pixel)")
    if output is not None:
        figure.savefig(output, dpi=100)
        plt.close(figure)
    return figure
