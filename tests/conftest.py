"""Shared fixtures: a static image host, a migrated database per test, and a live
`fillframe serve` per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fillframe.migrations import upgrade
from tests.utils.backends import BACKENDS, create_pg_database, drop_pg_database
from tests.utils.servers import ImageServer, LiveServer, create_key, drop_backend, fillframe_env


@pytest.fixture(scope="session")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    server = ImageServer(tmp_path_factory.mktemp("images"))
    yield server
    server.close()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every module that runs a server runs once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def database_url(tmp_path: Path, backend: str) -> Iterator[str]:
    """A migrated, empty database for one test: a SQLite file, or a fresh PostgreSQL database."""
    url = create_pg_database() if backend == "postgresql" else f"sqlite:///{tmp_path}/fillframe.db"
    upgrade(url)
    yield url
    if backend == "postgresql":
        drop_pg_database(url)


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`fillframe serve` with private URLs allowed (tests use loopback) on the classic engine.

    A test module may set `LIVE_SETTINGS = {"engine": ..., ...}` to change its server's settings.
    """
    settings = getattr(request.module, "LIVE_SETTINGS", {})
    env = fillframe_env(tmp_path_factory.mktemp("live"), backend, **settings)
    server = LiveServer(env)
    yield server
    server.stop()
    drop_backend(env)


@pytest.fixture(scope="module")
def api_key(live: LiveServer) -> str:
    return create_key(live.env, "module-key")


@pytest.fixture(scope="module")
def client(live: LiveServer, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"X-API-Key": api_key}, timeout=30) as c:
        yield c


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
