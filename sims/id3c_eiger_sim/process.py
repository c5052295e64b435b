"""The simulator as a separate process: start it on a loopback port, wait until it serves, stop it.

Used by ``id3c-eiger demo``, the tests and the benchmarks, so each runs the same real IOC over
real Channel Access rather than an in-process stand-in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 60.0  # s: imports, PV surface, first bind


class SimulatorStartError(RuntimeError):
    """The simulator process did not say it was ready in time (its output is in the message)."""


def free_port() -> int:
    """A port free for both TCP and UDP on loopback now (Channel Access needs both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def client_environment(port: int, pva_port: int | None = None) -> dict[str, str]:
    """The EPICS variables a client needs to reach a simulator on loopback ``port`` only (and
    its PV Access channel on ``pva_port``); ``image1:ArrayData`` needs the array size."""
    env = {"EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}", "EPICS_CA_AUTO_ADDR_LIST": "NO",
           "EPICS_CA_MAX_ARRAY_BYTES": "10000000"}
    if pva_port is not None:
        env |= {"EPICS_PVA_ADDR_LIST": f"127.0.0.1:{pva_port}", "EPICS_PVA_AUTO_ADDR_LIST": "NO"}
    return env


@dataclass
class SimulatorProcess:
    """A running simulator: its prefix, port, data roots, process and output so far."""

    prefix: str
    port: int
    roots: list[Path]
    process: subprocess.Popen
    pva_port: int = 0  # its PV Access search port (Pva1:Image)
    dcu_root: Path | None = None  # the detector's own disk (its FileWriter's series)
    output: list[str] = field(default_factory=list)
    owns_dcu_root: bool = False  # made for it by start_simulator: removed at stop


    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> None:
        """Stop the process (``sig``, then SIGKILL if it lingers past ``timeout``); a DCU disk
        made for it goes with it (a fly scan's series kept there are GBs)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.owns_dcu_root and self.dcu_root is not None:
            shutil.rmtree(self.dcu_root, ignore_errors=True)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_with_parent() -> None:
    """In the child before exec (Linux): SIGINT when the parent dies, even by SIGKILL, so a
    simulator in its own session is never left serving."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def ioc_host_command(command: list[str], share: Path, mount_point: Path) -> list[str]:
    """``command`` run as on an IOC host of its own (Linux, root): in a private mount namespace
    where the ``share`` directory appears only at ``mount_point`` (on a tmpfs over its first
    directory, e.g. ``/mnt``) and ``share``'s own path shows an empty directory. Writes through
    ``mount_point`` land in ``share``; a client using either path on the other side fails."""
    top = Path(*mount_point.parts[:2])
    script = (f'mount -t tmpfs ioc-host "{top}" && mkdir -p "{mount_point}" && '
              f'mount --bind "{share}" "{mount_point}" && mount -t tmpfs hidden "{share}" && '
              'exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "ioc-host",
            *command]


def start_simulator(prefix: str, port: int, roots: list[Path], *, seed: int = 0,
                    user: str | None = None, extra: tuple[str, ...] = (),
                    dcu_root: Path | None = None, ioc_host: tuple[Path, Path] | None = None,
                    timeout: float = START_TIMEOUT) -> SimulatorProcess:
    """Start ``python -m id3c_eiger_sim`` serving ``prefix`` on loopback ``port`` and return once
    it is ready; raises ``SimulatorStartError`` (and stops it) after ``timeout`` seconds. Its
    DCU disk is ``dcu_root`` (default: a new temporary directory of its own). With ``ioc_host``
    (share, mount point) it runs as on a host of its own (``ioc_host_command``); ``roots`` are
    then as that host sees them."""
    pva_port = free_port()
    owns_dcu_root = dcu_root is None
    dcu_root = dcu_root or Path(tempfile.mkdtemp(prefix="id3c-eiger-dcu-"))
    cmd = [sys.executable, "-m", "id3c_eiger_sim", "--prefix", prefix, "--port", str(port),
           "--pva-port", str(pva_port), "--dcu-root", str(dcu_root), "--seed", str(seed), *extra]
    for root in roots:
        cmd += ["--data-root", str(root)]
    if ioc_host is not None:
        cmd = ioc_host_command(cmd, *ioc_host)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    # A session of its own: Ctrl-C in a terminal reaches the caller, which stops it in order.
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, user=user, start_new_session=True,
                               preexec_fn=_stop_with_parent if sys.platform == "linux" else None)
    simulator = SimulatorProcess(prefix, port, list(roots), process, pva_port, dcu_root,
                                 owns_dcu_root=owns_dcu_root)
    ready = threading.Event()

    def pump() -> None:
        for line in process.stdout:
            simulator.output.append(line)
            if "ready:" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout):
        simulator.stop()
        raise SimulatorStartError(
            f"the simulator ({' '.join(cmd)}) did not become ready in {timeout:g} s; its output: "
            f"{''.join(simulator.output).strip() or '(none)'}"
        )
    return simulator
