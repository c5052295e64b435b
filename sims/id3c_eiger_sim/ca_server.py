"""Channel Access served as an EPICS IOC's rsrv serves it: caproto's asyncio server with
``TCP_NODELAY`` on every client connection.

Without it, Nagle's algorithm and the client's delayed ACK hold a reply that follows a small
request for about 40 ms on loopback: a put-with-callback of a 1 ms Acquire took 44 ms, where a
real IOC (rsrv sets ``TCP_NODELAY``) answers in a few.

caproto also holds every monitor update up to ``CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC`` (10 ms)
for others to batch with, so each update a client waits on (``AcquireBusy`` Done) came 10 ms
late; rsrv's event task sends as soon as it runs. The simulator waits 0.5 ms unless that
variable says otherwise: under load, updates still batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

from caproto.asyncio.server import Context
from caproto.server import common

BATCH_WAIT = 0.0005  # s: how long a monitor update waits for others to batch with

if "CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC" not in os.environ:
    common.HIGH_LOAD_TIMEOUT = BATCH_WAIT


class NoDelayContext(Context):
    """caproto's asyncio server Context whose client connections send at once."""

    async def server_accept_loop(self, sock: socket.socket) -> None:
        # Linux copies TCP_NODELAY from the listening socket to each connection it accepts.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await super().server_accept_loop(sock)


def run(pvdb: dict[str, Any], *, interfaces: list[str],
        startup_hook: Callable[..., Any] | None = None) -> None:
    """Serve ``pvdb`` until interrupted, as ``caproto.asyncio.server.run`` does."""

    async def serve() -> None:
        context = NoDelayContext(pvdb, interfaces)  # in the loop: caproto's queues need one
        await context.run(startup_hook=startup_hook)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or the parent's SIGINT: a clean stop
        asyncio.run(serve())
