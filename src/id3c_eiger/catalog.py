"""Tiled for EIGER runs: a catalog on which ``cat[-1]`` works, TiledWriter, and the master files.

``open_catalog()`` gives an embedded ``SimpleTiledServer`` (SQLite catalog, one machine) whose
``readable_storage`` covers the detector's read path and which reads HDF5 through
``tiled_adapter.FramewiseHDF5Adapter``, or a remote Tiled server by URI and API key
(a deployment with a PostgreSQL catalog on another host is configuration only). Either way the
runs live in a container with the ``CatalogOfBlueskyRuns`` spec.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

import httpx
from bluesky import RunEngine
from tiled.client import from_uri
from tiled.client.array import ArrayClient
from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH, Container
from tiled.client.utils import ClientError
from tiled.structures.core import Spec

from .layout import DATA_DATASET, LinkProblem, unresolved_links
from .spool import SpoolingTiledWriter
from .tiled_adapter import HDF5_MIMETYPE, FramewiseHDF5Adapter
from .tiled_server_speed import reuse_dependency_graphs

RUNS_CONTAINER = "runs"  # where the embedded server keeps Bluesky runs
RUNS_SPEC = Spec("CatalogOfBlueskyRuns", version="3.0")


class CatalogError(RuntimeError):
    """The catalog cannot be reached or does not hold Bluesky runs."""


class TiledUnreachable(CatalogError):
    """Nothing answers at the Tiled URI."""


class TiledKeyRefused(CatalogError):
    """The Tiled server answers but refuses the API key."""


class TiledCatalogDown(CatalogError):
    """The Tiled server answers but cannot read its catalog (its database is down)."""


PROBE_TIMEOUT = 5.0  # s for each of the two requests that tell the server's state apart


def probe_server(uri: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> None:
    """Tell apart, in two requests without Tiled's client retries (about 45 s on a 500): nothing
    answering, a refused API key, and a server whose catalog database is down; raise the one
    found, named with its fix. Returns when the server reads its catalog with this key."""
    parsed = urlsplit(uri)  # http://host:8000, .../api/v1, or with ?api_key= as Tiled prints it
    api_key = api_key or parse_qs(parsed.query).get("api_key", [None])[0]
    prefix = parsed.path.split("/api/v1")[0].rstrip("/")  # a server behind a path prefix
    base = f"{parsed.scheme}://{parsed.netloc}{prefix}"
    headers = {"Authorization": f"Apikey {api_key}"} if api_key else {}
    try:
        httpx.get(f"{base}/api/v1/", timeout=timeout).raise_for_status()
    except httpx.TransportError as err:
        raise TiledUnreachable(
            f"nothing answers at {uri} ({type(err).__name__}: {err}). Fix: start the Tiled server "
            "(systemctl start tiled, or tiled serve config ...), or correct the host and port"
        ) from err
    except httpx.HTTPStatusError as err:
        raise TiledUnreachable(f"{uri} answers {err.response.status_code}, not as a Tiled "
                               "server. Fix: give the Tiled server's URI (http://host:8000)"
                               ) from err
    try:
        response = httpx.get(f"{base}/api/v1/metadata/", headers=headers, timeout=timeout)
    except httpx.TransportError as err:
        raise TiledUnreachable(f"{uri} stopped answering ({err}). Fix: look at the server's "
                               "log (journalctl -u tiled)") from err
    if response.status_code in (401, 403):
        raise TiledKeyRefused(
            f"the Tiled server at {uri} refuses the API key ({response.status_code}: "
            f"{_response_detail(response)}). Fix: give the server's key (--api-key, or "
            "$TILED_API_KEY), the value of TILED_SINGLE_USER_API_KEY where it runs")
    if response.status_code >= 500:
        raise TiledCatalogDown(
            f"the Tiled server at {uri} answers but cannot read its catalog "
            f"({response.status_code}: {_response_detail(response)}): its catalog database is "
            "down or unreachable. Fix: start the database (systemctl start postgresql) or "
            "correct the catalog uri in the server's configuration, then look at the server's "
            "log (journalctl -u tiled)")


def _response_detail(response: httpx.Response) -> str:
    """The reason a Tiled server gave in an error response (its JSON ``detail``), or the text."""
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


class UnresolvedLinkError(OSError):
    """A frame cannot be read because the master file's link to its data does not resolve."""

    def __init__(self, master: str, problems: Sequence[LinkProblem], server: str = "") -> None:
        self.master = master
        self.problems = list(problems)
        if server:  # the Tiled server's own account, which names its fix
            super().__init__(f"the Tiled server cannot read frames of master file {master}: "
                             f"{server}")
            return
        details = "; ".join(str(p) for p in problems)
        fix = "" if all("compression filter" in p.problem for p in problems) else (
            ". Fix: restore the data file(s), or make the link target visible at that path on "
            "the Tiled host (same mount as the IOC, ID3C_EIGER_PATH_MAP, or HDF5_EXT_PREFIX / "
            "HDF5_VDS_PREFIX)")  # a filter problem names its own fix
        super().__init__(f"cannot read frames of master file {master}: {details}{fix}")


def master_files(node: Any) -> list[Path]:
    """The master file(s) behind an array in Tiled (e.g. ``run.primary["eiger2_image"]``).

    These are the files Tiled opens, by the read path the device recorded.
    """
    sources = node.data_sources() or []
    paths = []
    for source in sources:
        for asset in source.assets:
            parsed = urlparse(asset.data_uri)
            if parsed.scheme == "file":
                paths.append(Path(unquote(parsed.path)))
    return paths


def find_run(catalog: Catalog, run: str | int = -1) -> Any:
    """The run ``run`` of ``catalog``: a uid (or its first 5+ characters), a scan id, or a
    negative index (-1 is the latest). Raises ``CatalogError`` naming what is there instead."""
    try:
        return catalog.runs[run]
    except (KeyError, IndexError, ValueError):  # no such uid or scan id; a uid prefix too short
        count = len(catalog.runs)
        latest = f"; the latest is {catalog.runs.keys().last()}" if count else ""
        raise CatalogError(
            f"no run {run!r} in Tiled at {catalog.address} ({count} runs{latest}). Fix: give an "
            "existing run's uid or scan id (or -1 for the latest), or run a plan with the "
            "RunEngine subscribed to this catalog"
        ) from None


def run_images(run: Any, stream: str, data_key: str) -> Any:
    """The array ``run[stream][data_key]``, or ``CatalogError`` naming what the run holds."""
    uid = run.metadata.get("start", {}).get("uid", "?")
    if stream not in run:
        raise CatalogError(f"run {uid} has no stream {stream!r} (it has: "
                           f"{', '.join(run) or 'none'}); give the run of a plan that read the "
                           "detector")
    if data_key not in run[stream]:
        raise CatalogError(f"run {uid} stream {stream!r} has no {data_key!r} (it has: "
                           f"{', '.join(run[stream])}); give --detector the device's name")
    return run[stream][data_key]


def imaging_detectors(run: Any, stream: str) -> list[str]:
    """The detectors of the run's start document whose ``<name>_image`` the stream holds, in
    the start document's order."""
    detectors = run.metadata.get("start", {}).get("detectors", [])
    keys = set(run[stream]) if stream in run else set()
    return [name for name in detectors if f"{name}_image" in keys]


def recorded_settings(stream: Any, detector: str) -> dict[str, float]:
    """The exposure (``count_time``, s) and ``photon_energy`` (eV) a stream of a run in Tiled
    recorded for ``detector`` in its configuration, under the names the master file uses."""
    configuration = stream.metadata.get("configuration", {}).get(detector, {}).get("data", {})
    found = {}
    for key, value in configuration.items():
        for suffix, name in (("acquire_time", "count_time"), ("photon_energy", "photon_energy")):
            if key.endswith(suffix):
                found[name] = float(value)
    return found


class EigerArrayClient(ArrayClient):
    """Tiled's array client, which names the broken link when the server cannot read a frame."""

    def read(self, slice: Any = None) -> Any:
        try:
            return super().read(slice)
        except (IndexError, TypeError, ValueError):
            raise  # a bad slice: the user's, not the files'
        except ClientError as err:
            if err.response.status_code == 404:  # the server named the link it cannot follow
                masters = ", ".join(map(str, master_files(self)))
                raise UnresolvedLinkError(masters, [], server=_response_detail(err.response)
                                          ) from err
            if err.response.status_code in (403, 422):
                raise  # the server's refusal, named (outside its storage, a filter it lacks)
            self._raise_if_unresolved(err)
            raise
        except Exception as err:
            self._raise_if_unresolved(err)
            raise

    def _raise_if_unresolved(self, err: Exception) -> None:
        masters: list[Path] = []
        for _attempt in range(3):  # the server may have dropped the connection of the failed read
            try:
                masters = master_files(self)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        for master in masters:
            try:
                problems = unresolved_links(master, DATA_DATASET)
            except OSError as open_err:
                problem = LinkProblem("(master file)", str(master), f"cannot open here: {open_err}")
                raise UnresolvedLinkError(str(master), [problem]) from err
            if problems:
                raise UnresolvedLinkError(str(master), problems) from err


def _structure_clients() -> dict[str, Any]:
    """Tiled's numpy clients with the Bluesky ones (entry points), arrays by EigerArrayClient."""
    Container.discover_clients_from_entrypoints()
    clients = dict(DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"])
    clients["array"] = EigerArrayClient
    return clients


def runs_container(root: Any, key: str = RUNS_CONTAINER) -> Any:
    """The child ``key`` of ``root`` holding Bluesky runs, created with the right spec if new."""
    node = root[key] if key in root else root.create_container(key, specs=[RUNS_SPEC])
    if not any(spec.name == RUNS_SPEC.name for spec in node.specs):
        raise CatalogError(
            f"Tiled node {key!r} exists but lacks the {RUNS_SPEC.name} spec, so cat[-1] cannot "
            f"work on it; give another runs container name, or re-create {key!r}"
        )
    return node


@dataclass
class Catalog:
    """A catalog of Bluesky runs and, when embedded, the server behind it."""

    runs: Any  # the CatalogOfBlueskyRuns client: cat[-1] is the latest run
    uri: str
    server: Any = None  # SimpleTiledServer when embedded
    readable_storage: list[Path] | None = None  # where the server may read; None: not known here
    _tokens: list[tuple[RunEngine, int]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The server's URI without its query (which may hold the API key), for messages."""
        return self.uri.split("?", 1)[0]

    def subscribe(self, RE: RunEngine, spool_directory: str | Path | None = None
                  ) -> SpoolingTiledWriter:
        """Send every document of ``RE`` to this catalog through bluesky-tiled-plugins'
        TiledWriter, behind a durable spool (``spool.py``; default
        ``~/.local/state/id3c-eiger/spool``): a run Tiled cannot take is kept, not lost."""
        writer = SpoolingTiledWriter(self.runs, Path(spool_directory) if spool_directory else None,
                                     address=self.address)
        self._tokens.append((RE, RE.subscribe(writer)))
        return writer

    def unsubscribe(self, RE: RunEngine) -> None:
        """Stop sending ``RE``'s documents here."""
        for engine, token in [t for t in self._tokens if t[0] is RE]:
            engine.unsubscribe(token)
            self._tokens.remove((engine, token))

    def close(self) -> None:
        """Unsubscribe every RunEngine and stop an embedded server."""
        for engine, token in self._tokens:
            engine.unsubscribe(token)
        self._tokens.clear()
        if self.server is not None:
            self.server.close()
            self.server = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def response_encoding(uri: str) -> dict[str, str]:
    """The ``Accept-Encoding`` for a server at ``uri``: none (``identity``) when it is on this
    host, where the bytes cross no wire and compressing a frame costs more than sending it
    (frame 0 from an embedded server: 2-5 ms of 45-58 sooner, bench_tiled_frame_read.py); else
    Tiled's own choice (blosc2: the simulator's frames 8x smaller; a 1 MB frame takes 8 ms on 1 GbE)."""
    host = urlsplit(uri).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        local = False
    return {"accept-encoding": "identity"} if local else {}


def open_catalog(
    uri: str | None = None,
    *,
    api_key: str | None = None,
    readable_storage: Sequence[str | Path] = (),
    directory: str | Path | None = None,
    runs: str = RUNS_CONTAINER,
) -> Catalog:
    """A catalog of runs: a remote Tiled server at ``uri``, or an embedded one when ``uri`` is None.

    Embedded: ``readable_storage`` must cover the detector's read path (Tiled serves only files
    inside it); ``directory`` keeps the catalog (a temporary one by default).
    Remote: ``uri`` is the server (``http://host:8000``) and ``runs`` the container holding runs.
    """
    server = None
    if uri is None:
        from tiled.server import SimpleTiledServer

        storage = [str(Path(p)) for p in readable_storage]
        reuse_dependency_graphs()
        server = SimpleTiledServer(directory=directory, readable_storage=storage or None)
        # What a deployed server's config does with adapters_by_mimetype: one frame of a
        # multi-file master is read as one frame.
        # ... and reads nothing outside readable_storage, through links or symlinks.
        server.catalog.context.adapters_by_mimetype[HDF5_MIMETYPE] = (
            FramewiseHDF5Adapter.configured(storage))
        uri, api_key = server.uri, None
    try:
        if server is None:
            probe_server(uri, api_key or os.environ.get("TILED_API_KEY"))
        try:
            root = from_uri(uri, api_key=api_key, structure_clients=_structure_clients(),
                            headers=response_encoding(uri))
        except Exception as err:
            raise CatalogError(f"cannot connect to Tiled at {uri}: {err}. Fix: check the URI, "
                               "that the server runs, and the API key") from err
        known = [Path(p) for p in readable_storage] if server is not None else None
        return Catalog(runs=runs_container(root, runs), uri=uri, server=server,
                       readable_storage=known)
    except Exception:
        if server is not None:
            server.close()
        raise
