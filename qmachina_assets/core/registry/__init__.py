"""Serving registry (issue items 1–3, 5–7): immutable published versions with runtime snapshot and lineage,
audited aliases, bypass-proof preflight, SQLite or Postgres through SQLAlchemy + Alembic. No Dagster.

    from qmachina_assets.core.registry import Registry
    reg = Registry()                                   # QMACHINA_REGISTRY_URL or {lake}/registry/*.sqlite
    reg.register("configs/serving/vp_flow_score.yaml", alias="live", actor="ops", reason="first cut",
                 expected_version_id=None)                # compare-and-swap: None = a new alias
    reg.promote_run("flow_score_sweep", alias="flow_score_sweep", actor="sensor", reason="passed the gate",
                    expected_version_id=reg.current("flow_score_sweep"))   # the walk-forward's selection
    version = reg.resolve("live")                      # PublishedVersion: .runtime_snapshot, .arrow_schema()
"""

from qmachina_assets.core.registry.lineage import Lineage, RunLineage, lineage_for_register, lineage_from_results
from qmachina_assets.core.registry.preflight import PreflightError, PreflightIssue, preflight
from qmachina_assets.core.registry.registry import (
    ENV_URL,
    AliasConflictError,
    AliasEvent,
    AliasOwnedError,
    AliasRecord,
    ImmutableVersionError,
    PromotionResult,
    PublishedVersion,
    Registry,
    RegistryError,
    RegistryIntegrityError,
    UnknownVersionError,
    VersionSummary,
    default_url,
)
from qmachina_assets.core.registry.snapshot import SnapshotDiff, arrow_schema, diff_snapshots, runtime_snapshot

__all__ = [
    "ENV_URL", "AliasConflictError", "AliasEvent", "AliasOwnedError",
    "AliasRecord", "ImmutableVersionError", "Lineage", "PreflightError", "PreflightIssue",
    "PromotionResult", "PublishedVersion", "Registry", "RegistryError", "RegistryIntegrityError", "RunLineage",
    "SnapshotDiff", "UnknownVersionError", "VersionSummary", "arrow_schema", "default_url", "diff_snapshots",
    "lineage_for_register", "lineage_from_results", "preflight", "runtime_snapshot",
]
