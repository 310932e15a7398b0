"""Scratch databases for store tests: a SQLite file, or a throw-away Postgres database on the shared
service (created with a unique name, dropped WITH (FORCE) at the end)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2


@contextlib.contextmanager
def scratch_database(kind: str, tmp_path: Path, admin_url: str | None = None, prefix: str = "qm") -> Iterator[str]:
    """The URL of an empty database of `kind` (`sqlite` | `postgres`; postgres needs `admin_url`)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{prefix}.sqlite'}"
        return
    assert admin_url is not None
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
