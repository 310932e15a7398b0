"""Shared fixtures: an isolated lake and Dagster home per test, real sample files, real services."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from qmachina_assets.core import instrument as instrument_mod
from qmachina_assets.core.paths import PROJECT_ROOT, shared_data_root

REQUIRE_SERVICES = os.environ.get("QMACHINA_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("QMACHINA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("QMACHINA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

ESH4_1225 = "nautilus_trader/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
ESH4_1224 = "nautilus_trader/esh4-glbx-mdp3-20231224.mbo.dbn.zst"
ESM4_0508 = "nautilus_trader/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"
ESH1_V3 = "dbn/test_data.mbo.v3.dbn"


def sample(rel: str) -> Path:
    path = shared_data_root() / rel
    if not path.is_file():
        pytest.fail(f"real sample file missing: {path} (expected ../shared/data/databento beside the checkout)")
    return path


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is absent, unless QMACHINA_REQUIRE_SERVICES=1 (CI): then fail."""
    if _port_open(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg} and QMACHINA_REQUIRE_SERVICES=1")
    pytest.skip(f"{msg} (set up the service, or CI fails with QMACHINA_REQUIRE_SERVICES=1)")


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_ADMIN_URL


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    monkeypatch.setenv("QMACHINA_LAKE_DIR", str(root))
    return root


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster_home" / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("QMACHINA_DAGSTER_PG_URL", raising=False)
    return home


@pytest.fixture
def instrument():
    return instrument_mod.load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")


@pytest.fixture(autouse=True)
def _fresh_instrument_lock():
    instrument_mod.locked_instrument.cache_clear()
    yield
    instrument_mod.locked_instrument.cache_clear()
