"""What one request to the Tiled server we run costs, with and without
``tiled_server_speed.reuse_dependency_graphs``.

Tiled's app overrides one FastAPI dependency, and with any override FastAPI rebuilds every
route's dependency graphs at every request (fastapi/fastapi#14441). Each variant runs in a
process of its own (the fix is process-wide), an embedded ``SimpleTiledServer``, taken in turns
``TURNS`` times; each figure is the median over the turns of each turn's median. Measured:
* a metadata GET at a run's stream (``runs/<uid>/primary``, depth 3), as every frame read does;
* a metadata update there, as TiledWriter does at a run's stop;
* a whole run: ``count([det])`` of ophyd's simulated detector through TiledWriter (each request
  it makes for a run), the fixed cost each scan pays at its end.

Run with ``python benchmarks/bench_tiled_requests.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

from common import median_seconds

TURNS = 3
REPEATS = 40
RUNS = 15  # whole runs: fewer
VARIANTS = ("Tiled as shipped", "graphs reused")


def _measure(reuse: bool) -> dict[str, float]:
    """This process's figures (ms), with or without the graphs reused."""
    if reuse:
        from id3c_eiger.tiled_server_speed import reuse_dependency_graphs

        reuse_dependency_graphs()
    import bluesky.plans as bp
    import httpx
    from bluesky import RunEngine
    from bluesky_tiled_plugins import TiledWriter
    from ophyd.sim import det
    from tiled.client import from_uri
    from tiled.server import SimpleTiledServer

    with tempfile.TemporaryDirectory() as directory:
        server = SimpleTiledServer(directory=directory)
        try:
            root = from_uri(server.uri)
            stream = root.create_container("runs").create_container("abc").create_container(
                "primary")
            client = httpx.Client(headers={"Authorization": f"Apikey {root.context.api_key}"})
            writes = iter(range(10**6))
            RE = RunEngine({})
            RE.subscribe(TiledWriter(root["runs"]))
            return {
                "metadata GET, depth 3": 1e3 * median_seconds(lambda: client.get(stream.uri), REPEATS),
                "metadata update, depth 3": 1e3 * median_seconds(
                    lambda: stream.update_metadata({"n": next(writes)}, drop_revision=True),
                    REPEATS),
                "count(1) through TiledWriter": 1e3 * median_seconds(lambda: RE(bp.count([det])), RUNS),
            }
        finally:
            server.close()


def main() -> None:
    turns: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(TURNS):
        for variant in VARIANTS:
            child = subprocess.run(
                [sys.executable, __file__, "--child", variant], check=True,
                capture_output=True, text=True)
            turns[variant].append(json.loads(child.stdout.strip().splitlines()[-1]))
    figures = {variant: {what: statistics.median(turn[what] for turn in taken)
                         for what in taken[0]} for variant, taken in turns.items()}
    shipped, reused = (figures[variant] for variant in VARIANTS)
    print(f"One request to an embedded Tiled server ({TURNS} turns of each, medians, ms)")
    print(f"{'':32s} {VARIANTS[0]:>16s} {VARIANTS[1]:>16s} {'ratio':>7s}")
    for what in shipped:
        print(f"{what:32s} {shipped[what]:16.1f} {reused[what]:16.1f} "
              f"{reused[what] / shipped[what]:7.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(_measure(sys.argv[2] == VARIANTS[1])))
    else:
        main()
