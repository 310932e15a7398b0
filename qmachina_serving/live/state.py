"""`live_sessions`: one row per `qmachina live` run in the registry's database (`qmachina live status`).

The row says what the run is doing (`status` starting|active|stopping|stopped|failed), where it is
(`checkpoint_sequence` / `checkpoint_ts_event`: the last record fed to the engine and captured) and how it
went (records, bins, reconnects, gaps, the last error). The table has its own Alembic version table
(`migrations/`), so it shares the registry's database (SQLite in the lake or `QMACHINA_REGISTRY_URL`)
without touching the registry's migration chain.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from qmachina_assets.core.paths import lake_root
from qmachina_assets.core.registry.database import ensure_sqlite_dir, make_engine, normalize_url, upgrade_schema
from qmachina_assets.core.registry.registry import default_url

metadata = MetaData()
ALEMBIC_VERSION_TABLE = "qmachina_live_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x514D_4C49_5645  # pg advisory key of the schema upgrade ("QMLIVE")
STATUSES = ("starting", "active", "stopping", "stopped", "failed")

live_sessions = Table(
    "live_sessions",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("gateway", String(256), nullable=True),
    Column("session_id", String(64), nullable=True),
    Column("host", String(128), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("checkpoint_sequence", BigInteger, nullable=True),
    Column("checkpoint_ts_event", BigInteger, nullable=True),
    Column("records", BigInteger, nullable=False),
    Column("bins", BigInteger, nullable=False),
    Column("reconnects", Integer, nullable=False),
    Column("gaps", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("detail", Text, nullable=True),  # JSON: aliases, failover position, redis state, capture file
    Index("ix_live_sessions_started_at", "started_at"),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def database_url(url: str | None, lake: Path | None) -> str:
    """The registry's database: `url` > QMACHINA_REGISTRY_URL > SQLite in the lake (as `Registry`)."""
    return normalize_url(url or os.environ.get("QMACHINA_REGISTRY_URL") or default_url(lake or lake_root()))


class LiveSessions:
    """The `live_sessions` table (schema upgraded on open)."""

    def __init__(self, url: str | None = None, lake: Path | None = None):
        self.url = database_url(url, lake)
        ensure_sqlite_dir(self.url)
        self.engine = make_engine(self.url)
        upgrade_schema(self.engine, MIGRATIONS_DIR, _MIGRATION_LOCK)

    def close(self) -> None:
        self.engine.dispose()

    def start(self, run_id: str, *, dataset: str, symbol: str, detail: dict[str, Any] | None = None) -> None:
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(insert(live_sessions).values(
                run_id=run_id, status="starting", dataset=dataset, symbol=symbol, host=socket.gethostname(),
                pid=os.getpid(), started_at=now, updated_at=now, records=0, bins=0, reconnects=0, gaps=0,
                detail=json.dumps(detail or {})))

    def update(self, run_id: str, **fields: Any) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"live_sessions.status: {fields['status']!r} is not one of {STATUSES}")
        if "detail" in fields and not isinstance(fields["detail"], str):
            fields["detail"] = json.dumps(fields["detail"])
        with self.engine.begin() as conn:
            conn.execute(update(live_sessions).where(live_sessions.c.run_id == run_id)
                         .values(updated_at=_now(), **fields))

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(live_sessions).where(live_sessions.c.run_id == run_id)).mappings().first()
        return None if row is None else _row(row)

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(live_sessions).order_by(live_sessions.c.started_at.desc()).limit(limit))
            return [_row(r) for r in rows.mappings()]


def _row(r: Any) -> dict[str, Any]:
    out = dict(r)
    for k in ("started_at", "updated_at"):
        v = out[k]
        if v is not None and v.tzinfo is None:  # SQLite drops the zone
            v = v.replace(tzinfo=dt.UTC)
        out[k] = v.isoformat(timespec="seconds") if v is not None else None
    out["detail"] = json.loads(out["detail"]) if out.get("detail") else {}
    return out
