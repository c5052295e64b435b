"""The ``id3c-eiger`` command: run the demo, look at EIGER frames, and diagnose the chain.

Each subcommand is also a Python function (``demo.run_demo``, ``inspection.inspect_master``,
``plotting.plot_frame``, ``doctor.check_chain``, ``deploy.tiled_config``). A problem is one line
on stderr naming the value and the fix, and a non-zero exit status; never a traceback. Each
subcommand imports what it needs when it runs, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .doctor import Hop

DESCRIPTION = "Run the demo, look at EIGER frames, and diagnose the chain from IOC to Tiled."

EXIT_FAIL = 1  # the doctor found a broken hop, or a link does not resolve
EXIT_ERROR = 2  # bad input: the command could not look at all
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
TERMINAL_WIDTH = 100  # columns a doctor line takes at most on a terminal
DEVICES_HELP = ("devices file (default: $ID3C_EIGER_DEVICES, else the one shipped with the "
                "package)")


def _frames(text: str) -> range:
    """``N`` (one frame) or ``A:B`` (frames A..B-1, summed)."""
    try:
        if ":" in text:
            start, stop = (int(part) for part in text.split(":", 1))
            return range(start, stop)
        index = int(text)
        return range(index, index + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"frames {text!r} is not N or A:B (e.g. 0, or 0:10 to sum frames 0..9)") from None


def _roi(text: str) -> tuple[int, int, int, int]:
    """``Y0:Y1,X0:X1``."""
    try:
        ys, xs = text.split(",")
        y0, y1 = (int(v) for v in ys.split(":"))
        x0, x1 = (int(v) for v in xs.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"roi {text!r} is not Y0:Y1,X0:X1 (e.g. 100:300,200:600)") from None
    return y0, y1, x0, x1


def _run_key(text: str) -> str | int:
    """A run by uid (or its first characters), scan id, or negative index (-1: the latest)."""
    return int(text) if text.lstrip("-").isdigit() else text


def _tiled_options(parser: argparse.ArgumentParser, detector_help: str) -> None:
    parser.add_argument("--tiled", metavar="URI", help="Tiled server, e.g. http://host:8000")
    parser.add_argument("--api-key", help="Tiled API key (default: $TILED_API_KEY)")
    parser.add_argument("--run", type=_run_key, default=-1,
                        help="uid, scan id, or -1 for the latest (default)")
    parser.add_argument("--detector", help=detector_help)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="id3c-eiger", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"id3c-eiger {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="simulator + embedded Tiled + bp.count + a picture + "
                               "the doctor, on this machine")
    demo.add_argument("--directory", help="where data, catalog and picture go (default: a new "
                      "temporary directory, kept)")
    demo.add_argument("--points", type=int, default=10, help="points of bp.count (default 10)")
    demo.add_argument("--exposure", type=float, default=0.1, help="s a frame (default 0.1)")
    demo.add_argument("--devices", help=DEVICES_HELP)
    demo.add_argument("--detector", default="eiger2", help="device name (default eiger2)")
    inspect = commands.add_parser("inspect", help="a master file's tree, links and metadata")
    inspect.add_argument("master", help="path of a *_master.h5 file (or of an HDF1 file)")
    show = commands.add_parser("show", help="a PNG of one frame, or of frames summed, from a "
                               "master file or a run in Tiled")
    show.add_argument("master", nargs="?", help="path of a *_master.h5 file or an HDF1 file (or "
                      "give --tiled)")
    show.add_argument("--frames", type=_frames, default=range(0, 1), help="N or A:B (summed)")
    show.add_argument("--roi", type=_roi, help="Y0:Y1,X0:X1")
    show.add_argument("--vmax", type=float, help="top of the colour scale, in counts")
    show.add_argument("--output", help="PNG to write (default: a window when there is a display, "
                      "else frame.png)")
    _tiled_options(show, "device whose <name>_image to draw (default: the run's first "
                   "detector with images)")
    doctor = commands.add_parser("doctor", help="check every hop; PASS or FAIL with the fix")
    doctor.add_argument("--master", help="check this master (or HDF1) file alone (no IOC, no "
                        "Tiled)")
    doctor.add_argument("--devices", help=DEVICES_HELP)
    doctor.add_argument("--timeout", type=float,
                        help="s to wait for each PV (default: 5, pyepics' connection timeout)")
    doctor.add_argument("--runs", type=int, metavar="N",
                        help="check that the last N runs in --tiled read, one line each (no IOC)")
    _tiled_options(doctor, "device name in the devices file (default: the run's detector "
                   "that the devices file names, else eiger2)")
    replay = commands.add_parser("replay", help="write runs Tiled could not take, kept in the "
                                 "spool, to Tiled whole")
    replay.add_argument("--tiled", required=True, metavar="URI", help="Tiled server")
    replay.add_argument("--api-key", help="Tiled API key (default: $TILED_API_KEY)")
    replay.add_argument("--spool", help="spool directory (default ~/.local/state/id3c-eiger/spool)")
    config = commands.add_parser("tiled-config", help="the Tiled server's configuration (and "
                                 "systemd unit) for the detectors of a devices file")
    config.add_argument("--devices", help=DEVICES_HELP)
    config.add_argument("--database", required=True, metavar="URI",
                        help="catalog database, postgresql://USER:PASSWORD@HOST:PORT/DB")
    config.add_argument("--writable", required=True, metavar="DIR",
                        help="directory where the server keeps the arrays TiledWriter creates")
    config.add_argument("--tables", metavar="URI", help="SQL database for tables (default: the "
                        "catalog's)")
    config.add_argument("--host", default="0.0.0.0", help="address to listen on")
    config.add_argument("--port", type=int, help="port (default 8000)")
    config.add_argument("--output", default="tiled-config.yml", help="configuration file to write")
    config.add_argument("--systemd", metavar="FILE", help="also write a systemd unit running it")
    return parser


def _version() -> str:
    """The installed distribution's version."""
    try:
        return version("id3c-eiger")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _tiled_config(args: argparse.Namespace) -> int:
    from .deploy import API_KEY_VARIABLE, config_text, systemd_unit, tiled_config

    port = {} if args.port is None else {"port": args.port}
    config = tiled_config(args.devices, args.database, args.writable, tables=args.tables,
                          host=args.host, **port)
    output = Path(args.output)
    output.write_text(config_text(config))
    print(f"wrote {output}; start the server with:")
    print(f"  {API_KEY_VARIABLE}=<alphanumeric key> tiled serve config {output}")
    if args.systemd:
        Path(args.systemd).write_text(systemd_unit(output.resolve()))
        print(f"wrote {args.systemd}: install it in /etc/systemd/system, put "
              f"{API_KEY_VARIABLE}=<key> in /etc/tiled/api-key.env (mode 600), then "
              "systemctl enable --now tiled")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.directory, points=args.points, exposure=args.exposure,
                      devices_file=args.devices, detector=args.detector)
    return 0 if result.ok else EXIT_FAIL


def _show(args: argparse.Namespace) -> int:
    if (args.master is None) == (args.tiled is None):
        raise ValueError("show needs a master file or --tiled URI (with --run), not both; e.g. "
                         "id3c-eiger show run_master.h5, or id3c-eiger show --tiled "
                         "http://host:8000 --run -1")
    from .doctor import DEFAULT_DETECTOR, STREAM
    from .plotting import frame_from_master, frame_from_run, plot_frame

    if args.master is not None:
        image = frame_from_master(args.master, args.frames)
    else:
        from .catalog import find_run, imaging_detectors, open_catalog

        with open_catalog(args.tiled, api_key=args.api_key) as catalog:
            run = find_run(catalog, args.run)
            detector = args.detector or next(iter(imaging_detectors(run, STREAM)),
                                             DEFAULT_DETECTOR)
            image = frame_from_run(run, detector, args.frames, STREAM)
    output = args.output or (None if _has_display() else "frame.png")
    plot_frame(image, roi=args.roi, vmax=args.vmax, output=output)
    if output is None:
        import matplotlib.pyplot as plt

        print(f"showing {image.title} (close the window to finish)")
        plt.show()
    else:
        print(f"wrote {output}: {image.title}")
    return 0


def _has_display() -> bool:
    """Whether a window can open: an X11 or Wayland display on Linux; always on macOS/Windows."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import check_chain, check_master_file, check_runs

    if args.master is not None and args.tiled is not None:
        raise ValueError("doctor --master checks one file with no IOC and no Tiled; give "
                         "either --master FILE or --tiled URI, not both")
    if args.runs is not None:
        if args.tiled is None:
            raise ValueError("doctor --runs N reads the last N runs from Tiled; give --tiled URI")
        from .catalog import open_catalog

        with open_catalog(args.tiled, api_key=args.api_key) as catalog:
            return _print_hops(check_runs(catalog, args.runs, args.detector))
    if args.master is not None:
        hops = check_master_file(args.master)
    else:
        timeout = {} if args.timeout is None else {"ca_timeout": args.timeout}
        hops = check_chain(args.devices, detector=args.detector, tiled_uri=args.tiled,
                           api_key=args.api_key, run=args.run, **timeout)
    status = _print_hops(hops)
    if status == 0 and args.master is None and args.tiled is None:
        print("(Tiled not checked: give --tiled URI to check the run, its files and frame 0)")
    return status


def _print_hops(hops: Iterable[Hop]) -> int:
    """Print each hop as it comes; 0 if all passed, else ``EXIT_FAIL``. On a terminal, wrapped
    to its width (at most ``TERMINAL_WIDTH``) and coloured unless ``$NO_COLOR``; elsewhere (a
    pipe, a log) one line a hop, for grep."""
    terminal = sys.stdout.isatty()
    width = min(shutil.get_terminal_size((TERMINAL_WIDTH, 24)).columns, TERMINAL_WIDTH)
    colour = terminal and not os.environ.get("NO_COLOR")
    passed = True
    for hop in hops:
        print(hop.for_terminal(width, colour) if terminal else hop, flush=True)
        passed &= hop.passed
    return 0 if passed else EXIT_FAIL


def _replay(args: argparse.Namespace) -> int:
    from .catalog import open_catalog
    from .spool import default_spool_directory, replay

    spool = Path(args.spool) if args.spool else default_spool_directory()
    if not spool.is_dir():
        raise ValueError(f"spool directory {spool} does not exist; give --spool where the "
                         "RunEngine's catalog.subscribe(..., spool_directory=...) keeps it")
    with open_catalog(args.tiled, api_key=args.api_key) as catalog:
        written = replay(catalog.runs, spool)
    for uid in written:
        print(f"run {uid}: complete in Tiled at {catalog.address}")
    print(f"{len(written)} spooled run(s) written; {spool} holds no more" if written
          else f"nothing to replay in {spool}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "inspect":
            from .inspection import format_report, inspect_master

            report = inspect_master(args.master)
            print(format_report(report))
            return 0 if report.ok else EXIT_FAIL
        if args.command == "show":
            return _show(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "tiled-config":
            return _tiled_config(args)
        return _doctor(args)
    except KeyboardInterrupt:
        print("id3c-eiger: interrupted; processes stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, LookupError, OSError, RuntimeError) as err:
        message = " ".join(str(err).split())  # one line, whatever the library's message
        print(f"id3c-eiger: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
