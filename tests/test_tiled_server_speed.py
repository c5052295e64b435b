"""The Tiled server we run builds FastAPI's dependency graphs once, not at every request, and
still serves what its dependency overrides say."""

from __future__ import annotations

import httpx
from fastapi import Depends, FastAPI
from fastapi.dependencies import utils
from fastapi.testclient import TestClient

from id3c_eiger import tiled_server_speed
from id3c_eiger.tiled_server_speed import dependency_graphs_kept, reuse_dependency_graphs


def test_an_overridden_dependency_is_served_from_a_graph_built_once() -> None:
    def setting() -> str:
        return "default"

    def deeper(value: str = Depends(setting)) -> str:
        return value

    app = FastAPI()

    @app.get("/value")
    def value(given: str = Depends(deeper)) -> str:
        return given

    app.dependency_overrides[setting] = lambda: "configured"
    reuse_dependency_graphs()
    installed = utils.get_dependant
    assert installed.reuses_graphs
    reuse_dependency_graphs()
    assert utils.get_dependant is installed  # once per process: not wrapped twice
    client = TestClient(app)
    before = dependency_graphs_kept()
    assert client.get("/value").json() == "configured"
    built = dependency_graphs_kept()
    assert built > before  # the request's graphs went through the memo
    for _ in range(3):
        assert client.get("/value").json() == "configured"
    assert dependency_graphs_kept() == built  # and were not built again
    app.dependency_overrides[setting] = lambda: "changed"  # a new override is a new graph
    assert client.get("/value").json() == "changed"
    assert dependency_graphs_kept() > built


def test_the_embedded_servers_requests_reuse_their_graphs(catalog, monkeypatch) -> None:
    monkeypatch.setattr(tiled_server_speed, "_GRAPHS", {})
    runs_url = catalog.runs.uri
    key = {"Authorization": f"Apikey {catalog.runs.context.api_key}"}
    with httpx.Client(headers=key) as client:
        assert client.get(runs_url).status_code == 200
        built = dependency_graphs_kept()
        assert built > 0  # Tiled's dependency override sent its request through the memo
        for _ in range(3):
            assert client.get(runs_url).status_code == 200
    assert dependency_graphs_kept() == built
