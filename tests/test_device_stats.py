"""Both device flavours read the commonPlugins' numbers at each point: the frame's total (Stats1)
and the net counts of the ROI (ROI1 -> Stats2), hinted, so BestEffortCallback shows them; the
values are those of the frames Tiled serves."""

from __future__ import annotations

import bluesky.plans as bp
import numpy as np
import pytest
from bluesky.callbacks.best_effort import BestEffortCallback
from ophyd.sim import SynAxis

from helpers import ASYNC, CLASSIC, load_eiger2

ROI = [300, 100, 64, 32]  # x, y, width, height


def net_counts(frame: np.ndarray) -> float:
    """NDPluginStats' Net with BgdWidth 1: total less the mean of the border times the size."""
    values = frame.astype(np.float64)
    border = [values[:, :1], values[:, -1:], values[:1, :], values[-1:, :]]
    mean = sum(b.sum() for b in border) / sum(b.size for b in border)
    return values.sum() - mean * values.size


@pytest.mark.parametrize("flavour", [CLASSIC, ASYNC])
def test_a_scan_shows_the_frame_total_and_the_roi_net_at_each_point(
        flavour, tmp_path, sim, RE, catalog, capsys) -> None:
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/%Y/%m/%d", roi=ROI)
    total_key, net_key = eiger2.stats1.total.name, eiger2.stats2.net.name
    assert {total_key, net_key} <= set(eiger2.hints["fields"])
    motor = SynAxis(name="motor")
    bec = BestEffortCallback()
    bec.disable_plots()
    RE(bp.scan([eiger2], motor, -1, 1, 3), bec)
    table = capsys.readouterr().out
    assert total_key[:10] in table and net_key[:10] in table  # LiveTable columns

    primary = catalog.runs[-1].primary
    frames = primary["eiger2_image"].read()
    x, y, width, height = ROI
    np.testing.assert_allclose(primary[total_key].read(),
                               [f.astype(np.float64).sum() for f in frames], rtol=1e-12)
    np.testing.assert_allclose(primary[net_key].read(),
                               [net_counts(f[y : y + height, x : x + width]) for f in frames],
                               rtol=1e-9)


@pytest.mark.parametrize("flavour", [CLASSIC, ASYNC])
def test_a_point_of_several_frames_records_the_numbers_of_its_last(flavour, tmp_path, sim, RE,
                                                                   catalog) -> None:
    """NDStats reports per array: after a point of 3 frames it holds the third's numbers."""
    eiger2 = load_eiger2(flavour, tmp_path, sim, f"{sim.directory}/multi", roi=ROI,
                         images_per_point=3)
    RE(bp.count([eiger2], num=2))
    primary = catalog.runs[-1].primary
    points = primary["eiger2_image"].read()
    assert points.shape == (2, 3, 512, 1028)
    x, y, width, height = ROI
    last = points[:, -1]
    np.testing.assert_allclose(primary[eiger2.stats1.total.name].read(),
                               [f.astype(np.float64).sum() for f in last], rtol=1e-12)
    np.testing.assert_allclose(primary[eiger2.stats2.net.name].read(),
                               [net_counts(f[y : y + height, x : x + width]) for f in last],
                               rtol=1e-9)


def test_an_roi_outside_the_frame_is_refused_when_the_devices_file_is_loaded(tmp_path, sim):
    with pytest.raises(ValueError, match=r"roi \[1000, 0, 100, 10\] is not inside the 1028 x 512"):
        load_eiger2(CLASSIC, tmp_path, sim, f"{sim.directory}/x", roi=[1000, 0, 100, 10])
