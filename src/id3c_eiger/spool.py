"""A durable local spool between the RunEngine and Tiled: nothing is lost when Tiled or its
database is away.

``SpoolingTiledWriter`` is what ``Catalog.subscribe`` attaches. Every document is appended to
``<spool>/<run uid>.jsonl`` on the RunEngine's thread (flushed; synced at the run's end): the only
work a plan waits for. bluesky-tiled-plugins' ``TiledWriter`` gets the documents in order on a
worker thread, so a slow or absent Tiled (its client retries for up to 45 s) never stalls a scan.
A run Tiled took whole loses its spool file; a run it could not take keeps it, and the plan ends
with a ``RunSpooledWarning`` naming the file and the fix. The next run's start replays pending
runs first, on the worker (one writer at a time for Tiled); ``replay()`` (``id3c-eiger replay``)
does it on demand: the partial run is deleted from Tiled and written again, start to stop.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bluesky_tiled_plugins import TiledWriter

logger = logging.getLogger(__name__)

STOP_WAIT = 10.0  # s: the end of a run waits this long for Tiled, then says the run is spooled
SUFFIX = ".jsonl"


def default_spool_directory() -> Path:
    """``$XDG_STATE_HOME/id3c-eiger/spool`` (``~/.local/state/...``): survives reboots."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "id3c-eiger" / "spool"


class RunSpooledWarning(UserWarning):
    """A run is not (yet) complete in Tiled; its documents are safe in the spool."""


def _jsonable(value: Any) -> Any:
    """numpy values in documents as JSON has them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class _Run:
    """One run on its way to Tiled."""

    uid: str
    path: Path
    file: IO[str]
    failed: BaseException | None = None
    written: threading.Event = field(default_factory=threading.Event)


class SpoolingTiledWriter:
    """A RunEngine callback: every document spooled to disk, then written to Tiled in order."""

    def __init__(self, runs: Any, spool_directory: Path | None = None, *, address: str = "",
                 stop_wait: float = STOP_WAIT) -> None:
        self.runs = runs
        self.spool_directory = Path(spool_directory or default_spool_directory())
        self.spool_directory.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.stop_wait = stop_wait
        self._writer = TiledWriter(runs)
        # (run, document name, document), or (None, "replay", {}): spooled runs first
        self._queue: queue.Queue[tuple[_Run | None, str, dict[str, Any]]] = queue.Queue()
        self._runs: dict[str, _Run] = {}  # open runs by start uid
        self._in_flight: set[str] = set()  # runs the worker has not finished with
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> start uid
        threading.Thread(target=self._work, daemon=True, name="tiled-writer").start()

    # --- the RunEngine's side: spool, hand over -----------------------------------------

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._start(doc)
        run = self._runs.get(self._run_uid(name, doc))
        if run is None:
            logger.warning("%s document of an unknown run: not spooled, not written", name)
            return
        run.file.write(json.dumps({"name": name, "doc": doc}, default=_jsonable) + "\n")
        run.file.flush()
        self._queue.put((run, name, doc))
        if name == "stop":
            os.fsync(run.file.fileno())
            run.file.close()
            del self._runs[run.uid]
            self._owner = {key: uid for key, uid in self._owner.items() if uid != run.uid}
            self._finish(run)

    def _start(self, doc: dict[str, Any]) -> None:
        uid = doc["uid"]
        path = self.spool_directory / f"{uid}{SUFFIX}"
        self._runs[uid] = _Run(uid, path, open(path, "a"))  # noqa: SIM115  (closed at stop)
        self._in_flight.add(uid)
        if self.pending():  # on the worker, before this run: one writer at a time for Tiled
            self._queue.put((None, "replay", {}))

    def _run_uid(self, name: str, doc: dict[str, Any]) -> str:
        """The start uid a document belongs to (several runs may be open at once)."""
        if name == "start":
            return doc["uid"]
        if name in ("stop", "descriptor", "resource", "stream_resource"):
            uid = doc["run_start"]
            if name != "stop":
                self._owner[doc["uid"]] = uid
            return uid
        if name in ("event", "event_page", "stream_datum"):
            return self._owner.get(doc["descriptor"], "")
        if name in ("datum", "datum_page"):
            return self._owner.get(doc["resource"], "")
        return ""

    def _finish(self, run: _Run) -> None:
        if run.written.wait(self.stop_wait) and run.failed is None:
            return
        reason = (f"Tiled refused it: {run.failed}" if run.failed is not None
                  else f"Tiled did not take it within {self.stop_wait:g} s")
        warnings.warn(RunSpooledWarning(
            f"run {run.uid} is not complete in Tiled{' at ' + self.address if self.address else ''}"
            f" ({reason}). Nothing is lost: its documents are kept in {run.path}. When Tiled "
            f"answers again, `id3c-eiger replay --tiled {self.address or 'URI'} --spool "
            f"{self.spool_directory}` writes it whole "
            "(the next run also retries it)."
        ), stacklevel=3)

    # --- the worker: Tiled, in order -----------------------------------------------------

    def _work(self) -> None:
        while True:
            run, name, doc = self._queue.get()
            if run is None:
                self._replay_quietly()
                continue
            if run.failed is None:
                try:
                    self._writer(name, doc)
                except Exception as err:  # kept, reported at the run's end
                    logger.warning("Tiled did not take the %s document of run %s: %s",
                                   name, run.uid, err)
                    run.failed = err
            if name == "stop":
                if run.failed is None:
                    run.path.unlink(missing_ok=True)
                self._in_flight.discard(run.uid)
                run.written.set()

    # --- replay ------------------------------------------------------------------------------

    def pending(self) -> list[Path]:
        """Spool files of runs Tiled lacks and nothing here is still writing."""
        return [path for path in sorted(self.spool_directory.glob(f"*{SUFFIX}"))
                if path.stem not in self._in_flight]

    def _replay_quietly(self) -> None:
        try:
            for uid in replay(self.runs, self.spool_directory, skip=set(self._in_flight)):
                logger.info("spooled run %s is now complete in Tiled", uid)
        except Exception as err:  # Tiled still away: the files stay
            logger.info("spooled runs not replayed yet: %s", err)


def read_spool(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The documents of a spool file; a last line cut short by a crash is left out."""
    documents = []
    with open(path) as f:
        for line in f:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break
            documents.append((item["name"], item["doc"]))
    return documents


def replay(runs: Any, spool_directory: Path | None = None, *, skip: set[str] = frozenset()) -> list[str]:
    """Write every spooled run to Tiled whole, removing its spool file; returns their uids.

    A run Tiled holds in part is deleted there first (its records only: files are never
    touched). A spool without a stop document (the session ended mid-run) gets one, with exit
    status "abort" and the reason. Raises the first error; that run and the rest stay spooled.
    """
    directory = Path(spool_directory or default_spool_directory())
    written = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.stem in skip:
            continue
        documents = read_spool(path)
        if not documents or documents[0][0] != "start":
            logger.warning("%s holds no run start document; left alone", path)
            continue
        start = documents[0][1]
        if documents[-1][0] != "stop":
            documents.append(("stop", {
                "uid": f"{start['uid']}-replayed-stop", "run_start": start["uid"],
                "time": time.time(), "exit_status": "abort",
                "reason": "the session that ran it ended before the run's stop document; "
                          "written by id3c-eiger replay from its spool",
                "num_events": {},
            }))
        if start["uid"] in runs:
            runs[start["uid"]].delete(recursive=True, external_only=True)
        writer = TiledWriter(runs)
        for name, doc in documents:
            writer(name, doc)
        path.unlink()
        written.append(start["uid"])
    return written
