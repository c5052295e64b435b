"""The instrument startup under bluesky-queueserver: a real Redis, start-re-manager with the
startup script the startup module documents, and ``count`` run through the queue into Tiled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from id3c_eiger import startup
from id3c_eiger.config import PACKAGED_DEVICES_FILE, check_devices_file
from id3c_eiger_sim.process import free_port

STARTUP = startup.__doc__.split("::\n\n")[1].split("\n\n")[0]  # the documented script


@pytest.fixture
def redis(tmp_path: Path):
    """A Redis server of the test's own, as the queueserver's manager needs one."""
    assert shutil.which("redis-server"), "redis-server is not installed: make test installs it"
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield f"localhost:{port}"
    process.terminate()
    process.wait(10)


def test_count_through_the_queue_reads_back_through_tiled(sim, tmp_path, catalog, redis):
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    here = {"prefix": sim.prefix, "write_path_template": f"{sim.directory}/queue/",
            "read_path_template": f"{sim.directory}/queue/"}
    devices = tmp_path / "devices.yml"
    devices.write_text(yaml.safe_dump({
        cls: [{**entry, **here} for entry in entries]
        for cls, entries in check_devices_file(PACKAGED_DEVICES_FILE).items()}))
    script = tmp_path / "startup.py"
    script.write_text(STARTUP.replace("\n    ", "\n").strip() + "\n")
    permissions = tmp_path / "user_group_permissions.yaml"  # the queue may run every plan
    permissions.write_text(yaml.safe_dump({"user_groups": {
        "root": {"allowed_plans": [None], "allowed_devices": [None]},
        "primary": {"allowed_plans": [":.*"], "allowed_devices": [":?.*"]}}}))
    control, info = free_port(), free_port()
    log = (tmp_path / "manager.log").open("w")
    env = {**os.environ, "ID3C_EIGER_DEVICES": str(devices),
           "ID3C_EIGER_TILED_URI": catalog.uri}
    manager = subprocess.Popen(
        [str(Path(sys.executable).with_name("start-re-manager")), "--redis-addr", redis,
         "--zmq-control-addr", f"tcp://127.0.0.1:{control}",
         "--zmq-info-addr", f"tcp://127.0.0.1:{info}", "--startup-script", str(script),
         "--existing-plans-devices", str(tmp_path / "existing.yaml"),
         "--update-existing-plans-devices", "ENVIRONMENT_OPEN", "--zmq-publish-console", "OFF",
         "--user-group-permissions", str(permissions)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    RM = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{control}",
                      zmq_info_addr=f"tcp://127.0.0.1:{info}")
    try:
        deadline = time.monotonic() + 60
        while True:  # the manager answers once it is up
            try:
                RM.status()
                break
            except Exception:
                assert time.monotonic() < deadline, (tmp_path / "manager.log").read_text()[-3000:]
                time.sleep(0.5)
        RM.environment_open()
        RM.wait_for_idle(timeout=120)
        assert RM.status()["worker_environment_exists"], (tmp_path / "manager.log").read_text()[-3000:]
        existing = RM.devices_allowed()["devices_allowed"]
        assert {"eiger2", "eiger2_async"} <= set(existing)  # both in the worker's namespace
        runs_before = len(catalog.runs)
        RM.item_add(BPlan("count", ["eiger2"], num=2))
        RM.queue_start()
        RM.wait_for_idle(timeout=120)
        assert len(catalog.runs) == runs_before + 1, (tmp_path / "manager.log").read_text()[-3000:]
        run = catalog.runs[-1]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run.primary["eiger2_image"].shape == (2, 512, 1028)
        RM.environment_close()
        RM.wait_for_idle(timeout=60)
    finally:
        RM.close()
        manager.terminate()
        manager.wait(30)
        log.close()


