"""``id3c-eiger-sim``: run the simulated EIGER2 IOC (``python -m id3c_eiger_sim``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
import tempfile
from pathlib import Path

from id3c_eiger.geometry import MODELS, model_by_key

from .ioc import EigerIOC
from .roots import DataRoots

DEFAULT_PREFIX = "3idcEIG2:"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="id3c-eiger-sim",
        description="Simulated DECTRIS EIGER IOC (ADEiger cam1: + NDFileHDF5 HDF1:) over "
        "Channel Access, writing EIGER master/data files.",
    )
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="PV prefix (default %(default)s)")
    parser.add_argument(
        "--data-root", action="append", type=Path, default=None, metavar="DIR",
        help="directory the IOC may write under; give it more than once for several "
        f"(default: {Path(tempfile.gettempdir()) / 'id3c-eiger-data'}, created)",
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="eiger2-500k",
                        help="detector model (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated frames")
    parser.add_argument("--interface", action="append", default=None, metavar="ADDR",
                        help="address to listen on (default 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=5064,
                        help="Channel Access server port (default %(default)s)")
    parser.add_argument("--list-pvs", action="store_true", help="print every PV and exit")
    parser.add_argument("--log-level", default="WARNING", help="logging level")
    return parser.parse_args(argv)


def _ca_environment(interfaces: list[str], port: int) -> dict[str, str]:
    """CA server settings: our port, beacons only where we listen when that is loopback."""
    env = {"EPICS_CA_SERVER_PORT": str(port)}
    if all(ipaddress.ip_address(addr).is_loopback for addr in interfaces):
        env |= {"EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_CAS_BEACON_ADDR_LIST": interfaces[0]}
    return env


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
    except ValueError as err:
        print(f"id3c-eiger-sim: {err}", file=sys.stderr)
        return 2
    ioc = EigerIOC(prefix=args.prefix, model=model, roots=data_roots, seed=args.seed)
    if args.list_pvs:
        for name, channel in ioc.pvdb.items():
            print(f"{name}\t{channel.data_type.name}\t{channel.max_length}")
        return 0
    interfaces = args.interface or ["127.0.0.1"]
    for key, value in _ca_environment(interfaces, args.port).items():
        os.environ.setdefault(key, value)
    if all(ipaddress.ip_address(addr).is_loopback for addr in interfaces):
        # Beacons go to loopback, where no CA repeater need listen; their refusals are noise.
        logging.getLogger("caproto.ctx").addFilter(
            lambda record: not record.getMessage().startswith("Failed to send beacon")
        )
    port = os.environ["EPICS_CA_SERVER_PORT"]

    async def ready(async_lib: object) -> None:
        await ioc.initialize()
        addr_list = " ".join(f"{addr}:{port}" for addr in interfaces)
        print(
            f"id3c-eiger-sim ready: prefix={args.prefix} model={model.description} "
            f"data roots: {data_roots.describe()}\n"
            f"  clients: export EPICS_CA_ADDR_LIST='{addr_list}' EPICS_CA_AUTO_ADDR_LIST=NO",
            flush=True,
        )

    from caproto.asyncio.server import run

    try:
        run(ioc.pvdb, interfaces=interfaces, startup_hook=ready)
    except KeyboardInterrupt:
        pass
    finally:
        ioc.writer_executor.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
