"""How long the ``id3c-eiger`` command takes to answer: ``--help``, ``--version`` and ``inspect``
of a downloaded master, each a fresh process, median of five (goals: help within 1 s, inspect
within 2 s), against a bare ``python -c pass`` in the same run (the interpreter's own start).

Run with ``python benchmarks/bench_cli.py`` (``make benchmark`` runs every benchmark).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import simulator_with_dcu

RUNS = 5
COMMAND = [str(Path(sys.executable).with_name("id3c-eiger"))]


def seconds(argv: list[str]) -> float:
    """Median wall time of ``argv`` as a new process."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with simulator_with_dcu("cli") as (_, sim, _ioc):
        master = sim.series(3)
        bare = seconds([sys.executable, "-c", "pass"])
        figures = {"--help": seconds([*COMMAND, "--help"]),
                   "--version": seconds([*COMMAND, "--version"]),
                   "inspect MASTER": seconds([*COMMAND, "inspect", str(master)])}
    print(f"id3c-eiger, median of {RUNS} fresh processes (python -c pass: {bare * 1e3:.0f} ms):")
    goals = {"--help": 1.0, "--version": 1.0, "inspect MASTER": 2.0}
    for name, value in figures.items():
        print(f"  {name:15s} {value * 1e3:7.0f} ms = {value / bare:5.1f} x bare python "
              f"[goal <= {goals[name]:g} s]")


if __name__ == "__main__":
    main()
