"""The commonPlugins chain of the simulator over real CA and PV Access: what ROI1, Stats1,
Stats2, image1 and Pva1 show is what ADCore computes on the frame the file holds; queues drop
and count as real plugins do while the file path keeps every frame; bad wiring is refused."""

from __future__ import annotations

import time

import numpy as np
import pytest

from helpers import PLUGINS, Sim, master_frames
from id3c_eiger_sim.ioc import ARM_TIME, DISARM_TIME
from id3c_eiger_sim.process import SimulatorProcess


def enable(sim: Sim, *plugins: str, **settings: object) -> None:
    for plugin in plugins:
        sim.put(f"{plugin}EnableCallbacks", "Enable")
    for key, value in settings.items():
        plugin, name = key.split("_", 1)
        sim.put(f"{plugin}:{name}", value)


def adcore_statistics(frame: np.ndarray, bgd_width: int = 1) -> dict[str, float]:
    """NDPluginStats' numbers, written out from its C loops (not from the simulator's code)."""
    values = frame.astype(np.float64)
    n = values.size
    total = values.sum()
    mean = total / n
    border = [values[:, :bgd_width], values[:, -bgd_width:], values[:bgd_width, :],
              values[-bgd_width:, :]]
    background = sum(b.sum() for b in border) / sum(b.size for b in border)
    first_min = np.unravel_index(np.argmin(values), values.shape)
    first_max = np.unravel_index(np.argmax(values), values.shape)
    return {
        "Total_RBV": total, "Net_RBV": total - background * n, "MeanValue_RBV": mean,
        "Sigma_RBV": np.sqrt((values**2).sum() / n - mean**2),
        "MinValue_RBV": values.min(), "MaxValue_RBV": values.max(),
        "MinX_RBV": first_min[1], "MinY_RBV": first_min[0],
        "MaxX_RBV": first_max[1], "MaxY_RBV": first_max[0],
    }


def test_every_plugin_shows_the_frame_the_file_holds(sim: Sim, ioc: SimulatorProcess) -> None:
    from p4p.client.thread import Context

    enable(sim, *PLUGINS, ROI1_MinX=300, ROI1_SizeX=64, ROI1_BinX=2, ROI1_MinY=100,
           ROI1_SizeY=32, Stats1_ComputeCentroid="Yes", Stats1_CentroidThreshold=3)
    sim.put("cam1:WaitForPlugins", "Yes")
    master = sim.stream(3, AcquireTime=0.01, AcquirePeriod=0.01)
    frame = master_frames(master)[-1]
    assert sim.get("Stats1:UniqueId_RBV") == sim.get("cam1:ArrayCounter_RBV")
    assert sim.get("Stats1:ArrayCounter_RBV") == 3
    for name, expected in adcore_statistics(frame).items():
        assert sim.get(f"Stats1:{name}") == pytest.approx(expected, rel=1e-12), name
    weights = np.where(frame >= 3, frame, 0).astype(np.float64)
    ys, xs = np.indices(frame.shape)
    assert sim.get("Stats1:CentroidX_RBV") == pytest.approx((weights * xs).sum() / weights.sum())
    assert sim.get("Stats1:CentroidY_RBV") == pytest.approx((weights * ys).sum() / weights.sum())

    # Binning sums pairs in the frame's own type, as NDArrayPool::convert does (a flagged
    # pixel, 2**bits-1, wraps the sum).
    binned = frame[100:132, 300:364].reshape(32, 32, 2).sum(axis=2, dtype=frame.dtype)
    assert (sim.get("ROI1:ArraySizeX_RBV"), sim.get("ROI1:ArraySizeY_RBV")) == (32, 32)
    assert (sim.get("Stats2:ArraySize0_RBV"), sim.get("Stats2:ArraySize1_RBV")) == (32, 32)
    assert sim.get("Stats2:Total_RBV") == binned.sum(dtype=np.float64)
    assert sim.get("Stats2:MaxValue_RBV") == binned.max()

    image = sim.pv("image1:ArrayData").get(count=frame.size, timeout=10)
    np.testing.assert_array_equal(image, frame.ravel().astype(np.int32))
    assert (sim.get("image1:ArraySize0_RBV"), sim.get("image1:ArraySize1_RBV")) == (1028, 512)

    conf = {"EPICS_PVA_ADDR_LIST": f"127.0.0.1:{ioc.pva_port}", "EPICS_PVA_AUTO_ADDR_LIST": "NO"}
    with Context("pva", conf=conf, useenv=False) as context:
        pva = context.get(f"{ioc.prefix}Pva1:Image", timeout=10)
    assert pva.dtype == frame.dtype
    np.testing.assert_array_equal(pva, frame)
    assert sim.text("Pva1:PvName_RBV") == f"{ioc.prefix}Pva1:Image"


def test_an_roi_outside_the_frame_is_clamped_as_ndroi_does(sim: Sim) -> None:
    enable(sim, "ROI1:", "Stats2:", ROI1_MinX=2000, ROI1_SizeX=50, ROI1_MinY=-5,
           ROI1_SizeY=10, ROI1_BinY=20)
    sim.put("cam1:WaitForPlugins", "Yes")
    frame = master_frames(sim.stream(1))[-1]
    used = {name: sim.get(f"ROI1:{name}_RBV") for name in ("MinX", "SizeX", "MinY", "SizeY",
                                                             "BinY")}
    assert used == {"MinX": 1027, "SizeX": 1, "MinY": 0, "SizeY": 10, "BinY": 10}
    assert sim.get("ROI1:MinX") == 2000  # the request is kept; the readback shows what is used
    assert sim.get("Stats2:Total_RBV") == frame[0:10, 1027].astype(np.int64).sum()


def test_a_plugin_that_cannot_keep_up_drops_and_counts_and_the_file_keeps_every_frame(
        sim: Sim) -> None:
    enable(sim, "Stats1:", "image1:", Stats1_QueueSize=1, image1_QueueSize=1)
    sim.put("cam1:WaitForPlugins", "Yes")
    master = sim.stream(1000, AcquireTime=0.0004, AcquirePeriod=0.0005)
    assert sim.get("HDF1:NumCaptured_RBV") == 1000
    assert len(master_frames(master)) == 1000
    for plugin in ("Stats1:", "image1:"):
        taken, dropped = sim.get(f"{plugin}ArrayCounter_RBV"), sim.get(f"{plugin}DroppedArrays_RBV")
        assert dropped > 0, plugin
        assert taken + dropped == 1000, plugin
    sim.put("Stats1:BlockingCallbacks", "Yes")  # worked in the camera's thread: nothing dropped
    sim.put("Stats1:DroppedArrays", 0)
    sim.put("Stats1:ArrayCounter", 0)
    sim.stream(50, AcquireTime=0.0004, AcquirePeriod=0.0005)
    assert (sim.get("Stats1:ArrayCounter_RBV"), sim.get("Stats1:DroppedArrays_RBV")) == (50, 0)


def test_ndarrayport_naming_no_port_or_a_loop_is_refused_and_the_wiring_kept(sim: Sim) -> None:
    sim.put("Stats2:NDArrayPort", "NOPE")
    assert sim.text("Stats2:NDArrayPort_RBV") == "ROI1"
    assert sim.pv("Stats2:NDArrayPort_RBV").get_with_metadata(form="time")["severity"] == 2
    sim.put("ROI1:NDArrayPort", "STATS2")  # Stats2 listens to ROI1: a loop
    assert sim.text("ROI1:NDArrayPort_RBV") == "EIG"
    sim.put("Stats1:NDArrayPort", "ROI1")  # a real re-wiring: Stats1 now sees the ROI
    enable(sim, "ROI1:", "Stats1:", ROI1_MinX=10, ROI1_SizeX=20, ROI1_MinY=10, ROI1_SizeY=5)
    sim.put("cam1:WaitForPlugins", "Yes")
    sim.stream(1)
    assert sim.text("Stats1:NDArrayPort_RBV") == "ROI1"
    assert sim.get("Stats1:ArraySize0_RBV") == 20


def test_arming_takes_the_detector_s_time(sim: Sim) -> None:
    """A real EIGER arms before its first exposure: an acquisition is never over sooner."""
    started = time.monotonic()
    sim.put("cam1:Acquire", "Acquire")
    assert time.monotonic() - started >= ARM_TIME + DISARM_TIME + 0.001


def test_stock_ophyd_single_trigger_reads_stats_at_each_point(sim: Sim, RE) -> None:
    """Stock ophyd classes, as apstools' ad_creator builds them: the camera and Stats1 connect
    and each point carries the frame's total."""
    import bluesky.plans as bp
    from ophyd import ADComponent, DetectorBase, EigerDetectorCam, SingleTrigger
    from ophyd.areadetector.plugins import StatsPlugin_V34

    class Cam(EigerDetectorCam):
        link_0 = link_1 = link_2 = link_3 = dcu_buff_free = fw_clear = None
        file_number_sync = file_number_write = pool_max_buffers = None

    class Detector(SingleTrigger, DetectorBase):
        cam = ADComponent(Cam, "cam1:")
        stats1 = ADComponent(StatsPlugin_V34, "Stats1:")

    detector = Detector(sim.prefix, name="stock")
    detector.read_attrs = ["stats1.total"]
    detector.wait_for_connection(timeout=30)
    sim.put("cam1:AcquireTime", 0.01)
    sim.put("cam1:AcquirePeriod", 0.01)
    sim.put("cam1:WaitForPlugins", "Yes")
    sim.put("Stats1:EnableCallbacks", "Enable")
    totals = []
    RE(bp.count([detector], num=3),
       lambda name, doc: totals.append(doc["data"]["stock_stats1_total"]) if name == "event" else None)
    assert len(totals) == 3 and all(t > 0 for t in totals)
    assert totals[-1] == sim.get("Stats1:Total_RBV")  # the last frame's, not a stale value
    assert sim.get("Stats1:ArrayCounter_RBV") == 3  # one frame per point, each one counted


def test_a_readback_posts_a_monitor_only_when_it_changes(sim: Sim) -> None:
    """As records with MDEL 0: ROI1's region readbacks, the same for every array, post once;
    the array counter posts for each array."""
    import epics

    enable(sim, "ROI1:", ROI1_MinX=10, ROI1_SizeX=64)
    updates: dict[str, list[object]] = {"ROI1:SizeX_RBV": [], "ROI1:ArrayCounter_RBV": []}
    monitors = [epics.PV(sim.prefix + suffix, auto_monitor=True,
                         callback=lambda value, seen=seen, **_: seen.append(value))
                for suffix, seen in updates.items()]
    try:
        for pv in monitors:
            assert pv.wait_for_connection(timeout=10)
        sim.put("cam1:WaitForPlugins", "Yes")
        sim.stream(5, AcquireTime=0.01, AcquirePeriod=0.01)
        deadline = time.monotonic() + 5
        while len(updates["ROI1:ArrayCounter_RBV"]) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for pv in monitors:
            pv.disconnect()
    assert len(updates["ROI1:ArrayCounter_RBV"]) == 6  # the connection's value, then 5 arrays
    assert updates["ROI1:SizeX_RBV"][-1] == 64 and len(updates["ROI1:SizeX_RBV"]) <= 2
