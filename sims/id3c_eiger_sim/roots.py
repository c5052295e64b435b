"""The directories the simulator may write under (``--data-root``), and checks of file paths.

Every directory a client names is resolved (``..`` and symlinks followed) before it is compared
with the roots, so neither can lead a write outside them. ``CreateDirectory`` follows areaDetector:
0 creates nothing, -N creates up to the last N levels, N creates every level below the Nth.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


class PathRefused(Exception):
    """A file path or name the simulator will not write to; the message says why and the fix."""


@dataclass
class FileTarget:
    """Where one series goes: the master and the data directory as users see them, and each
    directory held open since it was checked, so that a directory swapped for a symlink later
    cannot lead a write out of the roots (writes go through ``/proc/self/fd/N``)."""

    master_path: Path
    data_dir: Path
    master_dir_fd: int
    data_dir_fd: int

    @property
    def master_io(self) -> Path:
        """The master's path through the held directory."""
        return Path(f"/proc/self/fd/{self.master_dir_fd}") / self.master_path.name

    @property
    def data_io(self) -> Path:
        """The data directory through its held descriptor."""
        return Path(f"/proc/self/fd/{self.data_dir_fd}")

    def close(self) -> None:
        """Release the directories."""
        for fd in {self.master_dir_fd, self.data_dir_fd}:
            os.close(fd)


class DataRoots:
    """The set of directories writes are confined to."""

    def __init__(self, roots: list[Path]) -> None:
        if not roots:
            raise ValueError("at least one --data-root is required")
        resolved = []
        for root in roots:
            real = Path(os.path.realpath(root))
            if not real.is_dir():
                raise ValueError(f"--data-root {root} is not an existing directory; create it first")
            resolved.append(real)
        self.roots = tuple(resolved)

    def describe(self) -> str:
        """The roots as a user reads them in messages."""
        return ", ".join(f"{root}/" for root in self.roots)

    def _confine(self, directory: str) -> Path:
        if not directory or not os.path.isabs(directory):
            raise PathRefused(
                f"FilePath {directory!r} is not an absolute directory; "
                f"give a full path under {self.describe()}"
            )
        real = Path(os.path.realpath(directory))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            shown = f"{directory} (resolves to {real}/)" if str(real) != directory.rstrip("/") else directory
            raise PathRefused(
                f"FilePath {shown} is outside the simulator's data roots ({self.describe()}); "
                "choose a directory under one of them or start the IOC with another --data-root"
            )
        return real

    def prepare_directory(self, directory: str, create_depth: int) -> Path:
        """The resolved directory, created as ``create_depth`` allows, checked writable."""
        real = self._confine(directory)
        existing = real
        while not existing.exists():
            existing = existing.parent
        missing = len(real.parts) - len(existing.parts)
        if not existing.is_dir():
            raise PathRefused(f"FilePath {directory}: {existing} is a file, not a directory")
        if missing:
            if create_depth == 0:
                raise PathRefused(
                    f"FilePath {directory} does not exist and CreateDirectory is 0; create it "
                    "or set CreateDirectory to -N to let the IOC create the last N levels"
                )
            first_missing_level = len(existing.parts)  # parts[0] is "/", so levels count from 1
            if create_depth < 0 and missing > -create_depth:
                raise PathRefused(
                    f"FilePath {directory} lacks {missing} directory levels but CreateDirectory "
                    f"{create_depth} creates at most {-create_depth}; create {existing}/... "
                    f"or set CreateDirectory to -{missing}"
                )
            if create_depth > 0 and first_missing_level <= create_depth:
                raise PathRefused(
                    f"FilePath {directory}: level {first_missing_level} ({existing}) must exist "
                    f"with CreateDirectory {create_depth}; create it or lower CreateDirectory"
                )
            try:
                real.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise PathRefused(f"FilePath {directory} could not be created: {err.strerror}") from err
        if not os.access(real, os.W_OK | os.X_OK):
            raise PathRefused(
                f"FilePath {directory} is not writable by the IOC (user id {os.geteuid()}); "
                "fix its permissions or choose another directory"
            )
        return real

    def open_directory(self, real: Path) -> int:
        """A descriptor of the confined directory ``real``, opened one level at a time from its
        root without following any symlink; ``PathRefused`` if a level is no longer a plain
        directory (swapped since it was checked)."""
        root = next(r for r in self.roots if real == r or real.is_relative_to(r))
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        for part in real.relative_to(root).parts:
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                raise PathRefused(
                    f"FilePath {real}: {part!r} is no longer a plain directory ({err.strerror}); "
                    "it was replaced (by a symlink?) after the check, and nothing was written. "
                    "Put back a real directory under the data roots"
                ) from None
            finally:
                os.close(fd)
            fd = next_fd
        return fd

    def exists(self, directory: str) -> bool:
        """``FilePathExists_RBV``: the directory is inside the roots and exists."""
        try:
            return self._confine(directory).is_dir()
        except PathRefused:
            return False


def check_file_name(name: str) -> str:
    """A file name must be a plain name: no directory separator, not empty, not a dot name."""
    if not name or name in {".", ".."} or "/" in name or (os.altsep and os.altsep in name):
        raise PathRefused(
            f"FileName {name!r} is not a plain file name; put directories in FilePath and use "
            "a name without '/'"
        )
    return name


MAX_FULL_FILE_NAME = 511  # characters: FullFileName_RBV is a CHAR waveform of 512
_FIELD_WIDTHS = re.compile(r"%[-+ #0]*(\d*)(?:\.(\d*))?")


def expand_template(template: str, path: str, name: str, number: int) -> str:
    """Apply an areaDetector ``FileTemplate`` (C format of path, name, number); as C's
    ``snprintf``, a template may leave the number unused (ophyd-async's ``%s%s.h5``). A name
    longer than ``FullFileName_RBV`` holds is refused, before any formatting."""
    for width, precision in _FIELD_WIDTHS.findall(template):
        if max(int(width or 0), int(precision or 0)) > MAX_FULL_FILE_NAME:
            raise PathRefused(
                f"FileTemplate {template!r} asks for a field of {max(int(width or 0), int(precision or 0))} "
                f"characters; a full file name holds at most {MAX_FULL_FILE_NAME}: use e.g. "
                "'%s%s_%6.6d.h5'"
            )
    try:
        try:
            full = template % (path, name, number)
        except TypeError as err:
            if "not all arguments converted" not in str(err):
                raise
            full = template % (path, name)
    except (TypeError, ValueError) as err:
        raise PathRefused(
            f"FileTemplate {template!r} is not a C format for (path, name, number): {err}; "
            "use e.g. '%s%s_%6.6d.h5'"
        ) from err
    if not full.startswith(path) or "/" in full[len(path) :]:
        raise PathRefused(
            f"FileTemplate {template!r} makes a name that is not a file directly in FilePath; "
            f"start the template with %s%s (it gives {full!r})"
        )
    if len(full) > MAX_FULL_FILE_NAME:
        raise PathRefused(
            f"FileTemplate {template!r} with FilePath and FileName gives a name of {len(full)} "
            f"characters; FullFileName_RBV holds at most {MAX_FULL_FILE_NAME}: shorten them"
        )
    return full
