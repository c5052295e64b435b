"""The pytest plugin as another package uses it: a test directory of its own, run by pytest in
a process of its own (pytester), with the plugin loaded from its entry point; the example is
the one of docs/how-to/testing-your-plans.md."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "testing-your-plans.md"
PLANS, MOCKED = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)  # the page's examples


@pytest.fixture
def other_package(pytester: pytest.Pytester,
                  monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A package's tests, run in a clean CA environment (this session's is not theirs)."""
    for name in [k for k in os.environ if k.startswith("EPICS_")]:
        monkeypatch.delenv(name)
    return pytester


def test_another_package_counts_and_reads_back_with_the_plugins_fixtures(other_package) -> None:
    other_package.makepyfile(test_plans=PLANS)
    result = other_package.runpytest_subprocess("--eiger-simulators", "2", "-p", "no:cacheprovider",
                                                timeout=600)
    result.assert_outcomes(passed=2)


def test_the_ini_file_turns_it_on_and_without_it_the_fixtures_say_how(other_package) -> None:
    other_package.makepyfile(test_one="def test_ioc(eiger_simulator):\n"
                                      "    assert eiger_simulator.prefix == 'EIGSIM1:'\n")
    off = other_package.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    off.assert_outcomes(errors=1)
    off.stdout.fnmatch_lines(["*run pytest with --eiger-simulators N*"])
    other_package.makeini("[pytest]\neiger_simulators = 1\n")
    on = other_package.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    on.assert_outcomes(passed=1)


def test_a_ca_library_loaded_first_is_refused_with_the_fix(other_package) -> None:
    other_package.makepyfile(early_ca="import epics.ca\nepics.ca.initialize_libca()\n")
    other_package.makepyfile(test_one="def test_nothing():\n    pass\n")
    result = other_package.runpytest_subprocess("-p", "early_ca", "--eiger-simulators", "1",
                                                timeout=300)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*pyepics (libca) was loaded before the plugin*Fix:*"])


def test_the_mock_runs_plan_logic_without_a_simulator_or_the_option(other_package) -> None:
    other_package.makepyfile(test_logic=MOCKED + """

def test_files_of_zeros(eiger_mock):
    import bluesky.plans as bp
    import h5py
    eiger_mock.RE(bp.count([eiger_mock.devices["eiger2"]], num=2))
    (path,) = eiger_mock.data_root.glob("*.h5")
    with h5py.File(path, "r") as f:
        data = f["/entry/data/data"]
        assert data.shape == (2, 512, 1028) and not data[()].any()
""")
    result = other_package.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2)
