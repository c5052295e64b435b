"""Where files written under another host's roots show on this host.

The IOC (or the DCU) writes absolute link targets as it sees them (``/detector/eiger/...``); the
Tiled host and Bluesky see the share elsewhere (``/gdata/3idc/eiger/...``). A ``PathMap`` holds
(write root, read root) pairs and turns a written path into the path here. It is the devices
file's write/read templates as roots, given to the Tiled server (and any reader) as
``ID3C_EIGER_PATH_MAP=/detector/eiger=/gdata/3idc/eiger`` (pairs separated by ``:``).

Imports nothing beyond the standard library: the Tiled host loads it with the adapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PATH_MAP_VARIABLE = "ID3C_EIGER_PATH_MAP"


class PathMapError(ValueError):
    """A path map entry breaks a rule; the message names the entry, the rule and the fix."""


@dataclass(frozen=True)
class PathMap:
    """(write root, read root) pairs; a path under a write root maps under its read root (the
    longest matching write root wins)."""

    pairs: tuple[tuple[PurePosixPath, PurePosixPath], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]]) -> PathMap:
        """A map of ``(write root, read root)`` pairs, each root absolute; equal pairs dropped."""
        checked: list[tuple[PurePosixPath, PurePosixPath]] = []
        for write, read in pairs:
            for kind, root in (("write", write), ("read", read)):
                if not PurePosixPath(root).is_absolute():
                    raise PathMapError(
                        f"path map {kind} root {str(root)!r} is not absolute; give both roots "
                        "from '/', e.g. /detector/eiger=/gdata/3idc/eiger")
            pair = (PurePosixPath(write), PurePosixPath(read))
            if pair[0] != pair[1] and pair not in checked:
                checked.append(pair)
        checked.sort(key=lambda pair: len(pair[0].parts), reverse=True)
        return cls(tuple(checked))

    @classmethod
    def parse(cls, text: str) -> PathMap:
        """The map written as ``WRITE=READ`` pairs separated by ``:``."""
        pairs = []
        for entry in filter(None, text.split(os.pathsep)):
            write, equals, read = entry.partition("=")
            if not equals:
                raise PathMapError(
                    f"path map entry {entry!r} has no '='; write each as WRITE_ROOT=READ_ROOT, "
                    "e.g. /detector/eiger=/gdata/3idc/eiger, entries separated by ':'")
            pairs.append((write, read))
        return cls.of(pairs)

    @classmethod
    def from_environment(cls) -> PathMap:
        """The map in ``$ID3C_EIGER_PATH_MAP`` (empty if unset)."""
        return cls.parse(os.environ.get(PATH_MAP_VARIABLE, ""))

    def __or__(self, other: PathMap) -> PathMap:
        return PathMap.of((*self.pairs, *other.pairs))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __str__(self) -> str:
        return os.pathsep.join(f"{write}={read}" for write, read in self.pairs)

    def map(self, path: str | os.PathLike[str]) -> Path | None:
        """``path`` (absolute, as written) where it shows here, or None under no write root."""
        written = PurePosixPath(path)
        for write, read in self.pairs:
            if written.is_relative_to(write):
                return Path(read / written.relative_to(write))
        return None
