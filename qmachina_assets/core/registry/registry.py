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
- **Workspaces**: a version is published *into* a workspace (`serving_version_workspaces`; the same content
  published into two workspaces is one version row with two links); aliases, their audit and every read are
  per workspace (`workspace=`, default `DEFAULT_WORKSPACE`): a workspace cannot see, resolve or point an alias
  at a version that was not published into it.
- **Rollback** pops the alias's audit stack: promote/register/activate push the new version, rollback
  returns to the version that was active before the current one (repeated rollbacks walk further back).
- **Compare-and-swap repoints**: promote, register, activate and rollback all take `expected_version_id`,
  the version the caller believes the alias points at (None: the alias must not exist yet). Under the
  alias's lock the registry compares it with the stored one; a mismatch raises `AliasConflictError` and
  writes nothing, so of two racing writers one wins and the other gets a conflict, never a silent
  overwrite. (An alias that already points at the requested version is left unchanged.)
- **Owned aliases**: an alias named after an experiment (`configs/experiments/<alias>.yaml`, the promotion
  sensor's alias), or first pointed by an experiment's promotion, is owned by that experiment
  (`owner_experiment`, sticky). It accepts only versions published by that experiment's promotion, i.e.
  versions that passed its gate (`candidates.gate_failures`, re-checked on activate and rollback); a
  `register` or another experiment's version is refused with `AliasOwnedError`.
- **Actors** are parameters: each caller passes the identity it established itself (the CLI the OS user,
  Dagster "dagster", the REST API the client; issue 17 replaces the REST client's claim by its token's
  subject). The registry records what it is given.
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
from qmachina_assets.core.paths import configs_root, lake_root
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
    AliasConflictError,
    AliasOwnedError,
    ImmutableVersionError,
    RegistryError,
    RegistryIntegrityError,
    UnknownVersionError,
)
from qmachina_assets.core.registry.lineage import Lineage, lineage_for_register, lineage_from_results
from qmachina_assets.core.registry.models import (
    ALEMBIC_VERSION_TABLE,
    APPEND_ONLY_TABLES,
    DEFAULT_WORKSPACE,
    serving_alias_events,
    serving_aliases,
    serving_version_workspaces,
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
    workspace: str = DEFAULT_WORKSPACE
    alias: str
    action: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    at: dt.datetime
    dirty_allowed: bool = False  # runs made from uncommitted code were published/pointed by explicit permission


class AliasRecord(_Record):
    workspace: str = DEFAULT_WORKSPACE
    name: str
    version_id: str
    revision: int
    updated_at: dt.datetime
    updated_by: str
    owner_experiment: str | None = None  # the experiment whose gate guards the alias


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


def check_workspace(workspace: str) -> str:
    if not isinstance(workspace, str) or not re.fullmatch(NAME_PATTERN, workspace) or len(workspace) > 64:
        raise RegistryError(f"workspace {workspace!r}: expected {NAME_PATTERN} (at most 64 characters)")
    return workspace


def _check_who(actor: str, reason: str) -> None:
    if not actor or not actor.strip() or len(actor) > 128:
        raise RegistryError("actor: required (who makes the change, at most 128 characters)")
    if not reason or not reason.strip():
        raise RegistryError("reason: required (why the alias changes; it is kept in the audit)")


def _event(row: Any) -> AliasEvent:
    m = row._mapping
    return AliasEvent(id=m["id"], workspace=m["workspace"], alias=m["alias"], action=m["action"],
                      from_version=m["from_version"], to_version=m["to_version"], actor=m["actor"],
                      reason=m["reason"], at=_utc(m["at"]),
                      dirty_allowed=bool(m["dirty_allowed"]))


# ---- the registry ----------------------------------------------------------------------------------


class Registry:
    """`Registry(url=None, lake=None)`: `url` > `QMACHINA_REGISTRY_URL` > SQLite under `lake` (default the
    project lake). The schema is upgraded to Alembic head on open. `instrument` defaults to the lock;
    `configs_dir` (default `configs_root()`) is where experiments are found by name (promote_run, alias
    ownership)."""

    def __init__(self, url: str | None = None, lake: Path | str | None = None, *,
                 instrument: InstrumentConfig | None = None, migrate: bool = True,
                 configs_dir: Path | str | None = None):
        self.lake = Path(lake).resolve() if lake is not None else lake_root()
        self.configs_dir = Path(configs_dir).resolve() if configs_dir is not None else configs_root()
        raw = url or os.environ.get(ENV_URL) or default_url(self.lake)
        self.url = normalize_url(raw)
        ensure_sqlite_dir(self.url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise RegistryError(f"{make_url(self.url).render_as_string()}: supported databases are SQLite and "
                                "PostgreSQL")
        self._instrument = instrument
        self.last_fit_seconds: float | None = None  # of the latest ML model fitted at promotion (figures, logs)
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
    def _write(self, alias: str, workspace: str) -> Iterator[Connection]:
        """One write transaction holding the alias's lock."""
        with self.engine.connect() as conn:
            write_connection(conn)
            with conn.begin():
                self._lock_alias(conn, alias, workspace)
                yield conn

    def _lock_alias(self, conn: Connection, alias: str, workspace: str) -> None:
        if self.dialect == "postgresql":
            key = int(hashlib.sha256(f"qmachina.serving_alias:{workspace}/{alias}".encode()).hexdigest()[:15], 16)
            conn.execute(select(func.pg_advisory_xact_lock(key)))
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock

    def _insert_version(self, conn: Connection, version_id: str, sha: str, payload: str, serving_name: str,
                        kind: str, at: dt.datetime, actor: str, workspace: str) -> bool:
        """Insert the version unless that content is already published, and link it to `workspace`; True when
        the version row was inserted."""
        inserted = self._insert_version_row(conn, version_id, sha, payload, serving_name, kind, at, actor)
        self._link(conn, version_id, workspace, at, actor)
        return inserted

    def _link(self, conn: Connection, version_id: str, workspace: str, at: dt.datetime, actor: str) -> None:
        exists = conn.execute(select(serving_version_workspaces.c.version_id).where(
            serving_version_workspaces.c.version_id == version_id,
            serving_version_workspaces.c.workspace == workspace)).first()
        if exists is None:
            conn.execute(insert(serving_version_workspaces).values(version_id=version_id, workspace=workspace,
                                                                   created_at=at, created_by=actor))

    def _insert_version_row(self, conn: Connection, version_id: str, sha: str, payload: str, serving_name: str,
                            kind: str, at: dt.datetime, actor: str) -> bool:
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

    def _repoint(self, conn: Connection, alias: str, version: PublishedVersion, actor: str, reason: str,
                 action: Action, expected: str | None, workspace: str, *,
                 dirty_allowed: bool = False) -> AliasEvent | None:
        """Compare-and-swap `alias` of `workspace` from `expected` to `version` (checking its owner) and append
        the audit row; None when it already points there."""
        mine = (serving_aliases.c.workspace == workspace) & (serving_aliases.c.name == alias)
        cur = conn.execute(select(serving_aliases).where(mine).with_for_update()).first()
        version_id = version.version_id
        actual = None if cur is None else cur.version_id
        if actual == version_id:
            return None
        if actual != expected:
            raise AliasConflictError(
                f"alias {alias!r} points at {actual or 'nothing (it does not exist)'}, not at the expected "
                f"{expected or 'nothing (a new alias)'}: another writer changed it since it was read; re-read the "
                "alias and retry")
        owner = (cur.owner_experiment if cur is not None else None) or self.experiment_named(alias)
        self._check_owner(alias, owner, version)
        lin = version.lineage
        if owner is None and action == "promote" and lin.kind == "experiment":
            owner = lin.experiment_name  # the first gated promotion claims the alias for its experiment
        at = _now()
        if cur is None:
            conn.execute(insert(serving_aliases).values(workspace=workspace, name=alias, version_id=version_id,
                                                        revision=1, updated_at=at, updated_by=actor,
                                                        owner_experiment=owner))
        else:
            conn.execute(update(serving_aliases).where(mine)
                         .values(version_id=version_id, revision=cur.revision + 1, updated_at=at, updated_by=actor,
                                 owner_experiment=owner))
        values = {"workspace": workspace, "alias": alias, "action": action, "from_version": actual,
                  "to_version": version_id, "actor": actor, "reason": reason, "at": at, "dirty_allowed": dirty_allowed}
        res = conn.execute(insert(serving_alias_events).values(**values))
        return AliasEvent(id=res.inserted_primary_key[0], **values)

    def experiment_named(self, alias: str) -> str | None:
        """The experiment an alias is named after (the promotion sensor's alias), if there is one."""
        return alias if (self.configs_dir / "experiments" / f"{alias}.yaml").is_file() else None

    @staticmethod
    def _check_owner(alias: str, owner: str | None, version: PublishedVersion) -> None:
        """An owned alias takes only versions its experiment's promotion published through its gate."""
        if owner is None:
            return
        from qmachina_assets.core.registry.candidates import metric_failures

        lin = version.lineage
        what = (f"registered directly (kind {lin.kind}, no gate)" if lin.kind != "experiment"
                else f"from experiment {lin.experiment_name!r}")
        if lin.kind != "experiment" or lin.experiment_name != owner:
            raise AliasOwnedError(f"alias {alias!r} is owned by experiment {owner!r}: it accepts only versions that "
                                  f"passed that experiment's promotion gate; version {version.version_id} is {what}. "
                                  f"Promote {owner}'s walk-forward selection (qmachina serving promote {owner}) or "
                                  "use another alias")
        exp = lin.experiment_spec()
        assert exp is not None
        failed = [f for r in lin.runs for f in metric_failures(r, exp.promotion, f"gate of {owner!r}")]
        if failed:
            raise AliasOwnedError(f"alias {alias!r} is owned by experiment {owner!r}; version {version.version_id} "
                                  f"does not pass its recorded gate: {'; '.join(f.message for f in failed)}")

    def current(self, alias: str, workspace: str = DEFAULT_WORKSPACE) -> str | None:
        """The version id `alias` points at now (None: no such alias): the `expected_version_id` of a caller
        that wants to repoint whatever is there (its repoint still fails if the alias moves meanwhile)."""
        with self.engine.connect() as conn:
            return conn.execute(select(serving_aliases.c.version_id)
                                .where(serving_aliases.c.workspace == workspace,
                                       serving_aliases.c.name == alias)).scalar_one_or_none()

    def _load(self, conn: Connection, version_id: str, alias: str | None = None,
              workspace: str | None = None) -> PublishedVersion:
        """A version (re-derived from its bytes); with `workspace`, only one published into it."""
        q = select(serving_versions).where(serving_versions.c.version_id == version_id)
        if workspace is not None:
            q = q.where(serving_versions.c.version_id.in_(
                select(serving_version_workspaces.c.version_id)
                .where(serving_version_workspaces.c.workspace == workspace)))
        row = conn.execute(q).first()
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
                expected_version_id: str | None, gate: PromotionGate | None = None,
                pipeline: PipelineSpec | None = None, action: Action = "promote",
                allow_dirty: bool = False, workspace: str = DEFAULT_WORKSPACE,
                model: dict[str, Any] | None = None) -> PromotionResult:
        """Preflight, then publish `serving` (if new) and compare-and-swap `alias` from `expected_version_id`
        to it, with its audit row, in one transaction. Raises PreflightError (nothing written) when the spec
        may not be published, AliasConflictError / AliasOwnedError when the alias may not be repointed.

        An ML signal's version carries its fitted model (`model`, a `model_artifact.model_entry`); without one,
        an experiment lineage's model is fitted here, before the transaction (`fit_promoted_model`), and the
        preflight's `artifact` rule checks the file against its hash inside it."""
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
        check_workspace(workspace)
        fit_error = None
        if model is None:
            model, fit_error = self.fit_promoted_model(serving, pipeline, lineage)
        with self._write(alias, workspace) as conn:
            snapshot = preflight(serving, pipeline, lineage, instrument=self.instrument, lake=self.lake, gate=gate,
                                 allow_dirty=allow_dirty, model=model, model_error=fit_error)
            serving_dump = serving.model_dump(mode="json")
            vid, sha = content_hash(content_of(serving_dump, snapshot, lineage))
            payload = canonical_json({"serving": serving_dump, "runtime_snapshot": snapshot,
                                      "lineage": lineage.model_dump(mode="json")})
            created = self._insert_version(conn, vid, sha, payload, serving.name, lineage.kind, _now(), actor,
                                           workspace)
            version = self._load(conn, vid, alias)
            dirty = allow_dirty and any(r.code_dirty for r in lineage.runs)
            ev = self._repoint(conn, alias, version, actor, reason, action, expected_version_id, workspace,
                               dirty_allowed=dirty)
        return PromotionResult(version=version, created=created, event=ev)

    def dry_run(self, serving: ServingSpec, *, lineage: Lineage, gate: PromotionGate | None = None,
                pipeline: PipelineSpec | None = None, allow_dirty: bool = False,
                model: dict[str, Any] | None = None) -> dict[str, Any]:
        """The preflight of `promote` without writing to the registry: the runtime snapshot, or PreflightError.
        (An ML experiment's model is fitted and stored in the lake's content-addressed models, as promote does.)"""
        pipeline = pipeline or lineage.pipeline_spec()
        fit_error = None
        if model is None:
            model, fit_error = self.fit_promoted_model(serving, pipeline, lineage)
        return preflight(serving, pipeline, lineage, instrument=self.instrument, lake=self.lake, gate=gate,
                         allow_dirty=allow_dirty, model=model, model_error=fit_error)

    def fit_promoted_model(self, serving: ServingSpec, pipeline: PipelineSpec,
                           lineage: Lineage) -> tuple[dict[str, Any] | None, str | None]:
        """(model entry, None) for an ML signal promoted from an experiment: fitted as the walk-forward's latest
        fold fitted it (its training datasets, parameters and labels; `model_artifact.build_model`) and written
        to the lake's models. (None, None) when there is nothing to fit (not ML, or no experiment runs: the
        preflight refuses an ML spec without a model); (None, why) when the fit fails."""
        from qmachina_assets.core.research import model_artifact

        try:
            if not model_artifact.is_ml(serving):
                return None, None
        except ValueError:
            return None, None  # the spec check reports a signal that does not validate
        try:
            exp = lineage.experiment_spec() if lineage.kind == "experiment" else None
        except ValueError:
            return None, None  # the preflight reports a lineage that does not validate
        if exp is None or not lineage.runs:
            return None, None
        last = max(lineage.runs, key=lambda r: r.test_date)
        try:
            entry, seconds = model_artifact.build_model(self.lake, serving, pipeline, exp.eval, last.train_dates,
                                                        last.train_dataset_ids)
        except Exception as exc:  # reported by the preflight's artifact rule, with every other problem
            return None, (f"fitting {serving.signal.name!r} on the latest fold's training days "  # type: ignore[union-attr]
                          f"{last.train_dates} failed: {type(exc).__name__}: {exc}")
        self.last_fit_seconds = seconds
        return entry, None

    def register(self, serving_yaml: str | os.PathLike[str], *, alias: str, actor: str, reason: str,
                 expected_version_id: str | None, configs_dir: Path | None = None,
                 workspace: str = DEFAULT_WORKSPACE) -> PromotionResult:
        """Direct registration of a serving YAML (no experiment; still through preflight, no metrics gate).
        Refused on an alias owned by an experiment."""
        try:
            spec, pipeline = resolve_serving(serving_yaml, configs_dir=configs_dir, instrument=self.instrument)
        except ConfigError as err:
            kind = "instrument" if "lock" in err.reason else "spec"
            raise PreflightError(f"serving spec {os.fspath(serving_yaml)!r}",
                                 [PreflightIssue(kind=kind, message=str(e)) for e in err.errors]) from err
        return self.promote(spec, alias=alias, lineage=lineage_for_register(spec, pipeline), actor=actor,
                            reason=reason, pipeline=pipeline, action="register",
                            expected_version_id=expected_version_id, workspace=workspace)

    def promote_run(self, experiment: str | os.PathLike[str], run_ids: list[str] | str | None = None, *,
                    alias: str, actor: str, reason: str, expected_version_id: str | None,
                    gate: PromotionGate | None = None, configs_dir: Path | None = None,
                    allow_dirty: bool = False, workspace: str = DEFAULT_WORKSPACE) -> PromotionResult:
        """Promote an experiment's walk-forward selection from its results rows (the promotion sensor's call):
        `run_ids` one per fold (default: the current candidate's, `candidates.candidate`); the published spec
        is the base serving spec with the latest fold's set applied; the experiment's gate applies."""
        from qmachina_assets.core.registry.candidates import candidate

        exp, base, pipeline = resolve_experiment(experiment, configs_dir=configs_dir or self._configs_for(experiment),
                                                 instrument=self.instrument)
        if run_ids is None:
            cand = candidate(self.lake, exp)
            if cand is None:
                raise PreflightError(f"experiment {exp.name!r}", [PreflightIssue(
                    kind="selection", message=f"experiment {exp.name!r} has no walk-forward selection yet (no sweep "
                                              "of its current version, or no parameter set with enough in-sample "
                                              "trades on the latest test day)")])
            run_ids = cand.run_ids
        try:
            lineage, promoted = lineage_from_results(self.lake, exp, base, pipeline, run_ids)
        except (LookupError, ValueError) as err:
            raise PreflightError(f"experiment {exp.name!r} run(s) {run_ids}",
                                 [PreflightIssue(kind="lineage", message=str(err))]) from err
        return self.promote(promoted, alias=alias, lineage=lineage, actor=actor, reason=reason, gate=gate,
                            pipeline=pipeline, expected_version_id=expected_version_id, allow_dirty=allow_dirty,
                            workspace=workspace)

    def _configs_for(self, experiment: str | os.PathLike[str]) -> Path | None:
        """A bare experiment name resolves under this registry's configs tree; a path stands on its own."""
        return self.configs_dir if not str(experiment).endswith((".yaml", ".yml")) else None

    # -- aliases --

    def activate(self, alias: str, version_id: str, *, actor: str, reason: str,
                 expected_version_id: str | None, workspace: str = DEFAULT_WORKSPACE) -> AliasEvent | None:
        """Compare-and-swap `alias` from `expected_version_id` to an existing version (audited); None when it
        already points there. The version's snapshot must still match the instrument lock and the wire
        schema, and an owned alias takes only its experiment's gated versions."""
        check_alias(alias)
        _check_who(actor, reason)
        with self._write(alias, workspace) as conn:
            version = self._load(conn, version_id, workspace=workspace)
            self._servable(version)
            return self._repoint(conn, alias, version, actor, reason, "activate", expected_version_id, workspace)

    def rollback(self, alias: str, *, actor: str, reason: str, expected_version_id: str | None,
                 workspace: str = DEFAULT_WORKSPACE) -> AliasEvent:
        """Compare-and-swap `alias` back to the version active before the current one (see the module doc);
        `expected_version_id` is the current version the caller is rolling back from."""
        check_alias(alias)
        _check_who(actor, reason)
        with self._write(alias, workspace) as conn:
            events = self._history(conn, alias, workspace)
            if not events:
                raise UnknownVersionError(f"no alias {alias!r}")
            stack = _alias_stack(events)
            if stack[-1] != expected_version_id:
                raise AliasConflictError(f"alias {alias!r} points at {stack[-1]}, not at the expected "
                                         f"{expected_version_id}: another writer changed it since it was read; "
                                         "re-read the alias and retry")
            if len(stack) < 2:
                raise RegistryError(f"alias {alias!r} has no earlier version to roll back to (history: "
                                    f"{' -> '.join(e.to_version for e in events)})")
            target = self._load(conn, stack[-2], workspace=workspace)
            self._servable(target)
            ev = self._repoint(conn, alias, target, actor, reason, "rollback", expected_version_id, workspace)
            assert ev is not None  # stack[-1] is the current version and differs from stack[-2]
            return ev

    def _servable(self, version: PublishedVersion) -> None:
        from qmachina_assets.core.research.model_artifact import file_problems

        issues = [PreflightIssue(kind="instrument", message=p)
                  for p in lock_problems(version.runtime_snapshot, self.instrument)]
        model = version.runtime_snapshot.get("model")
        if model is not None:
            issues += [PreflightIssue(kind="artifact", message=p) for p in file_problems(self.lake, model)]
        try:
            version.arrow_schema()
        except (KeyError, ValueError) as exc:
            issues.append(PreflightIssue(kind="stream_schema", message=str(exc)))
        if issues:
            raise PreflightError(f"version {version.version_id}", issues)

    # -- reading --

    def resolve(self, alias_or_id: str, workspace: str = DEFAULT_WORKSPACE) -> PublishedVersion:
        """The version an alias of the workspace points at, or a version of the workspace by id;
        UnknownVersionError otherwise (also for another workspace's alias or version)."""
        with self.engine.connect() as conn:
            vid = conn.execute(select(serving_aliases.c.version_id)
                               .where(serving_aliases.c.workspace == workspace,
                                      serving_aliases.c.name == alias_or_id)).scalar_one_or_none()
            if vid is not None:
                return self._load(conn, vid, alias_or_id, workspace=workspace)
            if _VERSION_RE.match(alias_or_id or ""):
                return self._load(conn, alias_or_id, workspace=workspace)
        raise UnknownVersionError(f"no serving alias or version {alias_or_id!r}")

    def list_versions(self, workspace: str = DEFAULT_WORKSPACE) -> list[VersionSummary]:
        with self.engine.connect() as conn:
            aliases: dict[str, list[str]] = {}
            for name, vid in conn.execute(select(serving_aliases.c.name, serving_aliases.c.version_id)
                                          .where(serving_aliases.c.workspace == workspace)):
                aliases.setdefault(vid, []).append(name)
            rows = conn.execute(select(serving_versions.c.version_id, serving_versions.c.serving_name,
                                       serving_versions.c.lineage_kind, serving_versions.c.created_at,
                                       serving_versions.c.created_by)
                                .join(serving_version_workspaces,
                                      serving_version_workspaces.c.version_id == serving_versions.c.version_id)
                                .where(serving_version_workspaces.c.workspace == workspace)
                                .order_by(serving_versions.c.created_at, serving_versions.c.version_id)).all()
        return [VersionSummary(version_id=r.version_id, serving_name=r.serving_name, lineage_kind=r.lineage_kind,
                               created_at=_utc(r.created_at), created_by=r.created_by,
                               aliases=sorted(aliases.get(r.version_id, []))) for r in rows]

    def list_aliases(self, workspace: str = DEFAULT_WORKSPACE) -> list[AliasRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(serving_aliases).where(serving_aliases.c.workspace == workspace)
                                .order_by(serving_aliases.c.name)).all()
        return [AliasRecord(workspace=r.workspace, name=r.name, version_id=r.version_id, revision=r.revision,
                            updated_at=_utc(r.updated_at), updated_by=r.updated_by,
                            owner_experiment=r.owner_experiment) for r in rows]

    def history(self, alias: str | None = None, workspace: str | None = DEFAULT_WORKSPACE) -> list[AliasEvent]:
        """Audit rows of one alias (or all) of a workspace (None: every workspace), oldest first."""
        with self.engine.connect() as conn:
            return self._history(conn, alias, workspace)

    def _history(self, conn: Connection, alias: str | None, workspace: str | None) -> list[AliasEvent]:
        q = select(serving_alias_events).order_by(serving_alias_events.c.id)
        if workspace is not None:
            q = q.where(serving_alias_events.c.workspace == workspace)
        if alias is not None:
            q = q.where(serving_alias_events.c.alias == alias)
        return [_event(r) for r in conn.execute(q)]

    def diff(self, a: str, b: str, workspace: str = DEFAULT_WORKSPACE) -> SnapshotDiff:
        """Field-by-field diff of two versions' (or aliases') runtime snapshots."""
        va, vb = self.resolve(a, workspace), self.resolve(b, workspace)
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
            events = self._history(conn, None, None)
            for a in conn.execute(select(serving_aliases)).all():
                mine = [e for e in events if e.alias == a.name and e.workspace == a.workspace]
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
                    for t in (serving_versions, serving_aliases, serving_alias_events, serving_version_workspaces)}


def _alias_stack(events: list[AliasEvent]) -> list[str]:
    stack: list[str] = []
    for e in events:
        if e.action == "rollback" and len(stack) >= 2 and stack[-2] == e.to_version:
            stack.pop()
        else:
            stack.append(e.to_version)
    return stack

