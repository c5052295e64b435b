"""Bluesky plans for the EIGER2: a fly scan whose frames land in the run's primary stream."""

from __future__ import annotations

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import MsgGenerator
from ophyd_async.core import StandardDetector, TriggerInfo

from .trigger_source import PulseTrain, SoftwareTriggerSource

FLUSH_PERIOD = 0.5  # s between collects: StreamDatum documents as frames land


def fly_frames(
    detector: StandardDetector,
    trigger_info: TriggerInfo,
    trigger_source: SoftwareTriggerSource | None = None,
    pulses: PulseTrain | None = None,
    *,
    flush_period: float = FLUSH_PERIOD,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """One armed acquisition of ``trigger_info.number_of_events`` events, collected into the
    ``primary`` stream while it runs. For External triggers give the ``trigger_source`` and its
    ``pulses``; the detector is armed before the first pulse."""
    if (trigger_source is None) != (pulses is None):
        raise ValueError("give trigger_source and pulses together, or neither")
    flyers = [detector] + ([trigger_source] if trigger_source else [])
    metadata = {
        "plan_name": "fly_frames",
        "detectors": [detector.name],
        "num_points": trigger_info.number_of_events,
        "trigger": trigger_info.trigger.value,
        **(md or {}),
    }

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=metadata)
    def inner() -> MsgGenerator[None]:
        yield from bps.prepare(detector, trigger_info, wait=True)
        if trigger_source is not None:
            yield from bps.prepare(trigger_source, pulses, wait=True)
        yield from bps.declare_stream(detector, name="primary", collect=True)
        for flyer in flyers:  # the detector first: armed before any pulse
            yield from bps.kickoff(flyer, wait=True)
        yield from bpp.finalize_wrapper(
            _collect_until_complete(flyers, detector, flush_period), _stop_and_collect(detector))

    return (yield from inner())


def _collect_until_complete(flyers: list[Any], detector: StandardDetector,
                            flush_period: float) -> MsgGenerator[None]:
    """As bluesky's collect_while_completing, with a checkpoint each ``flush_period``: one Ctrl-C
    (a deferred pause) takes effect there, not at the end of the scan."""
    group = bps._short_uid("complete")
    for flyer in flyers:
        yield from bps.complete(flyer, group=group, wait=False)
    while True:
        yield from bps.checkpoint()
        done = yield from bps.wait(group=group, timeout=flush_period, error_on_timeout=False)
        yield from bps.collect(detector, name="primary")
        if done:
            return


def _stop_and_collect(detector: StandardDetector) -> MsgGenerator[None]:
    """However the scan ends (done, stopped, aborted, failed): the detector stops, then every
    frame written is recorded, so the run in Tiled holds exactly the frames in the files."""
    yield from bps.stop(detector)
    yield from bps.collect(detector, name="primary")
