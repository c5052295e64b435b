"""Channel Access round trips of the simulator's server against a bare caproto server, same run.

Two servers of one PV each (``Acquire``: a put completes 1 ms later, as a short exposure), one
with caproto's own asyncio Context and one with the simulator's ``NoDelayContext``
(``TCP_NODELAY``), each in a process of its own on loopback. Prints the median pyepics
put-with-callback and non-monitored get of each, and their ratio.

Run with ``python benchmarks/bench_channel_access.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from id3c_eiger_sim.process import free_port

SERVER = """
import asyncio, sys
from caproto.server import PVGroup, pvproperty
from caproto.asyncio.server import Context
from id3c_eiger_sim.ca_server import NoDelayContext

class Detector(PVGroup):
    acquire = pvproperty(value=0, name="Acquire")

    @acquire.putter
    async def acquire(self, instance, value):
        await asyncio.sleep(0.001)  # a 1 ms exposure
        return value

async def serve():
    kind = {"caproto": Context, "simulator": NoDelayContext}[sys.argv[1]]
    await kind(Detector(prefix=sys.argv[2]).pvdb, ["127.0.0.1"]).run()

asyncio.run(serve())
"""
REPEATS = 200


def start(kind: str, prefix: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "EPICS_CA_SERVER_PORT": str(port)}
    return subprocess.Popen([sys.executable, "-c", SERVER, kind, prefix], env=env)


def median_ms(action) -> float:
    action()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    ports = {"caproto": free_port(), "simulator": free_port()}
    os.environ["EPICS_CA_ADDR_LIST"] = " ".join(f"127.0.0.1:{p}" for p in ports.values())
    os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
    import epics

    servers = [start(kind, f"{kind.upper()}:", port) for kind, port in ports.items()]
    try:
        results = {}
        for kind in ports:
            pv = epics.PV(f"{kind.upper()}:Acquire")
            if not pv.wait_for_connection(30):
                raise RuntimeError(f"the {kind} server did not connect")
            put = median_ms(lambda pv=pv: pv.put(1, wait=True, timeout=5))
            get = median_ms(lambda pv=pv: pv.get(use_monitor=False, timeout=5))
            results[kind] = (put, get)
        print(f"Channel Access on loopback, median of {REPEATS} (pyepics client):")
        for kind, (put, get) in results.items():
            print(f"  {kind:9s} server: put-callback of a 1 ms Acquire {put:6.2f} ms, "
                  f"get {get:6.2f} ms")
        (bare_put, bare_get), (ours_put, ours_get) = results["caproto"], results["simulator"]
        print(f"  simulator / bare caproto: put {ours_put / bare_put:.2f}, "
              f"get {ours_get / bare_get:.2f}")
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
