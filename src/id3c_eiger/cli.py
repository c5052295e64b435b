"""The ``id3c-eiger`` command: look at EIGER master files and diagnose them.

Each subcommand is also a Python function (``inspection.inspect_master``,
``plotting.plot_frame``, ``doctor.check_master_file``). A problem is one line on stderr naming
the value and the fix, and a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .doctor import check_master_file
from .inspection import format_report, inspect_master
from .plotting import frame_from_master, plot_frame

EXIT_FAIL = 1  # the doctor found a broken hop, or a link does not resolve
EXIT_ERROR = 2  # bad input: the command could not look at all


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="id3c-eiger", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="a master file's tree, links and metadata")
    inspect.add_argument("master", help="path of a *_master.h5 file")
    show = commands.add_parser("show", help="a PNG of one frame, or of frames summed")
    show.add_argument("master", help="path of a *_master.h5 file")
    show.add_argument("--frames", type=_frames, default=range(0, 1), help="N or A:B (summed)")
    show.add_argument("--roi", type=_roi, help="Y0:Y1,X0:X1")
    show.add_argument("--vmax", type=float, help="top of the colour scale, in counts")
    show.add_argument("--output", default="frame.png", help="PNG to write (default frame.png)")
    doctor = commands.add_parser("doctor", help="check every hop; PASS or FAIL with the fix")
    doctor.add_argument("--master", required=True,
                        help="check this master file alone (no IOC, no Tiled)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            report = inspect_master(args.master)
            print(format_report(report))
            return 0 if report.ok else EXIT_FAIL
        if args.command == "show":
            image = frame_from_master(args.master, args.frames)
            plot_frame(image, roi=args.roi, vmax=args.vmax, output=args.output)
            print(f"wrote {args.output}: {image.title}")
            return 0
        hops = list(check_master_file(args.master))
        for hop in hops:
            print(hop)
        return 0 if all(hop.passed for hop in hops) else EXIT_FAIL
    except (ValueError, IndexError, OSError) as err:
        print(f"id3c-eiger: error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
