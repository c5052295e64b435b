"""Logic without a server: geometry, file layout, path rules, frames and the trigger engine."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from id3c_eiger.geometry import (
    EIGER2_500K,
    EIGER_500K,
    MASK_GAP,
    TimingError,
    check_images_per_point,
    model_by_key,
)
from id3c_eiger.layout import (
    ARRAY_ATTRIBUTES,
    DATA_DATASET,
    DETECTOR_DATA,
    EIGER_ATTRIBUTES,
    ND_ATTRIBUTES,
    MasterLayout,
    NDFile,
    check_compression,
    data_file_name,
    plan_parts,
    read_metadata,
    series_stem,
)
from id3c_eiger.path_map import PathMap, PathMapError
from id3c_eiger.paths import PathTemplates, ReadPathError
from id3c_eiger_sim.engine import AcquisitionEngine, AcquisitionPlan, TriggerMode
from id3c_eiger_sim.frames import POOL_SIZE, FrameGenerator, FrameSettings, build_pool
from id3c_eiger_sim.roots import DataRoots, PathRefused, expand_template


def test_eiger2_timing_rule_matches_adeiger() -> None:
    assert EIGER2_500K.shape == (512, 1028)
    assert EIGER_500K.shape == (514, 1030)
    assert EIGER2_500K.data_type(0.0067, 0.01) == "UInt32"
    assert EIGER2_500K.data_type(0.0065, 0.01) == "UInt16"
    assert EIGER2_500K.data_type(0.0004, 0.00045) == "UInt16"
    assert EIGER2_500K.data_type(0.0002, 0.00044) == "UInt8"
    with pytest.raises(ValueError, match="known models: eiger2-500k"):
        model_by_key("pilatus")


def test_eiger1_mask_flags_chip_gaps_and_eiger2_is_contiguous() -> None:
    gaps = EIGER_500K.pixel_mask() & MASK_GAP
    assert gaps[:, 256:258].all() and gaps[256:258, :].all()
    assert not (EIGER2_500K.pixel_mask() & MASK_GAP).any()
    assert EIGER2_500K.pixel_mask().any()


def test_series_names_and_planned_parts(tmp_path: Path) -> None:
    assert series_stem("/d/scan_000001.h5") == "scan_000001"
    assert data_file_name("/d/series_7_master.h5", 2) == "series_7_data_000002.h5"
    parts = plan_parts(tmp_path / "m.h5", tmp_path, 2500, 1000)
    assert [(p.link_target, p.first_frame, p.n_frames) for p in parts] == [
        ("m_data_000001.h5", 0, 1000), ("m_data_000002.h5", 1000, 1000),
        ("m_data_000003.h5", 2000, 500),
    ]
    elsewhere = plan_parts(tmp_path / "m.h5", tmp_path / "other", 1, 1000)
    assert elsewhere[0].link_target == str(tmp_path / "other" / "m_data_000001.h5")
    assert MasterLayout("Legacy") is MasterLayout.LEGACY


def test_roots_confine_and_create_by_depth(tmp_path: Path) -> None:
    roots = DataRoots([tmp_path])
    with pytest.raises(PathRefused, match="outside"):
        roots.prepare_directory(f"{tmp_path}/../x/", 0)
    with pytest.raises(PathRefused, match="not an absolute"):
        roots.prepare_directory("relative/dir", 0)
    target = tmp_path / "a" / "b" / "c"
    with pytest.raises(PathRefused, match="creates at most 2"):
        roots.prepare_directory(str(target), -2)
    depth = len(tmp_path.parts) - 1  # tmp_path's level ("/" is not a level) must exist
    with pytest.raises(PathRefused, match="must exist"):
        roots.prepare_directory(str(target), depth + 1)
    assert roots.prepare_directory(str(target), depth) == target
    assert roots.exists(str(target)) and not roots.exists("/etc")
    assert expand_template("%s%s_%6.6d.h5", "/d/", "x", 3) == "/d/x_000003.h5"
    assert expand_template("%s%s.h5", "/d/", "x", 3) == "/d/x.h5"  # C ignores the number


def test_frames_are_deterministic_and_pool_chunks_decode_to_them() -> None:
    generator = FrameGenerator(EIGER2_500K, seed=3)
    settings = FrameSettings(0.001, 16, 514.0, 256.0, 0.08, 1.0332)
    a, b = generator.frame(1, settings), FrameGenerator(EIGER2_500K, seed=3).frame(1, settings)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generator.frame(2, settings))
    np.testing.assert_array_equal(a, generator.frame(1 + POOL_SIZE, settings))
    pool = build_pool(generator, settings, dict(hdf5plugin.Bitshuffle(cname="lz4")))
    with h5py.File("decode", "w", driver="core", backing_store=False) as f:
        d = f.create_dataset(DATA_DATASET, shape=(1, 512, 1028), chunks=(1, 512, 1028),
                             dtype=np.uint16, **hdf5plugin.Bitshuffle(cname="lz4"))
        d.id.write_direct_chunk((0, 0, 0), pool.chunk(1), pool.filter_mask)
        np.testing.assert_array_equal(d[0], a)


def _run_engine(plan: AcquisitionPlan, triggers: int = 0, stop_after: float | None = None,
                paced: bool = True):
    delivered: list[range] = []
    states: list[str] = []

    async def deliver(frames: range) -> None:
        delivered.append(frames)

    async def report(state: str, message: str) -> None:
        states.append(state)

    async def main() -> int:
        engine = AcquisitionEngine(plan, deliver, report, paced=paced)
        task = asyncio.create_task(engine.run())
        for _ in range(triggers):
            while not states or states[-1] != "Waiting":
                await asyncio.sleep(0.001)
            states.append("sent")
            assert engine.trigger(0.0)
        if stop_after is not None:
            await asyncio.sleep(stop_after)
            engine.stop()
        return await asyncio.wait_for(task, 10)

    produced = asyncio.run(main())
    return produced, delivered, states


def test_engine_delivers_every_frame_once_in_order() -> None:
    plan = AcquisitionPlan(TriggerMode.INTERNAL_SERIES, 50, 2, 0.0009, 0.001, False)
    produced, delivered, _ = _run_engine(plan)
    assert produced == 100 == plan.total_frames
    assert [i for r in delivered for i in r] == list(range(100))
    assert len(delivered) < 100  # batched


def test_unpaced_the_engine_delivers_a_series_in_batches_without_waiting_for_its_period() -> None:
    plan = AcquisitionPlan(TriggerMode.INTERNAL_SERIES, 450, 1, 0.9, 1.0, False)  # 450 s paced
    started = time.monotonic()
    produced, delivered, _ = _run_engine(plan, paced=False)
    assert time.monotonic() - started < 5
    assert produced == 450 and [i for r in delivered for i in r] == list(range(450))
    assert [len(r) for r in delivered] == [200, 200, 50]


def test_engine_waits_for_each_external_trigger_and_stops_continuous() -> None:
    plan = AcquisitionPlan(TriggerMode.EXTERNAL_SERIES, 3, 2, 0.0009, 0.001, False)
    produced, _, states = _run_engine(plan, triggers=2)
    assert produced == 6 and states.count("Waiting") == 2
    plan = AcquisitionPlan(TriggerMode.CONTINUOUS, 2, 1, 0.0009, 0.001, False)
    produced, _, _ = _run_engine(plan, stop_after=0.05)
    assert produced > 2 and plan.total_frames is None
    internal = AcquisitionPlan(TriggerMode.INTERNAL_SERIES, 1, 1, 0.1, 0.1, False)
    assert not internal.waits_for_triggers


def test_frame_period_names_each_limit_it_refuses() -> None:
    model = EIGER2_500K
    assert model.frame_period(0.000447) == pytest.approx(0.00045)  # fastest 16-bit
    assert model.frame_period(0.001, 0.0005) == pytest.approx(0.0015)
    assert model.frame_period(0.0003, allow_8bit=True) == pytest.approx(0.000303)
    for args, kwargs, named in [
        ((0.0003,), {}, "0.45 ms (2222 Hz)"),
        ((0.0001,), {"allow_8bit": True}, "0.2222 ms (4500 Hz)"),
        ((0.0,), {}, "must be > 0"),
        ((-1.0,), {}, "must be > 0"),
        ((0.001, 1e-7), {}, "dead time"),
        ((7200.0,), {}, "3600 s"),
    ]:
        with pytest.raises(TimingError, match=re.escape(named)):
            model.frame_period(*args, **kwargs)


def test_compression_must_be_a_plugin_choice() -> None:
    assert check_compression("BSLZ4") == "BSLZ4"
    with pytest.raises(ValueError, match=r"'bslz4' is not an HDF1:Compression choice.*BSLZ4"):
        check_compression("bslz4")


def test_images_per_point_must_be_a_positive_integer() -> None:
    assert check_images_per_point(5) == 5
    for bad in (0, -1, 2.5, "5"):
        with pytest.raises(ValueError, match=re.escape(f"images_per_point {bad!r} must be an integer >= 1")):
            check_images_per_point(bad)


@pytest.mark.parametrize(
    ("write", "directory", "when"),
    [
        ("/data/%Y/%m/%d/", "/data/2026/11/24", datetime(2026, 11, 24)),
        ("/data/%y_%j/%H%M", "/data/26_032/0930/", datetime(2026, 2, 1, 9, 30)),
        ("/data/%Y/%Y-%m", "/data/2026/2026-03", datetime(2026, 3, 1)),
        ("/data/%Y/%m/%d/", "/elsewhere/2026/11/24/", None),
        ("/data/%Y/%m/%d/", "/data/2026/13/24/", None),  # no 13th month
        ("/data/%Y/%Y-%m", "/data/2026/2025-03", None),  # the two years disagree
    ],
)
def test_write_directory_maps_back_to_its_date_and_read_directory(write, directory, when) -> None:
    templates = PathTemplates(write, "/mnt/eiger/" + write.removeprefix("/data/"))
    assert templates.when_written(directory) == when
    if when is not None:
        assert templates.expand(when).write.rstrip("/") == directory.rstrip("/")
        assert templates.expand(when).read.startswith("/mnt/eiger/")


@pytest.mark.parametrize(
    ("write", "read", "depth", "mount"),
    [
        ("/detector/eiger/%Y/%m/%d/", "{share}/%Y/%m/%d/", -3, "{share}"),
        ("/detector/eiger/%Y/%m/%d/", "{share}/%Y/%m/%d/", -5, "{share}"),  # only the shared end
        ("/detector/eiger/%Y/%m/%d/", "{share}/%Y/%m/%d/", 3, "{share}/%Y"),  # 3 levels exist
        ("/detector/eiger/run5/", "{share}/run5", 0, "{share}/run5"),  # the IOC creates none
        ("/detector/w/", "{share}/r/", -3, "{share}/r"),  # nothing shared: all of it is a mount
    ],
)
def test_the_read_mount_is_what_the_ioc_cannot_create(tmp_path: Path, write, read, depth,
                                                      mount) -> None:
    share = tmp_path / "gdata"
    templates = PathTemplates(write, read.format(share=share))
    with pytest.raises(ReadPathError) as missing:
        templates.check_read_mount(depth)
    expected = datetime.now().strftime(mount.format(share=share))
    assert f"{expected!r} does not exist here" in str(missing.value)
    assert "read_path_template" in str(missing.value)
    Path(expected).mkdir(parents=True)  # the mount there: the IOC makes the rest
    templates.check_read_mount(depth)
    PathTemplates(write).check_read_mount(depth)  # one mount: the IOC's own check decides


def test_a_path_map_takes_the_longest_write_root_and_names_a_bad_entry() -> None:
    path_map = PathMap.parse("/detector=/gdata/det:/detector/eiger=/gdata/3idc/eiger")
    assert path_map.map("/detector/eiger/2026/x.h5") == Path("/gdata/3idc/eiger/2026/x.h5")
    assert path_map.map("/detector/other/x.h5") == Path("/gdata/det/other/x.h5")
    assert path_map.map("/elsewhere/x.h5") is None and not PathMap.parse("")
    assert str(PathMap.parse(str(path_map))) == str(path_map)
    for text, rule in (("/detector/eiger", "has no '='"), ("detector=/gdata", "not absolute")):
        with pytest.raises(PathMapError, match=rule) as bad:
            PathMap.parse(text)
        assert text.partition("=")[0] in str(bad.value) and "e.g." in str(bad.value)


@pytest.mark.parametrize(
    ("write", "read", "roots"),
    [
        ("/detector/eiger/%Y/%m/%d/", "/gdata/3idc/eiger/%Y/%m/%d", ("/detector",
                                                                    "/gdata/3idc")),
        ("/detector/eiger2/%Y/", "/gdata/3idc/eiger/%Y", ("/detector/eiger2",
                                                          "/gdata/3idc/eiger")),
        ("/detector/eiger/%Y/", "/gdata/eiger/%Y/%m/", None),  # the dated parts differ
        ("/detector/eiger/%Y/", None, None),  # one mount
    ],
)
def test_templates_give_the_roots_a_path_map_needs(write, read, roots) -> None:
    assert PathTemplates(write, read).roots() == roots


def test_an_ndfile_write_cut_short_keeps_each_frame_before_whole_with_its_attributes(
        tmp_path: Path) -> None:
    """NDFileHDF5's layout: a write fault at the third frame leaves two frames, each with its
    NDAttributes, readable; the file refuses to be created twice."""
    frames = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    path = tmp_path / "hdf1_000001.h5"
    nd = NDFile(path, (6, 8), np.dtype(np.uint16), {}, store_attributes=True, swmr=True)

    def chunk(k: int) -> bytes:
        if k == 2:
            raise OSError(28, "No space left on device")
        return frames[k].tobytes()

    values = {spec.name: list(range(4)) for spec in (*EIGER_ATTRIBUTES, *ARRAY_ATTRIBUTES)} | {
        name: [b"x"] * 4 for name in ("DetectorDescription", "DetectorSerialNumber",
                                      "DetectorSoftwareVersion", "SensorMaterial")} | {
        "ColorMode": [0] * 4}
    with pytest.raises(OSError, match="No space"):
        nd.append(4, chunk, 0, values)
    nd.close()
    with pytest.raises(FileExistsError):
        NDFile(path, (6, 8), np.dtype(np.uint16), {}, store_attributes=True, swmr=False)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[DATA_DATASET][()], frames[:2])
        assert f[DATA_DATASET] == f[DETECTOR_DATA]
        assert list(f[f"{ND_ATTRIBUTES}/NDArrayUniqueId"][()]) == [0, 1]
        md = read_metadata(f)
    assert (md["nimages"], md["bit_depth_image"], md["count_time"]) == (2, 16, 0.0)


def test_the_simulators_channel_access_sends_replies_at_once(monkeypatch) -> None:
    """TCP_NODELAY on each client connection, as an IOC's rsrv sets it (without it a reply
    waited ~40 ms on loopback for Nagle and the client's delayed ACK)."""
    import socket

    from caproto.server import PVGroup, pvproperty

    from id3c_eiger_sim.ca_server import NoDelayContext
    from id3c_eiger_sim.process import free_port

    class One(PVGroup):
        value = pvproperty(value=0)

    monkeypatch.setenv("EPICS_CA_SERVER_PORT", str(free_port()))

    async def connect_and_look() -> int:
        context = NoDelayContext(One(prefix="NODELAY:").pvdb, ["127.0.0.1"])
        server = asyncio.create_task(context.run())
        try:
            while not context.tcp_sockets:  # bound
                await asyncio.sleep(0.01)
            _, writer = await asyncio.open_connection("127.0.0.1", context.port)
            while not context.circuits:
                await asyncio.sleep(0.01)
            (circuit,) = context.circuits
            accepted = circuit.client.writer.get_extra_info("socket")
            option = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()
            return option
        finally:
            server.cancel()

    assert asyncio.run(asyncio.wait_for(connect_and_look(), 10)) != 0


def test_the_frame_progress_bar_counts_whole_frames() -> None:
    """An ophyd-async watcher update (precision 0) is drawn as 223/10000 frames, not the
    223.0/10000.0 of bluesky's bar."""
    from id3c_eiger.progress import FrameProgressBar

    class Watched:  # what the bar asks of a status: done, and watch(callback)
        done = False

        def watch(self, callback) -> None:
            self.callback = callback

    status = Watched()
    bar = FrameProgressBar([status])
    status.callback(name="eiger2", current=1223, initial=1000, target=11000, unit="",
                    precision=0, time_elapsed=0.1)
    assert "223/10000" in bar.meters[0] and "frames" in bar.meters[0]
    assert ".0" not in bar.meters[0].split("|")[2].split("[")[0]
    bar.clear()


def test_the_point_watchdog_keeps_one_thread_for_a_stages_points() -> None:
    """Each point's deadline fires once unless cancelled first, on one thread the stage shares
    (no thread started per point); a failing handler does not end it; ``stop`` does."""
    import threading

    from id3c_eiger.watchdog import PointWatchdog

    watchdog = PointWatchdog("unit-eiger2")

    def watchdog_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "unit-eiger2 point watchdog"]

    late: list[int] = []
    fired = threading.Event()
    threads: set[int] = set()

    def on_late(point: int) -> None:
        threads.add(threading.get_ident())
        late.append(point)
        fired.set()

    for point in range(20):  # settled in time: cancelled before the deadline
        watchdog.start(5.0, lambda point=point: on_late(point))
        watchdog.cancel()
    assert len(watchdog_threads()) == 1
    watchdog.start(0.05, lambda: 1 / 0)  # its handler fails; the watchdog goes on
    time.sleep(0.2)
    for point in (100, 101):  # late points
        fired.clear()
        watchdog.start(0.05, lambda point=point: on_late(point))
        assert fired.wait(5), f"point {point}'s deadline did not fire"
    assert late == [100, 101] and len(threads) == 1
    (thread,) = watchdog_threads()
    assert thread.ident in threads  # the same thread kept every deadline
    fired.clear()
    watchdog.start(10.0, lambda: on_late(102))  # a second deadline replaces the first
    watchdog.start(0.05, lambda: on_late(103))
    assert fired.wait(5)
    assert late == [100, 101, 103]
    watchdog.stop()
    thread.join(5)
    assert not thread.is_alive() and not watchdog_threads()  # the stage's thread ended with it
