"""This process's Channel Access client: libca's exceptions routed to logging.

libca prints a "CA.Client.Exception ... Virtual circuit disconnect" block on stderr whenever an
IOC closes a circuit, including when a program stops its own simulator at the end; a user reads
it as an error. ``route_exceptions_to_logging`` installs libca's exception handler
(``ca_add_exception_event``) for pyepics' context (ophyd's): disconnects are logged at INFO,
any other exception as a warning with libca's own context text.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

ECA_DISCONN = 192  # libca's status of "Virtual circuit disconnect"


class _ExceptionArgs(ctypes.Structure):
    """``struct exception_handler_args`` of cadef.h, passed by value."""

    _fields_ = [("usr", ctypes.c_void_p), ("chid", ctypes.c_void_p), ("type", ctypes.c_long),
                ("count", ctypes.c_long), ("addr", ctypes.c_void_p), ("stat", ctypes.c_long),
                ("op", ctypes.c_long), ("ctx", ctypes.c_char_p), ("pFile", ctypes.c_char_p),
                ("lineNo", ctypes.c_uint)]


def _log_exception(args: _ExceptionArgs) -> None:
    context = (args.ctx or b"").decode(errors="replace")
    if args.stat == ECA_DISCONN:
        logger.info("Channel Access circuit to %s closed", context)
    else:
        logger.warning("Channel Access exception %d: %s", args.stat, context)


_HANDLER = ctypes.CFUNCTYPE(None, _ExceptionArgs)(_log_exception)  # kept alive for libca


def route_exceptions_to_logging() -> None:
    """Replace libca's printed exception blocks by log records, for pyepics' CA context."""
    import epics.ca

    libca = epics.ca.initialize_libca() if epics.ca.libca is None else epics.ca.libca
    epics.ca.use_initial_context()
    libca.ca_add_exception_event(_HANDLER, None)
