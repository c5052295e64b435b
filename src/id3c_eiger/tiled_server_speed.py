"""Per-request work the Tiled server we run need not do again at every request.

Tiled's app overrides one dependency (``get_settings``). With any override in place, FastAPI
(0.165, still open upstream as fastapi/fastapi#14441) rebuilds the dependency graph of every
route's every dependency at every request: ``inspect.signature`` and pydantic field analysis
for each, a third of the server's CPU time per request (measured: a depth-3 metadata GET and
TiledWriter's 10-12 requests per run each cost 3-6 ms more). The rebuild is a pure function of
its arguments, so ``reuse_dependency_graphs`` keeps each graph built once and hands it back:
the same graph FastAPI would build, whatever the overrides are (an override is part of the key).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

_GRAPHS: dict[Hashable, Any] = {}  # get_dependant's keyword arguments -> the Dependant it built


def reuse_dependency_graphs() -> None:
    """Make FastAPI's request-time ``get_dependant`` return each graph it built before (once per
    process; a no-op when already done). Arguments it cannot hash are built as before."""
    from fastapi.dependencies import utils

    if getattr(utils.get_dependant, "reuses_graphs", False):
        return
    build: Callable[..., Any] = utils.get_dependant

    def get_dependant(*args: Any, **kwargs: Any) -> Any:
        if args:  # FastAPI passes keywords only; anything else is built as asked
            return build(*args, **kwargs)
        key = tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                           for name, value in kwargs.items()))
        try:
            return _GRAPHS[key]
        except KeyError:
            graph = _GRAPHS[key] = build(**kwargs)
            return graph
        except TypeError:  # an unhashable dependency (a callable object with __eq__)
            return build(**kwargs)

    get_dependant.reuses_graphs = True  # type: ignore[attr-defined]
    get_dependant.__doc__ = build.__doc__
    utils.get_dependant = get_dependant


def dependency_graphs_kept() -> int:
    """How many dependency graphs ``reuse_dependency_graphs`` keeps (for tests and benchmarks)."""
    return len(_GRAPHS)
