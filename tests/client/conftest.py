"""A real service (no Redis) over a temporary model store, for the client tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from client_support import make_store, service_settings
from harness import ServiceProcess


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("client-store"))


@pytest.fixture(scope="session")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory):
    process = ServiceProcess(tmp_path_factory.mktemp("client-logs"), service_settings(store))
    process.start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()
