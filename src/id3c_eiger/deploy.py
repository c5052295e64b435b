"""The beamline's Tiled server as configuration: ``tiled serve config`` YAML generated from the
devices file, and the systemd unit that runs it.

The configuration holds a PostgreSQL catalog created on first start (``init_if_not_exists``),
writable storage as a directory plus SQL (what TiledWriter needs to create a run's arrays),
readable storage = the detectors' read roots (where their files show on the Tiled host), the
framewise adapter with the same storage and, where an IOC sees the share at another path, the
map from its roots to the read roots (the tree is ``tiled_adapter.framewise_catalog``, which
hands both to the adapter), and a single-user API key taken from the server's environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .config import check_devices_file, find_devices_file
from .path_map import PathMap
from .paths import PathTemplates
from .tiled_adapter import framewise_catalog

API_KEY_VARIABLE = "TILED_SINGLE_USER_API_KEY"
TREE = f"{framewise_catalog.__module__}:{framewise_catalog.__qualname__}"  # importable
DEFAULT_PORT = 8000


class DeployConfigError(ValueError):
    """A value the server configuration cannot be made from; the message names the fix."""


def read_root(template: str) -> str:
    """The fixed directory a read path template starts with: the components before the first
    one holding a strftime field (``/gdata/3idc/eiger/%Y/%m/%d/`` -> ``/gdata/3idc/eiger``)."""
    parts = []
    for part in Path(template).parts:
        if "%" in part:
            break
        parts.append(part)
    root = str(Path(*parts)) if parts else ""
    if not root.startswith("/") or root == "/":
        raise DeployConfigError(
            f"read path template {template!r} has no fixed absolute directory before its first "
            "date field; Tiled's readable storage must be one (e.g. /gdata/3idc/eiger/%Y/%m/%d/)")
    return root


def readable_roots(devices_file: str | os.PathLike[str]) -> list[str]:
    """The read roots of every device with a write path template in a devices file, once each."""
    roots: list[str] = []
    for entries in check_devices_file(devices_file).values():
        for kwargs in entries:
            template = kwargs.get("read_path_template") or kwargs.get("write_path_template")
            if template and (root := read_root(template)) not in roots:
                roots.append(root)
    if not roots:
        raise DeployConfigError(f"{devices_file} names no device with a write_path_template, so "
                                "there is no directory for Tiled to read; give the detector's "
                                "devices file")
    return roots


def path_map_of(devices_file: str | os.PathLike[str]) -> PathMap:
    """Where each device's write root shows at its read root (``PathTemplates.roots``): the map
    the Tiled server and the doctor apply to absolute link targets as the IOC wrote them."""
    pairs = []
    for entries in check_devices_file(devices_file).values():
        for kwargs in entries:
            if kwargs.get("write_path_template") and kwargs.get("read_path_template"):
                roots = PathTemplates(kwargs["write_path_template"],
                                      kwargs["read_path_template"]).roots()
                pairs += [roots] if roots else []
    return PathMap.of(pairs)


def _check_database(uri: str, what: str = "catalog database") -> str:
    if not re.match(r"postgresql(\+asyncpg)?://", uri):
        raise DeployConfigError(
            f"{what} {uri!r} is not a PostgreSQL URI; give "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (SQLite is for one-host tests only)")
    return uri


def tiled_config(devices_file: str | os.PathLike[str] | None, database: str,
                 writable_directory: str | os.PathLike[str], *, tables: str | None = None,
                 host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The ``tiled serve config`` configuration for the detectors of ``devices_file``: catalog in
    ``database`` (PostgreSQL), new arrays in ``writable_directory``, tables in ``tables`` (the
    catalog's database by default); ``devices_file`` None: ``config.find_devices_file``'s."""
    devices_file = find_devices_file(devices_file)
    database = _check_database(database)
    tables = _check_database(tables or database, "tables database")
    if not Path(writable_directory).is_absolute():
        raise DeployConfigError(f"writable directory {writable_directory!s} must be absolute, as "
                                "the server resolves it (e.g. /var/lib/tiled/data)")
    args = {
        "uri": database,
        "init_if_not_exists": True,
        "writable_storage": [str(writable_directory), tables],
        "readable_storage": readable_roots(devices_file),
    }
    if path_map := path_map_of(devices_file):
        args["path_map"] = {str(write): str(read) for write, read in path_map.pairs}
    return {
        "authentication": {"single_user_api_key": f"${{{API_KEY_VARIABLE}}}",
                           "allow_anonymous_access": False},
        "trees": [{"path": "/", "tree": TREE, "args": args}],
        "uvicorn": {"host": host, "port": port},
    }


def config_text(config: dict[str, Any]) -> str:
    """The configuration as the YAML file ``tiled serve config`` reads."""
    return "# Generated by id3c-eiger tiled-config; the API key comes from the environment.\n" + \
        yaml.safe_dump(config, sort_keys=False)


def systemd_unit(config_path: str | os.PathLike[str], tiled: str = "/opt/tiled/bin/tiled",
                 user: str = "tiled", environment_file: str = "/etc/tiled/api-key.env") -> str:
    """A systemd service running ``tiled serve config`` as ``user``; the API key is read from
    ``environment_file`` (one line ``TILED_SINGLE_USER_API_KEY=...``, mode 600)."""
    return f"""[Unit]
Description=Tiled server of 3-ID-C (EIGER2 runs)
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
User={user}
EnvironmentFile={environment_file}
ExecStart={tiled} serve config {config_path}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
