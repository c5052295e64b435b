"""Read/write path templates: one directory as the IOC host sees it and as Bluesky/Tiled see it.

The IOC writes to the *write* path (its own mount of the shared file system); Bluesky records and
Tiled opens the *read* path (the same directory on their hosts). Both are strftime templates, e.g.
``/data/%Y/%m/%d/``, expanded at the same instant so a run never straddles two dates.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from ophyd_async.core import FilenameProvider, PathInfo, UUIDFilenameProvider


class PathTemplateError(ValueError):
    """A path template breaks a rule; the message names the template, the rule and the fix."""


class WritePathError(OSError):
    """The IOC cannot write where the write path template points."""

    @classmethod
    def refused(cls, paths: ExpandedPaths, template: str, ioc_message: str) -> WritePathError:
        """The error for an IOC that refused ``paths.write``, with what the IOC said."""
        return cls(
            f"the IOC cannot write to {paths.write!r} (write_path_template {template!r}; "
            f"readers would use {paths.read!r}); IOC says: "
            f"{ioc_message or 'FilePathExists_RBV is No'}. Fix: point write_path_template at a "
            "directory the IOC host can create and write, as the IOC host mounts it."
        )


READ_PATH_GRACE = 5.0  # s: a shared file system may show a new file this late on the read host


class ReadPathError(OSError):
    """The read path is missing or unreadable here, or does not show what the IOC wrote."""

    @classmethod
    def not_shown(cls, written: str, path: Path, read: str, write: str,
                  timeout: float) -> ReadPathError:
        """The IOC wrote ``written`` but ``path``, where this host reads it, did not appear."""
        return cls(
            f"the IOC wrote {written!r} but {str(path)!r} does not exist here after "
            f"{timeout:.0f} s: read path {read!r} is not the directory the IOC writes as "
            f"{write!r}. Fix: set read_path_template to where this host mounts the IOC's write "
            "path."
        )


def _check_template(kind: str, template: str) -> None:
    if not isinstance(template, str) or not template.strip():
        raise PathTemplateError(
            f"{kind}_path_template {template!r} is empty: give the directory as an absolute "
            "path, e.g. '/data/%Y/%m/%d/'"
        )
    if not posixpath.isabs(template):
        raise PathTemplateError(
            f"{kind}_path_template {template!r} is not absolute: the IOC and the readers resolve "
            "relative paths against different working directories; start it with '/'"
        )
    try:
        datetime(2000, 1, 1).strftime(template)
    except ValueError as err:
        raise PathTemplateError(
            f"{kind}_path_template {template!r} is not a valid strftime template ({err}); "
            "use codes such as %Y %m %d, and write a literal % as %%"
        ) from err


# strftime codes a directory template may use, and the text each expands to.
_CODE_PATTERNS = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "j": r"\d{3}",
                  "H": r"\d{2}", "M": r"\d{2}", "S": r"\d{2}"}


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching every expansion of a directory template, one named group per code."""
    parts, seen = [], set()
    for literal, code in re.findall(r"([^%]*)(%.|$)", with_separator(template)):
        parts.append(re.escape(literal))
        if code == "%%":
            parts.append("%")
        elif code[1:] in seen:
            parts.append(f"(?P={code[1:]})")
        elif code[1:] in _CODE_PATTERNS:
            seen.add(code[1:])
            parts.append(f"(?P<{code[1:]}>{_CODE_PATTERNS[code[1:]]})")
        elif code:
            parts.append(r"[^/]+?")  # another code (%b, %a, ...): any one path segment's text
    return re.compile("".join(parts))


def with_separator(path: str) -> str:
    """``path`` with exactly one trailing ``/``, as areaDetector's ``FilePath_RBV`` shows it."""
    return path.rstrip("/") + "/"


@dataclass(frozen=True)
class ExpandedPaths:
    """One directory at one instant: where the IOC writes it and where readers find it."""

    write: str  # with trailing separator, as put to FilePath
    read: str  # with trailing separator, as recorded for Bluesky and Tiled

    def check_readable(self) -> None:
        """Raise ``ReadPathError`` unless the read directory exists and is readable here."""
        path = Path(self.read)
        problem = None
        if not path.exists():
            problem = "does not exist here"
        elif not path.is_dir():
            problem = "is not a directory"
        elif not os.access(path, os.R_OK | os.X_OK):
            problem = "is not readable by this user"
        if problem:
            raise ReadPathError(
                f"read path {self.read!r} {problem}, while the IOC writes to {self.write!r}. "
                "Fix: set read_path_template to the directory where this host (and the Tiled "
                "server) mounts the IOC's write path, or mount it there."
            )


@dataclass(frozen=True)
class PathTemplates:
    """The write template (IOC's view) and read template (Bluesky/Tiled view) of one directory.

    Without a read template the two views are the same path (IOC and readers share a mount).
    """

    write: str
    read: str | None = None

    def __post_init__(self) -> None:
        _check_template("write", self.write)
        if self.read is not None:
            _check_template("read", self.read)

    def check_read_mount(self, create_directory_depth: int) -> None:
        """Raise ``ReadPathError`` unless the part of the read directory that no IOC creates
        exists here: with a read template of its own, the IOC creates only the write path's last
        directories (``CreateDirectory``), and of the read path at most those its end shares
        with the write path; the rest is this host's mount of the share. Checked before any
        put, so a missing mount is named before the IOC is touched."""
        if self.read is None or self.read == self.write:
            return  # one mount: the IOC may create any of it, checked once it has
        write, read, shared = self._shared_end()
        if create_directory_depth < 0:
            created = -create_directory_depth
        else:
            created = max(len(write) - create_directory_depth, 0) if create_directory_depth else 0
        kept = len(read) - min(shared, created)
        mount = PurePosixPath("/", *read[:kept])
        expanded = datetime.now().strftime(str(mount))
        if not os.path.isdir(expanded):
            raise ReadPathError(
                f"read path {with_separator(self.read)!r} cannot show what the IOC writes to "
                f"{with_separator(self.write)!r}: "
                f"{expanded!r} does not exist here, and the IOC creates only "
                f"{min(shared, created)} of its last directories. Fix: set read_path_template "
                "to where this host (and the Tiled server) mounts the IOC's write path, or "
                "mount it there.")

    def roots(self) -> tuple[str, str] | None:
        """(write root, read root): the two templates without the directories their ends
        share, the pair a path map needs (``/detector/eiger2/%Y/%m/%d/`` and
        ``/gdata/3idc/eiger/%Y/%m/%d/`` -> ``/detector/eiger2``, ``/gdata/3idc/eiger``); None
        for one mount, or when what is left still holds a strftime field."""
        if self.read is None or self.read == self.write:
            return None
        write, read, shared = self._shared_end()
        heads = (write[:len(write) - shared], read[:len(read) - shared])
        if any("%" in part for head in heads for part in head):
            return None
        write_root, read_root = (str(PurePosixPath("/", *head)) for head in heads)
        return write_root, read_root

    def _shared_end(self) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        """Both templates' components below ``/``, and how many at their ends are the same."""
        write, read = (PurePosixPath(with_separator(t)).parts[1:]
                       for t in (self.write, self.read or self.write))
        pairs = zip(reversed(write), reversed(read), strict=False)  # from the end
        shared = next((n for n, (w, r) in enumerate(pairs) if w != r), min(len(write), len(read)))
        return write, read, shared

    def expand(self, when: datetime | None = None) -> ExpandedPaths:
        """Both templates expanded for ``when`` (default now), each with a trailing ``/``."""
        when = when or datetime.now()
        write = with_separator(when.strftime(self.write))
        read = write if self.read is None else with_separator(when.strftime(self.read))
        return ExpandedPaths(write=write, read=read)

    def when_written(self, write_directory: str) -> datetime | None:
        """The instant for which the write template expands to ``write_directory`` (an IOC's
        ``FilePath_RBV``), or None when the template cannot produce that directory."""
        match = _template_pattern(self.write).fullmatch(with_separator(write_directory))
        if match is None:
            return None
        fields = {k: int(v) for k, v in match.groupdict().items()}
        year = fields.get("Y", 2000 + fields["y"] if "y" in fields else datetime.now().year)
        try:
            when = datetime(year, fields.get("m", 1), fields.get("d", 1))
            if "j" in fields:
                when = datetime.strptime(f"{year} {fields['j']}", "%Y %j")
            return when.replace(hour=fields.get("H", 0), minute=fields.get("M", 0),
                                second=fields.get("S", 0))
        except ValueError:
            return None  # digits in the right places, but no date (e.g. month 13)


class TemplatePathProvider:
    """An ophyd-async ``PathProvider`` from the same templates as the classic device.

    Each call expands both templates at one instant: the IOC writes ``<uuid>.h5`` in the
    write directory, and the StreamResource records its ``file://`` URI under the read directory.
    ``last`` keeps the expansion so the detector can check the read side after the IOC made it.
    """

    def __init__(
        self,
        templates: PathTemplates,
        create_directory_depth: int = -3,
        filename_provider: FilenameProvider | None = None,
    ) -> None:
        self.templates = templates
        self.create_directory_depth = create_directory_depth
        self.filename_provider = filename_provider or UUIDFilenameProvider()
        self.last: ExpandedPaths | None = None

    def __call__(self, datakey_name: str | None = None) -> PathInfo:
        paths = self.last = self.templates.expand()
        return PathInfo(
            directory_path=PurePosixPath(paths.write),
            filename=self.filename_provider(datakey_name),
            create_dir_depth=self.create_directory_depth,
            directory_uri="file://localhost" + quote(paths.read),
        )
