"""Every example in docs/how-to/visualize-images.md runs, against the simulator, and prints what
the page says it prints (doctest, in a fresh process: it starts its own simulator on its own CA
address list)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOWTO = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "visualize-images.md"
RUNNER = """
import doctest, sys
result = doctest.testfile(sys.argv[1], module_relative=False, report=True,
                          optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
print(f"attempted={result.attempted} failed={result.failed}")
sys.exit(1 if result.failed else 0)
"""


def test_the_visualize_how_to_runs_as_written(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    result = subprocess.run([sys.executable, "-c", RUNNER, str(HOWTO)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    attempted = int(result.stdout.split("attempted=")[1].split()[0])
    assert attempted >= 30  # every example ran, not an empty parse
    assert (tmp_path / "frame0.png").stat().st_size > 10_000
    assert list((tmp_path / "eiger-demo" / "data").rglob("*_master.h5"))  # where the page said
