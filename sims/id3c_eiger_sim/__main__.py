"""``id3c-eiger-sim``: run the simulated EIGER2 IOC (``python -m id3c_eiger_sim``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

from id3c_eiger.geometry import MODELS, model_by_key

from .ca_server import run
from .dcu import FW_SETTLE
from .faults import FAULTS, parse_fault
from .ioc import ARM_TIME, DISARM_TIME, EigerIOC
from .plugins import pva_server_config
from .process import free_port
from .roots import DataRoots

DEFAULT_PREFIX = "3idcEIG2:"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="id3c-eiger-sim",
        description="Simulated DECTRIS EIGER IOC (ADEiger cam1:, NDFileHDF5 HDF1:, ROI1:, "
        "Stats1:, Stats2:, image1:, Pva1:) over Channel Access and PV Access: the DCU's FileWriter "
        "writes EIGER master/data files, HDF1: NDFileHDF5 single files.",
    )
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="PV prefix (default %(default)s)")
    parser.add_argument(
        "--data-root", action="append", type=Path, default=None, metavar="DIR",
        help="directory the IOC may write under; give it more than once for several "
        f"(default: {Path(tempfile.gettempdir()) / 'id3c-eiger-data'}, created)",
    )
    parser.add_argument(
        "--dcu-root", type=Path, default=None, metavar="DIR",
        help="the detector's own disk, where its FileWriter writes series before the IOC "
        f"downloads them (default: {Path(tempfile.gettempdir()) / 'id3c-eiger-dcu'}, created)",
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="eiger2-500k",
                        help="detector model (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated frames")
    parser.add_argument("--interface", action="append", default=None, metavar="ADDR",
                        help="address to listen on (default 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=5064,
                        help="Channel Access server port, TCP and UDP (default %(default)s; 0: a "
                        "free one, reported in the ready line)")
    parser.add_argument("--pva-port", type=int, default=5076,
                        help="PV Access search (UDP) port of Pva1:Image (default %(default)s; "
                        "0: a free one, reported in the ready line)")
    parser.add_argument("--arm-time", type=float, default=ARM_TIME, metavar="S",
                        help="seconds from Acquire to the first exposure, as the detector arms "
                        "(default %(default)s; measure yours: cam1:Acquire to the first frame)")
    parser.add_argument("--disarm-time", type=float, default=DISARM_TIME, metavar="S",
                        help="seconds from the last frame to AcquireBusy Done "
                        "(default %(default)s)")
    parser.add_argument("--fw-settle-time", type=float, default=FW_SETTLE, metavar="S",
                        help="seconds the IOC waits, once the FileWriter leaves 'acquire', before "
                        "collecting the series' downloads and ending the acquisition (default "
                        "%(default)s, ADEiger's; each FileWriter arm costs at least this)")
    parser.add_argument("--unpaced", action="store_true",
                        help="produce each series as fast as it is written, not one frame per "
                        "AcquirePeriod: the simulator's own ceiling, for benchmarks (no "
                        "detector does this)")
    parser.add_argument(
        "--fault", action="append", default=[], metavar="NAME=VALUE",
        help="arm a fault at start, as a put to <prefix>sim:NAME would: "
        + "; ".join(f"{f.name}: {f.doc}" for f in FAULTS),
    )
    parser.add_argument(
        "--autosave", type=Path, default=None, metavar="FILE",
        help="state file of the settings a real IOC autosaves (file numbers, paths, timing), "
        "restored at start (default: .id3c-eiger-sim/<prefix>autosave.json in the first data root)",
    )
    parser.add_argument("--no-autosave", action="store_true",
                        help="start from defaults and save nothing")
    parser.add_argument("--list-pvs", action="store_true", help="print every PV and exit")
    parser.add_argument("--log-level", default="WARNING", help="logging level")
    return parser.parse_args(argv)


def _ca_environment(interfaces: list[str], port: int) -> dict[str, str]:
    """CA server settings: our port, beacons only where we listen when that is loopback."""
    env = {"EPICS_CA_SERVER_PORT": str(port)}
    if all(ipaddress.ip_address(addr).is_loopback for addr in interfaces):
        env |= {"EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_CAS_BEACON_ADDR_LIST": interfaces[0]}
    return env


class PortInUse(OSError):
    """The Channel Access port is taken on one of the interfaces."""


def check_port_free(interfaces: list[str], port: int) -> None:
    """Refuse a port another server holds: caproto would share a busy UDP port silently and
    clients would reach either IOC. TCP TIME_WAIT remnants of an earlier run do not count."""
    for addr in interfaces:
        for kind, proto in (("TCP", socket.SOCK_STREAM), ("UDP", socket.SOCK_DGRAM)):
            with socket.socket(socket.AF_INET, proto) as probe:
                if proto == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((addr, port))
                    if proto == socket.SOCK_STREAM:
                        probe.listen()
                except OSError as err:
                    raise PortInUse(
                        f"{kind} port {port} on {addr} is in use ({err.strerror}), probably by "
                        "another IOC; choose another --port, or --port 0 for a free one"
                    ) from None


def main(argv: list[str] | None = None) -> int:
    """Start the IOC and serve until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    model = model_by_key(args.model)
    roots = args.data_root or [Path(tempfile.gettempdir()) / "id3c-eiger-data"]
    if not args.data_root:
        roots[0].mkdir(parents=True, exist_ok=True)
    try:
        data_roots = DataRoots(roots)
        faults = [parse_fault(text) for text in args.fault]
    except ValueError as err:
        print(f"id3c-eiger-sim: {err}", file=sys.stderr)
        return 2
    if min(args.arm_time, args.disarm_time, args.fw_settle_time) < 0:
        print("id3c-eiger-sim: --arm-time, --disarm-time and --fw-settle-time are seconds, at "
              "least 0",
              file=sys.stderr)
        return 2
    dcu_root = args.dcu_root or Path(tempfile.gettempdir()) / "id3c-eiger-dcu"
    dcu_root.mkdir(parents=True, exist_ok=True)
    ioc = EigerIOC(prefix=args.prefix, model=model, roots=data_roots, dcu_root=dcu_root,
                   seed=args.seed, arm_time=args.arm_time, disarm_time=args.disarm_time,
                   fw_settle_time=args.fw_settle_time, paced=not args.unpaced)
    if not args.no_autosave:
        safe_prefix = "".join(c if c.isalnum() else "_" for c in args.prefix)
        ioc.use_autosave(args.autosave or data_roots.roots[0] / ".id3c-eiger-sim"
                         / f"{safe_prefix}autosave.json")
    if args.list_pvs:
        for name, channel in ioc.pvdb.items():
            print(f"{name}\t{channel.data_type.name}\t{channel.max_length}")
        return 0
    interfaces = args.interface or ["127.0.0.1"]
    for key, value in _ca_environment(interfaces, args.port or free_port()).items():
        os.environ.setdefault(key, value)
    if all(ipaddress.ip_address(addr).is_loopback for addr in interfaces):
        # Beacons go to loopback, where no CA repeater need listen; their refusals are noise.
        logging.getLogger("caproto.ctx").addFilter(
            lambda record: not record.getMessage().startswith("Failed to send beacon")
        )
    port = os.environ["EPICS_CA_SERVER_PORT"]
    try:
        check_port_free(interfaces, int(port))
    except PortInUse as err:
        print(f"id3c-eiger-sim: {err}", file=sys.stderr)
        return 2

    pva_port = args.pva_port or free_port()

    async def ready(async_lib: object) -> None:
        await ioc.initialize()
        for name, value in faults:
            await ioc.sim.arm(name, value)
        ioc.pva1.serve(pva_server_config(pva_port, interfaces))
        addr_list = " ".join(f"{addr}:{port}" for addr in interfaces)
        pva_list = " ".join(f"{addr}:{pva_port}" for addr in interfaces)
        print(
            f"id3c-eiger-sim ready: prefix={args.prefix} model={model.description} "
            f"data roots: {data_roots.describe()}\n"
            f"  clients: export EPICS_CA_ADDR_LIST='{addr_list}' EPICS_CA_AUTO_ADDR_LIST=NO "
            f"EPICS_CA_MAX_ARRAY_BYTES=10000000\n"
            f"  PV Access ({ioc.pva1.image_name}): export EPICS_PVA_ADDR_LIST='{pva_list}' "
            "EPICS_PVA_AUTO_ADDR_LIST=NO",
            flush=True,
        )

    try:
        run(ioc.pvdb, interfaces=interfaces, startup_hook=ready)
    finally:
        ioc.pva1.close()
        ioc.writer_executor.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
