"""Database plumbing shared by the stores that live in the registry's database family (the registry
itself and the control plane above it): URL normalisation, engines with an append-only guard, SQLite
transaction modes, and Alembic upgrades run from code with their own version table.

Both stores work on SQLite (default, a file in the lake) and Postgres (one URL variable) with the same
code; each has its own Alembic environment and version table, so they can share one database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, func, select
from sqlalchemy.engine import make_url

#: Execution option naming the SQLite BEGIN mode of a connection's next transaction (DEFERRED | IMMEDIATE).
SQLITE_BEGIN = "qmachina_sqlite_begin"


def normalize_url(url: str) -> str:
    """`postgres://`/`postgresql://` -> the psycopg2 driver (SQLAlchemy 2.1 would pick psycopg 3)."""
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+psycopg2")
    return u.render_as_string(hide_password=False)


def ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite file URL (no-op for Postgres and in-memory databases)."""
    if url.startswith("sqlite"):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)


def append_only_guard(tables: Iterable[str], error: Callable[[str], Exception]) -> Callable[..., None]:
    """A `before_cursor_execute` listener refusing UPDATE/DELETE/TRUNCATE/DROP on `tables` before they
    reach the database (whose triggers refuse them too)."""
    pattern = re.compile(
        r"^\s*(?:UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|DROP\s+TABLE(?:\s+IF\s+EXISTS)?)\s+"
        rf"[\"`]?(?:\w+[\"`]?\.[\"`]?)?({'|'.join(tables)})\b", re.I)

    def guard(conn, cursor, statement, parameters, context, executemany) -> None:
        m = pattern.match(statement)
        if m:
            raise error(f"refused: {statement.split()[0].upper()} on {m.group(1)} — rows of this table are "
                        "append-only")

    return guard


def make_engine(url: str, *guards: Callable[..., None]) -> Engine:
    """An engine with the given guards; SQLite: FK checks, WAL, busy timeout, explicit BEGIN (its mode from
    the `SQLITE_BEGIN` execution option)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # pysqlite's own BEGIN handling is off: we emit BEGIN below
            cur = dbapi_conn.cursor()
            for pragma in ("foreign_keys=ON", "busy_timeout=60000", "journal_mode=WAL", "synchronous=FULL"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(SQLITE_BEGIN, 'DEFERRED')}")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    for guard in guards:
        event.listen(engine, "before_cursor_execute", guard)
    return engine


def write_connection(conn: Connection) -> Connection:
    """Mark `conn` so its next transaction takes SQLite's write lock at BEGIN (writers serialize)."""
    if conn.dialect.name == "sqlite":
        conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    return conn


def alembic_config(migrations_dir: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    return cfg


def upgrade_schema(engine: Engine, migrations_dir: Path, lock_key: int, revision: str = "head") -> None:
    """Migrate a schema (serialized: advisory lock `lock_key` on Postgres, BEGIN IMMEDIATE on SQLite)."""
    with engine.connect() as conn:
        write_connection(conn)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(lock_key)))
            cfg = alembic_config(migrations_dir)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)


def schema_revision(engine: Engine, version_table: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()


def run_alembic_env(context: Any, metadata: MetaData, version_table: str) -> None:
    """The body of an `env.py`: a connection passed in `config.attributes["connection"]` (from code), a bare
    `sqlalchemy.url` main option, or offline SQL generation."""
    config = context.config

    def configure(**kwargs: Any) -> None:
        context.configure(target_metadata=metadata, version_table=version_table, render_as_batch=True,
                          compare_type=True, **kwargs)

    def run(connection: Connection) -> None:
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    elif (conn := config.attributes.get("connection")) is not None:
        run(conn)
    else:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        try:
            with engine.begin() as connection:
                run(connection)
        finally:
            engine.dispose()


def install_append_only_triggers(op: Any, tables: Iterable[str], function: str, label: str) -> None:
    """In a migration: database triggers refusing UPDATE/DELETE (and TRUNCATE on Postgres) on `tables`."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{label}: % on % refused: rows are immutable (append-only)', TG_OP, TG_TABLE_NAME;
            END
            $$""")
        for table in tables:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {function}()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    elif dialect == "sqlite":
        for table in tables:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                           f"SELECT RAISE(ABORT, '{label}: {verb} on {table} refused: rows are immutable "
                           "(append-only)'); END")
    else:
        raise NotImplementedError(f"{label}: no append-only guard for the {dialect} dialect "
                                  "(supported: sqlite, postgresql)")
