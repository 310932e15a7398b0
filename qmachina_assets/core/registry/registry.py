"""The serving registry: immutable published versions, aliases, and the audit of every alias change.

Storage is SQLAlchemy 2.x Core on SQLite (default: `{lake}/registry/serving_registry.sqlite`) or Postgres
(`QMACHINA_REGISTRY_URL` or `Registry(url=...)`; `postgresql://` URLs use psycopg2, see
notes/dependencies.md), the same code for both; the schema is migrated to Alembic head when a Registry
opens. Nothing here imports Dagster: the serving process uses it to resolve `?serving=<alias|version>`.

Invariants and how they hold:
- **Immutable versions**: the id is content-derived (`sv_` + 16 hex of sha256 over the canonical JSON of
  the serving spec, runtime snapshot and lineage without timestamps), so one content has one id and
  publishing it again inserts nothing. There is no UPDATE/DELETE code path on `serving_versions` or
  `serving_alias_events`; the engine refuses such statements (`ImmutableVersionError`, before they reach
  the database), and migration 0001 installs triggers refusing them in the database itself. Every read
  re-derives the id from the stored bytes (`RegistryIntegrityError` on a mismatch).
- **Bypass-proof preflight**: `promote` (and `register`, `promote_run`, which call it) runs `preflight`
  inside its write transaction before any write.
- **Atomic publish**: version insert + alias repoint + audit row are one transaction. Writers serialize
  per alias: Postgres takes a transaction-scoped advisory lock on the alias (and `FOR UPDATE` on its
  row); SQLite starts the transaction with `BEGIN IMMEDIATE`. A failure or crash anywhere before the
  commit leaves the previous state (old alias, no new version row); after it, the new state.
- **Rollback** pops the alias's audit stack: promote/register/activate push the new version, rollback
  returns to the version that was active before the current one (repeated rollbacks walk further back).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.engine import make_url

from qmachina_assets.core.instrument import InstrumentConfig, locked_instrument
from qmachina_assets.core.paths import lake_root
from qmachina_assets.core.registry.database import (
    append_only_guard,
    ensure_sqlite_dir,
    normalize_url,
    schema_revision,
    upgrade_schema,
    write_connection,
)
from qmachina_assets.core.registry.database import make_engine as make_engine_with
from qmachina_assets.core.registry.errors import (
    ImmutableVersionError,
    RegistryError,
    RegistryIntegrityError,
    UnknownVersionError,
)
from qmachina_assets.core.registry.lineage import Lineage, lineage_for_register, lineage_from_results
from qmachina_assets.core.registry.models import (
    ALEMBIC_VERSION_TABLE,
    APPEND_ONLY_TABLES,
    serving_alias_events,
    serving_aliases,
    serving_versions,
)
from qmachina_assets.core.registry.preflight import PreflightError, PreflightIssue, preflight
from qmachina_assets.core.registry.snapshot import (
    SnapshotDiff,
    arrow_schema,
    diff_snapshots,
    lock_problems,
    runtime_config_message,
)
from qmachina_assets.core.research.specs import (
    NAME_PATTERN,
    ConfigError,
    PipelineSpec,
    PromotionGate,
    ServingSpec,
    resolve_experiment,
    resolve_serving,
)

ENV_URL = "QMACHINA_REGISTRY_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_PREFIX = "sv_"
_VERSION_RE = re.compile(r"^sv_[0-9a-f]{16}$")
_MIGRATION_LOCK = 0x514D_5245_4749  # pg advisory key of the schema upgrade ("QMREGI")

Action = Literal["promote", "register", "activate", "rollback"]


# ---- records ---------------------------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class AliasEvent(_Record):
    id: int
    alias: str
    action: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    at: dt.datetime


class AliasRecord(_Record):
    name: str
    version_id: str
    revision: int
    updated_at: dt.datetime
    updated_by: str


class VersionSummary(_Record):
    version_id: str
    serving_name: str
    lineage_kind: str
    created_at: dt.datetime
    created_by: str
    aliases: list[str]


class PublishedVersion(_Record):
    """One immutable published version (what the serving process serves)."""

    version_id: str
    content_sha256: str
    serving: dict[str, Any]  # the full ServingSpec
    runtime_snapshot: dict[str, Any]
    lineage: Lineage
    created_at: dt.datetime
    created_by: str
    alias: str | None = None  # the alias it was resolved through, if any

    def serving_spec(self) -> ServingSpec:
        return ServingSpec.model_validate(self.serving)

    def arrow_schema(self) -> pa.Schema:
        """The exact Arrow schema of the stream's binary frames."""
        return arrow_schema(self.runtime_snapshot)

    def runtime_config_message(self) -> dict[str, Any]:
        """SPEC §7.2 first message of the stream."""
        lin = self.lineage
        source = {"kind": lin.kind, "experiment": lin.experiment_name, "run_ids": [r.run_id for r in lin.runs],
                  "code_version": lin.code_version, "dataset_ids": lin.dataset_ids}
        return runtime_config_message(self.runtime_snapshot, version_id=self.version_id, alias=self.alias,
                                      source=source)


class PromotionResult(_Record):
    version: PublishedVersion
    created: bool  # False: the same content was already published (idempotent)
    event: AliasEvent | None  # None: the alias already pointed at this version


# ---- engine ----------------------------------------------------------------------------------------


def default_url(lake: Path) -> str:
    return f"sqlite:///{(Path(lake) / 'registry' / 'serving_registry.sqlite').resolve()}"


_guard = append_only_guard(APPEND_ONLY_TABLES, ImmutableVersionError)


def make_engine(url: str) -> Engine:
    """An engine with the registry's append-only guard (see `database.make_engine`)."""
    return make_engine_with(url, _guard)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the registry schema (serialized: advisory lock on Postgres, BEGIN IMMEDIATE on SQLite)."""
    upgrade_schema(engine, MIGRATIONS_DIR, _MIGRATION_LOCK, revision)


def current_revision(engine: Engine) -> str | None:
    return schema_revision(engine, ALEMBIC_VERSION_TABLE)


# ---- content ---------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_of(serving: dict[str, Any], snapshot: dict[str, Any], lineage: Lineage) -> dict[str, Any]:
    return {"serving": serving, "runtime_snapshot": snapshot, "lineage": lineage.content()}


def content_hash(content: dict[str, Any]) -> tuple[str, str]:
    """(version id, full sha256) of a version's content."""
    sha = hashlib.sha256(canonical_json(content).encode()).hexdigest()
    return VERSION_PREFIX + sha[:16], sha


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not re.fullmatch(NAME_PATTERN, alias) or len(alias) > 64:
        raise RegistryError(f"alias {alias!r}: expected {NAME_PATTERN} (at most 64 characters)")
    if alias.startswith(VERSION_PREFIX):
        raise RegistryError(f"alias {alias!r}: the prefix {VERSION_PREFIX!r} is reserved for version ids")
    return alias


def _check_who(actor: str, reason: str) -> None:
    if not actor or not actor.strip() or len(actor) > 128:
        raise RegistryError("actor: required (who makes the change, at most 128 characters)")
    if not reason or not reason.strip():
        raise RegistryError("reason: required (why the alias changes; it is kept in the audit)")


def _event(row: Any) -> AliasEvent:
    m = row._mapping
    return AliasEvent(id=m["id"], alias=m["alias"], action=m["action"], from_version=m["from_version"],
                      to_version=m["to_version"], actor=m["actor"], reason=m["reason"], at=_utc(m["at"]))


# ---- the registry ----------------------------------------------------------------------------------


class Registry:
    """`Registry(url=None, lake=None)`: `url` > `QMACHINA_REGISTRY_URL` > SQLite under `lake` (default the
    project lake). The schema is upgraded to Alembic head on open. `instrument` defaults to the lock."""

    def __init__(self, url: str | None = None, lake: Path | str | None = None, *,
                 instrument: InstrumentConfig | None = None, migrate: bool = True):
        self.lake = Path(lake).resolve() if lake is not None else lake_root()
        raw = url or os.environ.get(ENV_URL) or default_url(self.lake)
        self.url = normalize_url(raw)
        ensure_sqlite_dir(self.url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise RegistryError(f"{make_url(self.url).render_as_string()}: supported databases are SQLite and "
                                "PostgreSQL")
        self._instrument = instrument
        if migrate:
            upgrade(self.engine)

    # -- plumbing --

    @property
    def instrument(self) -> InstrumentConfig:
        if self._instrument is None:
            self._instrument = locked_instrument()
        return self._instrument

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({make_url(self.url).render_as_string()!r})"

    @contextlib.contextmanager
    def _write(self, alias: str) -> Iterator[Connection]:
        """One write transaction holding the alias's lock."""
        with self.engine.connect() as conn:
            write_connection(conn)
            with conn.begin():
                self._lock_alias(conn, alias)
                yield conn

    def _lock_alias(self, conn: Connection, alias: str) -> None:
        if self.dialect == "postgresql":
            key = int(hashlib.sha256(f"qmachina.serving_alias:{alias}".encode()).hexdigest()[:15], 16)
            conn.execute(select(func.pg_advisory_xact_lock(key)))
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock

    def _insert_version(self, conn: Connection, version_id: str, sha: str, payload: str, serving_name: str,
                        kind: str, at: dt.datetime, actor: str) -> bool:
        """Insert the version unless that content is already published; True when inserted."""
        if self._stored_sha(conn, version_id, sha):
            return False
        table = serving_versions
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(table).values(version_id=version_id, serving_name=serving_name, lineage_kind=kind,
                                            content_sha256=sha, payload=payload, created_at=at, created_by=actor)
        res = conn.execute(stmt.on_conflict_do_nothing(index_elements=["version_id"]))
        if res.rowcount == 0:  # published concurrently through another alias
            self._stored_sha(conn, version_id, sha)
            return False
        return True

    def _stored_sha(self, conn: Connection, version_id: str, sha: str) -> bool:
        stored = conn.execute(select(serving_versions.c.content_sha256)
                              .where(serving_versions.c.version_id == version_id)).scalar_one_or_none()
        if stored is not None and stored != sha:
            raise RegistryIntegrityError(f"version {version_id} is stored with content {stored}, not {sha} "
                                         "(a 64-bit id collision or a tampered row)")
        return stored is not None

    def _repoint(self, conn: Connection, alias: str, version_id: str, actor: str, reason: str,
                 action: Action) -> AliasEvent | None:
        """Point `alias` at `version_id` and append the audit row; None when it already points there."""
        cur = conn.execute(select(serving_aliases).where(serving_aliases.c.name == alias).with_for_update()).first()
        if cur is not None and cur.version_id == version_id:
            return None
        at = _now()
        if cur is None:
            conn.execute(insert(serving_aliases).values(name=alias, version_id=version_id, revision=1, updated_at=at,
                                                        updated_by=actor))
        else:
            conn.execute(update(serving_aliases).where(serving_aliases.c.name == alias)
                         .values(version_id=version_id, revision=cur.revision + 1, updated_at=at, updated_by=actor))
        values = {"alias": alias, "action": action, "from_version": None if cur is None else cur.version_id,
                  "to_version": version_id, "actor": actor, "reason": reason, "at": at}
        res = conn.execute(insert(serving_alias_events).values(**values))
        return AliasEvent(id=res.inserted_primary_key[0], **values)

    def _load(self, conn: Connection, version_id: str, alias: str | None = None) -> PublishedVersion:
        row = conn.execute(select(serving_versions).where(serving_versions.c.version_id == version_id)).first()
        if row is None:
            raise UnknownVersionError(f"no serving version {version_id!r}")
        payload = json.loads(row.payload)
        lineage = Lineage.model_validate(payload["lineage"])
        vid, sha = content_hash(content_of(payload["serving"], payload["runtime_snapshot"], lineage))
        if vid != row.version_id or sha != row.content_sha256:
            raise RegistryIntegrityError(f"version {row.version_id}: stored payload hashes to {vid} ({sha}); "
                                         "the row was modified outside the registry")
        return PublishedVersion(version_id=row.version_id, content_sha256=row.content_sha256,
                                serving=payload["serving"], runtime_snapshot=payload["runtime_snapshot"],
                                lineage=lineage, created_at=_utc(row.created_at), created_by=row.created_by,
                                alias=alias)

    # -- publishing --

    def promote(self, serving: ServingSpec, *, alias: str, lineage: Lineage, actor: str, reason: str,
                gate: PromotionGate | None = None, pipeline: PipelineSpec | None = None,
                action: Action = "promote") -> PromotionResult:
        """Preflight, then publish `serving` (if new) and point `alias` at it, with its audit row, in one
        transaction. Raises PreflightError (nothing written) when the spec may not be published."""
        check_alias(alias)
        _check_who(actor, reason)
        if action not in ("promote", "register"):
            raise RegistryError(f"action {action!r}: promote publishes with 'promote' or 'register'")
        if pipeline is None:
            try:
                pipeline = lineage.pipeline_spec()
            except Exception as exc:
                raise PreflightError(f"serving spec {serving.name!r}", [PreflightIssue(
                    kind="lineage", message=f"the lineage's pipeline spec does not validate: {exc}")]) from exc
        with self._write(alias) as conn:
            snapshot = preflight(serving, pipeline, lineage, instrument=self.instrument, lake=self.lake, gate=gate)
            serving_dump = serving.model_dump(mode="json")
            vid, sha = content_hash(content_of(serving_dump, snapshot, lineage))
            payload = canonical_json({"serving": serving_dump, "runtime_snapshot": snapshot,
                                      "lineage": lineage.model_dump(mode="json")})
            created = self._insert_version(conn, vid, sha, payload, serving.name, lineage.kind, _now(), actor)
            ev = self._repoint(conn, alias, vid, actor, reason, action)
            version = self._load(conn, vid, alias)
        return PromotionResult(version=version, created=created, event=ev)

    def dry_run(self, serving: ServingSpec, *, lineage: Lineage, gate: PromotionGate | None = None,
                pipeline: PipelineSpec | None = None) -> dict[str, Any]:
        """The preflight of `promote` without writing: the runtime snapshot, or PreflightError."""
        return preflight(serving, pipeline or lineage.pipeline_spec(), lineage, instrument=self.instrument,
                         lake=self.lake, gate=gate)

    def register(self, serving_yaml: str | os.PathLike[str], *, alias: str, actor: str, reason: str,
                 configs_dir: Path | None = None) -> PromotionResult:
        """Direct registration of a serving YAML (no experiment; still through preflight, no metrics gate)."""
        try:
            spec, pipeline = resolve_serving(serving_yaml, configs_dir=configs_dir, instrument=self.instrument)
        except ConfigError as err:
            kind = "instrument" if "lock" in err.reason else "spec"
            raise PreflightError(f"serving spec {os.fspath(serving_yaml)!r}",
                                 [PreflightIssue(kind=kind, message=str(e)) for e in err.errors]) from err
        return self.promote(spec, alias=alias, lineage=lineage_for_register(spec, pipeline), actor=actor,
                            reason=reason, pipeline=pipeline, action="register")

    def promote_run(self, experiment: str | os.PathLike[str], run_ids: list[str] | str, *, alias: str, actor: str,
                    reason: str, gate: PromotionGate | None = None, configs_dir: Path | None = None,
                    ) -> PromotionResult:
        """Promote one parameter set of an experiment from its results rows (the promotion sensor's call):
        the published spec is the base serving spec with that set applied; the experiment's gate applies."""
        exp, base, pipeline = resolve_experiment(experiment, configs_dir=configs_dir, instrument=self.instrument)
        try:
            lineage, promoted = lineage_from_results(self.lake, exp, base, pipeline, run_ids)
        except (LookupError, ValueError) as err:
            raise PreflightError(f"experiment {exp.name!r} run(s) {run_ids}",
                                 [PreflightIssue(kind="lineage", message=str(err))]) from err
        return self.promote(promoted, alias=alias, lineage=lineage, actor=actor, reason=reason, gate=gate,
                            pipeline=pipeline)

    # -- aliases --

    def activate(self, alias: str, version_id: str, *, actor: str, reason: str) -> AliasEvent | None:
        """Point `alias` at an existing version (audited); None when it already points there. The version's
        snapshot must still match the instrument lock and the wire schema."""
        check_alias(alias)
        _check_who(actor, reason)
        with self._write(alias) as conn:
            version = self._load(conn, version_id)
            self._servable(version)
            return self._repoint(conn, alias, version.version_id, actor, reason, "activate")

    def rollback(self, alias: str, *, actor: str, reason: str) -> AliasEvent:
        """Repoint `alias` to the version active before the current one (see the module doc)."""
        check_alias(alias)
        _check_who(actor, reason)
        with self._write(alias) as conn:
            events = self._history(conn, alias)
            if not events:
                raise UnknownVersionError(f"no alias {alias!r}")
            stack = _alias_stack(events)
            if len(stack) < 2:
                raise RegistryError(f"alias {alias!r} has no earlier version to roll back to (history: "
                                    f"{' -> '.join(e.to_version for e in events)})")
            target = self._load(conn, stack[-2])
            self._servable(target)
            ev = self._repoint(conn, alias, target.version_id, actor, reason, "rollback")
            assert ev is not None  # stack[-1] is the current version and differs from stack[-2]
            return ev

    def _servable(self, version: PublishedVersion) -> None:
        issues = [PreflightIssue(kind="instrument", message=p)
                  for p in lock_problems(version.runtime_snapshot, self.instrument)]
        try:
            version.arrow_schema()
        except (KeyError, ValueError) as exc:
            issues.append(PreflightIssue(kind="stream_schema", message=str(exc)))
        if issues:
            raise PreflightError(f"version {version.version_id}", issues)

    # -- reading --

    def resolve(self, alias_or_id: str) -> PublishedVersion:
        """The version an alias points at, or a version by id; UnknownVersionError otherwise."""
        with self.engine.connect() as conn:
            vid = conn.execute(select(serving_aliases.c.version_id)
                               .where(serving_aliases.c.name == alias_or_id)).scalar_one_or_none()
            if vid is not None:
                return self._load(conn, vid, alias_or_id)
            if _VERSION_RE.match(alias_or_id or ""):
                return self._load(conn, alias_or_id)
        raise UnknownVersionError(f"no serving alias or version {alias_or_id!r}")

    def list_versions(self) -> list[VersionSummary]:
        with self.engine.connect() as conn:
            aliases: dict[str, list[str]] = {}
            for name, vid in conn.execute(select(serving_aliases.c.name, serving_aliases.c.version_id)):
                aliases.setdefault(vid, []).append(name)
            rows = conn.execute(select(serving_versions.c.version_id, serving_versions.c.serving_name,
                                       serving_versions.c.lineage_kind, serving_versions.c.created_at,
                                       serving_versions.c.created_by)
                                .order_by(serving_versions.c.created_at, serving_versions.c.version_id)).all()
        return [VersionSummary(version_id=r.version_id, serving_name=r.serving_name, lineage_kind=r.lineage_kind,
                               created_at=_utc(r.created_at), created_by=r.created_by,
                               aliases=sorted(aliases.get(r.version_id, []))) for r in rows]

    def list_aliases(self) -> list[AliasRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(serving_aliases).order_by(serving_aliases.c.name)).all()
        return [AliasRecord(name=r.name, version_id=r.version_id, revision=r.revision, updated_at=_utc(r.updated_at),
                            updated_by=r.updated_by) for r in rows]

    def history(self, alias: str | None = None) -> list[AliasEvent]:
        """Audit rows of one alias (or all), oldest first."""
        with self.engine.connect() as conn:
            return self._history(conn, alias)

    def _history(self, conn: Connection, alias: str | None) -> list[AliasEvent]:
        q = select(serving_alias_events).order_by(serving_alias_events.c.id)
        if alias is not None:
            q = q.where(serving_alias_events.c.alias == alias)
        return [_event(r) for r in conn.execute(q)]

    def diff(self, a: str, b: str) -> SnapshotDiff:
        """Field-by-field diff of two versions' (or aliases') runtime snapshots."""
        va, vb = self.resolve(a), self.resolve(b)
        return diff_snapshots(va.runtime_snapshot, vb.runtime_snapshot, version_a=va.version_id,
                              version_b=vb.version_id)

    def verify(self) -> list[str]:
        """Every stored version re-derived from its bytes, every alias against the audit; [] when sound."""
        problems = []
        with self.engine.connect() as conn:
            for vid in conn.execute(select(serving_versions.c.version_id)).scalars():
                try:
                    self._load(conn, vid)
                except RegistryIntegrityError as exc:
                    problems.append(str(exc))
            events = self._history(conn, None)
            for a in conn.execute(select(serving_aliases)).all():
                mine = [e for e in events if e.alias == a.name]
                if not mine or mine[-1].to_version != a.version_id:
                    problems.append(f"alias {a.name}: points at {a.version_id}, the audit ends at "
                                    f"{mine[-1].to_version if mine else 'nothing'}")
                for prev, nxt in itertools.pairwise(mine):
                    if nxt.from_version != prev.to_version:
                        problems.append(f"alias {a.name}: audit row {nxt.id} starts from {nxt.from_version}, "
                                        f"row {prev.id} ended at {prev.to_version}")
        return problems

    def count_rows(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (serving_versions, serving_aliases, serving_alias_events)}


def _alias_stack(events: list[AliasEvent]) -> list[str]:
    stack: list[str] = []
    for e in events:
        if e.action == "rollback" and len(stack) >= 2 and stack[-2] == e.to_version:
            stack.pop()
        else:
            stack.append(e.to_version)
    return stack

