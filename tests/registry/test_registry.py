"""Serving registry on SQLite and on the real Postgres (127.0.0.1:5432): publish/resolve, idempotency, audited
aliases, rollback, diff, every preflight refusal writing nothing, immutability in code and in the database,
migrations, injected failures and crashes, concurrent promotions (compare-and-swap), the walk-forward's selection
as the only promotable set, aliases owned by an experiment, dirty code, the CLI, and reproduce.

Promotions with lineage use a real world: two synthetic days -> bronze -> datasets -> one walk-forward fold
-> the append-only results store (as tests/research/test_sweeps.py)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import uuid
from types import SimpleNamespace

import psycopg2
import pytest
import sqlalchemy as sa

from qmachina_assets.core.engine import silver
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import (
    AliasConflictError,
    AliasOwnedError,
    ImmutableVersionError,
    PreflightError,
    Registry,
    RegistryError,
    RegistryIntegrityError,
    UnknownVersionError,
    commands,
    lineage_for_register,
    lineage_from_results,
)
from qmachina_assets.core.registry import registry as regmod
from qmachina_assets.core.registry.candidates import gate_failures
from qmachina_assets.core.registry.lineage import read_runs
from qmachina_assets.core.registry.models import metadata
from qmachina_assets.core.registry.reproduce import reproduce_version
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.specs import (
    EngineOverrides,
    PromotionGate,
    ScoringConfig,
    StreamFieldSpec,
    resolve_experiment,
)
from tests.support.synth_days import DAYS, build_synth_days, pinned_code

EXPERIMENT = """name: synth_registry
description: two thresholds, walk-forward
serving: synth_flow
eval: {tp_ticks: [4], sl_ticks: [4], max_hold_bins: 600, warmup_bins: 100, cooldown_bins: [20], min_signals: 1}
sweep:
  thresholds: [0.1, 0.2]
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 1, min_hit_rate: 0.0, min_profit_factor: 0.0, max_drawdown_ticks: 100000}
tracking: {backend: none}
"""
EXPERIMENT_B = EXPERIMENT.replace("name: synth_registry", "name: synth_registry_b").replace(
    "thresholds: [0.1, 0.2]", "thresholds: [0.15, 0.3]")
COUNTED = ("serving_versions", "serving_aliases", "serving_alias_events")


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_synth_days(tmp_path_factory.mktemp("registry"))
    root, lake, configs, serving, inst = w.root, w.lake, w.configs, w.serving_text, w.instrument
    (configs / "serving" / "synth_flow_b.yaml").write_text(
        serving.replace("name: synth_flow", "name: synth_flow_b").replace("display_name: ES flow score",
                                                                          "display_name: ES flow score (b)"))
    exp_path = configs / "experiments" / "synth_registry.yaml"
    exp_path.write_text(EXPERIMENT)
    (configs / "experiments" / "synth_registry_b.yaml").write_text(EXPERIMENT_B)
    exp, srv, pipe = resolve_experiment(exp_path)
    exp_b = resolve_experiment(configs / "experiments" / "synth_registry_b.yaml")[0]
    with pinned_code():
        for day in DAYS:
            build_dataset_day(lake, pipe, day)
        rows = {}
        for e in (exp, exp_b):
            table = sweeps.run_fold(lake, e, srv, pipe, sweeps.folds(pipe, e)[0])
            sweeps.append_results(lake, table)
            rows[e.name] = table.to_pylist()
    a = rows[exp.name]
    selected = next(r["run_id"] for r in a if r["selected"])
    other = next(r["run_id"] for r in a if not r["selected"])
    assert all(r["oos_n_trades"] >= 1 for r in a), "both thresholds should trade out of sample"
    assert not gate_failures(lake, exp, read_runs(lake, exp.name, [selected])), "the selection passes the gate"
    return SimpleNamespace(root=root, lake=lake, configs=configs, exp_path=exp_path, exp=exp, exp_b=exp_b,
                           serving=srv, pipeline=pipe, selected=selected, other=other,
                           selected_b=next(r["run_id"] for r in rows[exp_b.name] if r["selected"]),
                           instrument=inst)


def _pg_database(admin_url: str):
    name = f"qm_registry_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    return admin, name, f"{admin_url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"
        return
    admin, name, url = _pg_database(request.getfixturevalue("postgres_url"))
    yield url
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def reg(db_url, world):
    r = Registry(url=db_url, lake=world.lake, instrument=world.instrument)
    yield r
    r.close()


def promote_run(reg, world, run_id=None, alias="live", actor="sensor", reason="passed the gate", exp=None, **kw):
    """Publish an experiment's run(s) (default: experiment A's selection) onto `alias` from where it points now."""
    exp = exp or world.exp
    run_id = run_id or (world.selected if exp is world.exp else world.selected_b)
    lineage, promoted = lineage_from_results(world.lake, exp, world.serving, world.pipeline, run_id)
    kw.setdefault("expected_version_id", reg.current(alias))
    return reg.promote(promoted, alias=alias, lineage=lineage, actor=actor, reason=reason,
                       pipeline=world.pipeline, **kw)


def register(reg, world, name="synth_flow", alias="live", actor="ops", reason="direct"):
    return reg.register(world.configs / "serving" / f"{name}.yaml", alias=alias, actor=actor, reason=reason,
                        expected_version_id=reg.current(alias))


def variant(world, i: int):
    """A valid serving spec differing only in its display name, with its register lineage."""
    spec = world.serving.model_copy(update={"display_name": f"variant {i}"})
    return spec, lineage_for_register(spec, world.pipeline)


# ---- publish, resolve, aliases ---------------------------------------------------------------------


def test_migration_from_empty_to_head(db_url, world):
    engine = regmod.make_engine(db_url)
    assert regmod.current_revision(engine) is None
    assert not sa.inspect(engine).get_table_names()
    with Registry(url=db_url, lake=world.lake, instrument=world.instrument) as r:
        assert regmod.current_revision(r.engine) == "0002_alias_guards"
        assert set(COUNTED) <= set(sa.inspect(r.engine).get_table_names())
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with r.engine.connect() as conn:  # the migration creates exactly the tables of models.py
            ctx = MigrationContext.configure(conn, opts={"version_table": regmod.ALEMBIC_VERSION_TABLE,
                                                         "compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    with Registry(url=db_url, lake=world.lake, instrument=world.instrument) as r:  # re-open: no-op
        assert regmod.current_revision(r.engine) == "0002_alias_guards"
        assert r.count_rows() == dict.fromkeys(COUNTED, 0)
    engine.dispose()


def test_promote_resolve_round_trip(reg, world):
    res = promote_run(reg, world)
    v = res.version
    assert res.created and res.event.from_version is None and res.event.to_version == v.version_id
    assert v.version_id.startswith("sv_") and len(v.version_id) == 19
    assert reg.resolve("live") == v and reg.resolve(v.version_id).version_id == v.version_id
    assert reg.resolve(v.version_id).alias is None
    # the snapshot carries what the stream and the browser need, and what was evaluated
    snap = v.runtime_snapshot
    row = v.lineage.runs[0]
    spec = v.serving_spec()
    assert snap["runtime_config"] == spec.runtime(world.pipeline, world.instrument).to_dict()
    assert snap["runtime_config"]["symbol_root"] == "ES" and snap["instrument"]["dataset"] == "GLBX.MDP3"
    assert snap["signal"]["threshold"] == row.params["threshold"] == spec.threshold
    assert (snap["signal"]["tp_ticks"], snap["signal"]["sl_ticks"], snap["signal"]["cooldown_bins"]) == (4, 4, 20)
    assert snap["gold_config_hash"] == row.gold_config_hash
    assert snap["projection"]["horizons_ms"] == [b * snap["grid"]["cell_width_ms"]
                                                 for b in snap["projection"]["horizons_bins"]]
    assert snap["grid"]["rows"] == 2 * snap["grid"]["radius_ticks"] + 1
    wire = silver.silver_schema()
    assert v.arrow_schema() == wire  # the full allow-list, same types and order as the silver wire schema
    assert snap["stream_schema"][0] == {"name": "k", "dtype": "int32", "role": "grid_index", "arrow_type": "int32"}
    msg = v.runtime_config_message()
    assert msg["type"] == "runtime_config" and msg["serving"]["serving_id"] == v.version_id
    assert msg["serving"]["alias"] == "live" and msg["grid_rows"] == snap["grid"]["rows"]
    assert msg["model_config"]["state_model"]["name"] == "derivative"
    # lineage: datasets, runs with metrics, hashes, code version
    lin = v.lineage
    assert lin.kind == "experiment" and lin.experiment_name == "synth_registry"
    assert lin.dataset_ids == [row.train_dataset_ids[0], row.test_dataset_id]
    assert lin.runs[0].metrics["oos_n_trades"] >= 1 and lin.code_version == row.code_version
    [summary] = reg.list_versions()
    assert summary.version_id == v.version_id and summary.aliases == ["live"]
    with pytest.raises(UnknownVersionError, match="no serving alias or version 'nope'"):
        reg.resolve("nope")


def test_publish_is_idempotent(reg, world):
    first = promote_run(reg, world)
    counts = reg.count_rows()
    again = promote_run(reg, world, reason="sensor fired twice")
    assert (again.created, again.event) == (False, None)
    assert again.version.version_id == first.version.version_id
    assert again.version.created_at == first.version.created_at  # the stored row, not a new one
    assert reg.count_rows() == counts
    lineage, promoted = lineage_from_results(world.lake, world.exp, world.serving, world.pipeline, world.selected)
    later = lineage.model_copy(update={"recorded_at": "1999-01-01T00:00:00+00:00"})  # timestamps are not content
    res = reg.promote(promoted, alias="live", lineage=later, actor="x", reason="y", pipeline=world.pipeline,
                      expected_version_id=first.version.version_id)
    assert (res.version.version_id, res.created) == (first.version.version_id, False)
    other_alias = promote_run(reg, world, alias="canary")
    assert not other_alias.created and other_alias.event.to_version == first.version.version_id
    a = register(reg, world, alias="direct")
    b = register(reg, world, alias="staging")
    assert a.created and not b.created and a.version.version_id == b.version.version_id
    assert reg.count_rows()["serving_versions"] == 2


def test_alias_repoint_audit_and_rollback(reg, world):
    v1 = register(reg, world, actor="alice", reason="first cut").version.version_id
    v2 = register(reg, world, name="synth_flow_b", actor="bob", reason="second").version.version_id
    spec, lin = variant(world, 1)
    v3 = reg.promote(spec, alias="live", lineage=lin, actor="carl", reason="third", pipeline=world.pipeline,
                     expected_version_id=v2).version.version_id
    assert len({v1, v2, v3}) == 3 and reg.resolve("live").version_id == v3
    hist = reg.history("live")
    assert [(e.from_version, e.to_version, e.actor, e.reason, e.action) for e in hist] == [
        (None, v1, "alice", "first cut", "register"), (v1, v2, "bob", "second", "register"),
        (v2, v3, "carl", "third", "promote")]
    assert all(e.at.tzinfo is not None for e in hist) and hist[0].at <= hist[-1].at
    ev = reg.rollback("live", actor="bob", reason="pnl dropped", expected_version_id=v3)
    assert (ev.from_version, ev.to_version, ev.action) == (v3, v2, "rollback")
    ev = reg.rollback("live", actor="bob", reason="still bad", expected_version_id=v2)
    assert (ev.from_version, ev.to_version) == (v2, v1) and reg.resolve("live").version_id == v1
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        reg.rollback("live", actor="bob", reason="again", expected_version_id=v1)
    ev = reg.activate("live", v3, actor="carol", reason="re-enable", expected_version_id=v1)
    assert (ev.from_version, ev.to_version, ev.action, ev.actor) == (v1, v3, "activate", "carol")
    assert reg.activate("live", v3, actor="carol", reason="twice", expected_version_id=v3) is None  # no audit row
    ev = reg.rollback("live", actor="bob", reason="undo the activation", expected_version_id=v3)
    assert ev.to_version == v1
    assert [a.revision for a in reg.list_aliases()] == [len(reg.history("live"))]
    assert reg.verify() == []
    counts = reg.count_rows()
    with pytest.raises(UnknownVersionError):
        reg.activate("live", "sv_0000000000000000", actor="carol", reason="typo", expected_version_id=v1)
    with pytest.raises(RegistryError, match="reserved for version ids"):
        reg.activate("sv_live", v1, actor="carol", reason="bad name", expected_version_id=None)
    with pytest.raises(RegistryError, match="alias 'Live!'"):
        reg.activate("Live!", v1, actor="carol", reason="bad name", expected_version_id=None)
    with pytest.raises(RegistryError, match="reason: required"):
        reg.activate("live", v2, actor="carol", reason=" ", expected_version_id=v1)
    with pytest.raises(UnknownVersionError, match="no alias 'ghost'"):
        reg.rollback("ghost", actor="bob", reason="nothing there", expected_version_id=None)
    # compare-and-swap: a writer that read an older state gets a conflict and changes nothing
    with pytest.raises(AliasConflictError, match=r"points at .* not at the expected"):
        reg.activate("live", v2, actor="x", reason="stale", expected_version_id=v3)
    with pytest.raises(AliasConflictError, match="not at the expected nothing"):
        reg.activate("live", v2, actor="x", reason="stale", expected_version_id=None)
    with pytest.raises(AliasConflictError):
        reg.rollback("live", actor="x", reason="stale", expected_version_id=v2)
    with pytest.raises(AliasConflictError):
        reg.register(world.configs / "serving" / "synth_flow_b.yaml", alias="live", actor="x", reason="stale",
                     expected_version_id=v3)
    with pytest.raises(AliasConflictError):
        reg.promote(variant(world, 2)[0], alias="live", lineage=variant(world, 2)[1], actor="x", reason="stale",
                    pipeline=world.pipeline, expected_version_id=v3)
    assert reg.count_rows() == counts and reg.resolve("live").version_id == v1


def test_diff_of_two_versions(reg, world):
    a = promote_run(reg, world).version
    b = promote_run(reg, world, exp=world.exp_b, alias="b").version
    d = reg.diff(a.version_id, b.version_id)
    assert (d.version_a, d.version_b) == (a.version_id, b.version_id)
    assert set(d.changed) >= {"signal.threshold", "serving.spec_hash"}
    assert d.changed["signal.threshold"].a == a.runtime_snapshot["signal"]["threshold"]
    assert not d.added and not d.removed and d.unchanged_count > 100
    assert d.summary == (f"{a.version_id} vs {b.version_id}: 0 added, 0 removed, {len(d.changed)} changed, "
                         f"{d.unchanged_count} unchanged")
    as_json = json.loads(d.model_dump_json())
    assert as_json["changed"]["signal.threshold"] == {"a": a.runtime_snapshot["signal"]["threshold"],
                                                      "b": b.runtime_snapshot["signal"]["threshold"]}
    assert reg.diff("b", b.version_id).identical
    # keyed lists: a dropped stream field is one removed key group, not a shifted list
    r = register(reg, world, alias="direct").version
    fewer = world.serving.model_copy(update={"stream_schema": [f for f in world.serving.stream_schema
                                                               if f.name != "chase_down_flag"]})
    c = reg.promote(fewer, alias="other", lineage=lineage_for_register(fewer, world.pipeline), actor="t",
                    reason="fewer fields", pipeline=world.pipeline, expected_version_id=None).version
    d2 = reg.diff(r.version_id, c.version_id)
    assert set(d2.removed) == {"stream_schema[chase_down_flag].arrow_type", "stream_schema[chase_down_flag].dtype",
                               "stream_schema[chase_down_flag].name", "stream_schema[chase_down_flag].role"}
    assert "stream_schema#order" in d2.changed


# ---- the walk-forward's selection, owned aliases, dirty code ----------------------------------------


def test_only_the_walk_forward_selection_is_promoted(reg, world):
    register(reg, world)
    before = reg.count_rows()
    # the set the walk-forward did not select is refused on every path, naming what was selected
    err = _refused(reg, {"selection"}, "is not the walk-forward's selection", promote_run, reg, world, world.other)
    assert world.selected in str(err) and "highest in-sample total pnl" in str(err)
    err = _refused(reg, {"selection"}, "is not the walk-forward's selection", reg.promote_run, world.exp_path,
                   [world.other], alias="live", actor="t", reason="r", expected_version_id=reg.current("live"))
    # a forged `selected` flag in the lineage is caught against the store as well
    lineage, promoted = lineage_from_results(world.lake, world.exp, world.serving, world.pipeline, world.other)
    forged = lineage.model_copy(update={"runs": [lineage.runs[0].model_copy(update={"selected": True})]})
    err = _refused(reg, {"selection", "lineage"}, "not the walk-forward's selection", reg.promote, promoted,
                   alias="live", lineage=forged, actor="t", reason="r", pipeline=world.pipeline,
                   expected_version_id=reg.current("live"))
    # another experiment's selection as the evidence of this one: not this experiment's walk-forward
    err = _refused(reg, {"lineage"}, "not found in the results of experiment 'synth_registry'", reg.promote_run,
                   world.exp_path, [world.selected_b], alias="live", actor="t", reason="r",
                   expected_version_id=reg.current("live"))
    assert reg.count_rows() == before
    # without run ids, promote_run takes the candidate: the selection of every fold
    res = reg.promote_run(world.exp_path, alias="champ", actor="t", reason="r", expected_version_id=None)
    assert [r.run_id for r in res.version.lineage.runs] == [world.selected]
    assert res.version.lineage.runs[0].selected and res.version.serving_spec().threshold == \
        res.version.lineage.runs[0].params["threshold"]


def test_an_owned_alias_accepts_only_its_experiments_gated_versions(world, tmp_path):
    with Registry(url=f"sqlite:///{tmp_path / 'o.sqlite'}", lake=world.lake, instrument=world.instrument,
                  configs_dir=world.configs) as reg:
        champ = promote_run(reg, world, alias="champ").version.version_id
        assert reg.list_aliases()[0].owner_experiment == "synth_registry"  # the first promotion claimed it
        direct = register(reg, world, alias="direct").version.version_id
        b = promote_run(reg, world, exp=world.exp_b, alias="b").version.version_id
        before = reg.count_rows()
        with pytest.raises(AliasOwnedError, match=r"owned by experiment 'synth_registry'.*registered directly"):
            register(reg, world, alias="champ")
        with pytest.raises(AliasOwnedError, match="registered directly"):
            reg.activate("champ", direct, actor="t", reason="r", expected_version_id=champ)
        with pytest.raises(AliasOwnedError, match="from experiment 'synth_registry_b'"):
            reg.activate("champ", b, actor="t", reason="r", expected_version_id=champ)
        with pytest.raises(AliasOwnedError, match="from experiment 'synth_registry_b'"):
            promote_run(reg, world, exp=world.exp_b, alias="champ")
        # an alias named after an experiment (the promotion sensor's) is owned before it exists
        with pytest.raises(AliasOwnedError, match="owned by experiment 'synth_registry_b'"):
            register(reg, world, alias="synth_registry_b")
        with pytest.raises(AliasOwnedError, match="owned by experiment 'synth_registry'"):
            reg.activate("synth_registry", direct, actor="t", reason="r", expected_version_id=None)
        assert reg.count_rows() == before
        # its own experiment's version goes through, and so does a rollback to an earlier gated version
        assert reg.activate("synth_registry", champ, actor="t", reason="r", expected_version_id=None) is not None
        # an alias that once held a register version and then a gated one cannot be rolled back to the former
        reg.activate("mixed", direct, actor="t", reason="r", expected_version_id=None)
        promote_run(reg, world, alias="mixed")
        with pytest.raises(AliasOwnedError, match="registered directly"):
            reg.rollback("mixed", actor="t", reason="r", expected_version_id=champ)
        assert reg.resolve("mixed").version_id == champ and reg.verify() == []


def test_dirty_code_is_refused_unless_allowed_and_reproduce_names_it(world, tmp_path):
    dirty_exp = world.exp_path.parent / "synth_registry_dirty.yaml"
    dirty_exp.write_text(EXPERIMENT.replace("name: synth_registry", "name: synth_registry_dirty"))
    exp, srv, pipe = resolve_experiment(dirty_exp)
    with pinned_code(dirty=True, diff="ab" * 32):
        table = sweeps.run_fold(world.lake, exp, srv, pipe, sweeps.folds(pipe, exp)[0])
    sweeps.append_results(world.lake, table)
    row = next(r for r in table.to_pylist() if r["selected"])
    assert row["code_dirty"] is True and row["code_diff_sha256"] == "ab" * 32
    with Registry(url=f"sqlite:///{tmp_path / 'd.sqlite'}", lake=world.lake, instrument=world.instrument) as reg:
        err = _refused(reg, {"code_version"}, "uncommitted changes", reg.promote_run, dirty_exp, alias="dirty",
                       actor="t", reason="r", expected_version_id=None)
        assert "abababababababab" in str(err) and "allow_dirty" in str(err)
        res = reg.promote_run(dirty_exp, alias="dirty", actor="t", reason="r", expected_version_id=None,
                              allow_dirty=True)
        assert res.event.dirty_allowed and reg.history("dirty")[-1].dirty_allowed
        assert res.version.lineage.code_dirty and res.version.lineage.runs[0].code_diff_sha256 == "ab" * 32
        # reproduce from a clean checkout: the figures are compared and a mismatch is blamed on the code
        run = res.version.lineage.runs[0]
        forged = res.version.model_copy(update={"lineage": res.version.lineage.model_copy(update={"runs": [
            run.model_copy(update={"metrics": {**run.metrics, "oos_hit_rate": 0.123456}})]})})
        with pinned_code():
            report = reproduce_version(forged, world.lake, rebuild=False)
        assert not report.match and report.cause is not None and "code mismatch" in report.cause
        assert "uncommitted changes" in report.cause and "cause:" in report.text()
        with pinned_code(dirty=True, diff="ab" * 32):  # the same code: the cause is not the code
            report = reproduce_version(forged, world.lake, rebuild=False)
        assert not report.match and "code mismatch" not in (report.cause or "")


# ---- preflight -------------------------------------------------------------------------------------


def _refused(reg, kinds: set[str], match: str, fn, *args, **kw) -> PreflightError:
    before = reg.count_rows()
    with pytest.raises(PreflightError) as info:
        fn(*args, **kw)
    err = info.value
    assert kinds <= err.kinds, err
    assert any(match in i.message for i in err.issues if i.kind in kinds), err
    assert reg.count_rows() == before  # nothing written
    return err


def test_preflight_refusals_write_nothing(reg, world, tmp_path):
    register(reg, world)  # a non-empty registry, so "nothing written" is visible
    srv, pipe = world.serving, world.pipeline

    def direct(spec, target=None, **kw):
        lineage = kw.pop("lineage", None) or lineage_for_register(spec, pipe)
        return (target or reg).promote(spec, alias="live", lineage=lineage, actor="t", reason="r", pipeline=pipe,
                                       expected_version_id=reg.current("live"), **kw)

    # unknown model id
    err = _refused(reg, {"model_id"}, "unknown model 'mystery'", direct, srv.model_copy(update={"model_id": "mystery"}))
    assert err.kinds == {"model_id"}
    # a field outside the silver allow-list; a field with another dtype than the Arrow wire schema
    bad = [*srv.stream_schema, StreamFieldSpec.model_construct(name="composite", dtype="float64", role="force")]
    _refused(reg, {"stream_schema"}, "'composite' is not in the silver allow-list", direct,
             srv.model_copy(update={"stream_schema": bad}))
    bad = [StreamFieldSpec.model_construct(name="k", dtype="int64", role="grid_index"), *srv.stream_schema[1:]]
    _refused(reg, {"stream_schema"}, "k is Arrow int32 in the silver schema, the spec says int64", direct,
             srv.model_copy(update={"stream_schema": bad}))
    # a gold config that does not validate
    scoring = ScoringConfig.model_construct(**{**srv.scoring.model_dump(), "neutral_threshold": 1.5})
    err = _refused(reg, {"gold_config"}, "scoring.neutral_threshold", direct,
                   srv.model_copy(update={"scoring": scoring}))
    assert err.kinds == {"gold_config"}
    bad_pipe = pipe.model_copy(update={"engine": EngineOverrides(flow_windows=[5, 10], flow_rollup_weights=[1.0])})
    err = _refused(reg, {"gold_config"}, "engine.flow_rollup_weights", reg.promote, srv, alias="live",
                   lineage=lineage_for_register(srv, bad_pipe), actor="t", reason="r", pipeline=bad_pipe,
                   expected_version_id=reg.current("live"))
    assert err.kinds == {"gold_config"}
    # another instrument than the lock
    nq = InstrumentConfig.model_validate({**world.instrument.model_dump(), "symbol_root": "NQ", "symbol": "NQH4"})
    with Registry(url=reg.url, lake=world.lake, instrument=nq) as other:
        _refused(other, {"instrument"}, "'ESH4' is not an outright contract of the locked root 'NQ'", direct, srv,
                 target=other)
        err = _refused(other, {"instrument"}, "locked root 'NQ'", other.register,
                       world.configs / "serving" / "synth_flow.yaml", alias="live", actor="t", reason="r",
                       expected_version_id=reg.current("live"))
        # an alias cannot be pointed at a stored version of another instrument either
        stored = reg.resolve("live").version_id
        _refused(other, {"instrument"}, "symbol_root: the version has 'ES', the instrument lock 'NQ'",
                 other.activate, "other", stored, actor="t", reason="r", expected_version_id=None)
    # a code version that cannot be resolved
    for code, match in (("unknown", "cannot be resolved"), ("0" * 40, "is not a commit of this checkout")):
        err = _refused(reg, {"code_version"}, match, direct, srv,
                       lineage=lineage_for_register(srv, pipe, code_version=code))
        assert err.kinds == {"code_version"}
    # metrics below the caller's gate, and a register lineage cannot carry a gate
    strict = PromotionGate(min_oos_trades=10**6, min_hit_rate=0.99, min_profit_factor=50, max_drawdown_ticks=0.001)
    err = _refused(reg, {"gate"}, "oos_n_trades", promote_run, reg, world, gate=strict)
    assert err.kinds == {"gate"} and len(err.issues) == 4
    _refused(reg, {"gate"}, "needs experiment runs", direct, srv, gate=strict)
    # the experiment's own gate applies even when the caller passes none
    lineage, promoted = lineage_from_results(world.lake, world.exp, srv, pipe, world.selected)
    tight_exp = lineage.experiment | {"promotion": strict.model_dump()}
    forged = lineage.model_copy(update={"experiment": tight_exp})
    cur = reg.current("live")
    _refused(reg, {"gate"}, "promotion gate of experiment", reg.promote, promoted, alias="live", lineage=forged,
             actor="t", reason="r", expected_version_id=cur)
    # lineage: metrics that are not the recorded ones; the base spec instead of the evaluated one
    run = lineage.runs[0]
    fake = run.model_copy(update={"metrics": {**run.metrics, "oos_total_pnl_ticks": 1e9}})
    _refused(reg, {"lineage"}, "differs from the results store", reg.promote, promoted, alias="live",
             lineage=lineage.model_copy(update={"runs": [fake]}), actor="t", reason="r", expected_version_id=cur)
    base_lin = lineage.model_copy(update={"serving_spec_hash": srv.spec_hash})
    _refused(reg, {"lineage"}, "is not the evaluated one", reg.promote, srv, alias="live", lineage=base_lin,
             actor="t", reason="r", expected_version_id=cur)
    # datasets: missing from the lake; modified after it was built
    gone = run.model_copy(update={"test_dataset_id": run.test_dataset_id + "x"})
    _refused(reg, {"dataset"}, "not found in the lake", reg.promote, promoted, alias="live",
             lineage=lineage.model_copy(update={"runs": [gone]}), actor="t", reason="r", expected_version_id=cur)
    lake2 = tmp_path / "lake2"
    shutil.copytree(world.lake / "research", lake2 / "research")
    grid = lake2 / "research" / "datasets" / run.test_dataset_id / "grid.parquet"
    grid.write_bytes(grid.read_bytes()[:-100] + bytes(100))
    with Registry(url=reg.url, lake=lake2, instrument=world.instrument) as other:
        _refused(other, {"dataset"}, "fails its checksums: grid.parquet: sha256", other.promote, promoted,
                 alias="live", lineage=lineage, actor="t", reason="r", expected_version_id=cur)
    # a broken YAML through register
    broken = world.configs / "serving" / "broken.yaml"
    broken.write_text((world.configs / "serving" / "synth_flow.yaml").read_text().replace("name: synth_flow",
                                                                                         "name: broken")
                      .replace("dtype: int32, role: grid_index", "dtype: int64, role: grid_index"))
    _refused(reg, {"spec"}, "k is int32 in silver, not int64", reg.register, broken, alias="live", actor="t",
             reason="r", expected_version_id=cur)
    assert reg.resolve("live").lineage.kind == "register" and len(reg.history("live")) == 1


# ---- immutability, atomicity, concurrency ----------------------------------------------------------


def test_versions_are_immutable_in_code_and_in_the_database(reg, world, db_url):
    v = register(reg, world).version
    promote_run(reg, world)
    assert not [m for m in dir(Registry) if any(w in m.lower() for w in ("delete", "remove", "update", "edit"))]
    before = reg.count_rows()
    # code level: the registry's engine refuses the statements before they reach the database
    for stmt in ("UPDATE serving_versions SET created_by = 'x'", "DELETE FROM serving_versions",
                 "delete from serving_alias_events", 'UPDATE "serving_versions" SET payload = \'{}\''):
        with pytest.raises(ImmutableVersionError, match="append-only"), reg.engine.begin() as conn:
            conn.exec_driver_sql(stmt)
    with pytest.raises(ImmutableVersionError), reg.engine.begin() as conn:
        conn.execute(sa.delete(regmod.serving_versions).where(regmod.serving_versions.c.version_id == v.version_id))
    # database level: a plain engine without the guard is refused by the triggers
    raw = sa.create_engine(regmod.normalize_url(db_url))
    for stmt in ("UPDATE serving_versions SET created_by = 'x'", "DELETE FROM serving_versions",
                 "UPDATE serving_alias_events SET reason = 'rewritten'", "DELETE FROM serving_alias_events"):
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), raw.begin() as conn:
            conn.exec_driver_sql(stmt)
    if raw.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), raw.begin() as conn:
            conn.exec_driver_sql("TRUNCATE serving_versions CASCADE")
    assert reg.count_rows() == before
    assert reg.resolve(v.version_id).model_dump(exclude={"alias"}) == v.model_dump(exclude={"alias"})
    # with the trigger dropped by hand, a rewritten payload is still caught on read (the id is its content)
    with raw.begin() as conn:
        if raw.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE serving_versions DISABLE TRIGGER serving_versions_append_only")
        else:
            conn.exec_driver_sql("DROP TRIGGER serving_versions_no_update")
        conn.exec_driver_sql("UPDATE serving_versions SET payload = replace(payload, 'ES flow score', 'tampered') "
                             f"WHERE version_id = '{v.version_id}'")
    with pytest.raises(RegistryIntegrityError, match="modified outside the registry"):
        reg.resolve(v.version_id)
    assert any(v.version_id in p for p in reg.verify())
    raw.dispose()


def test_failure_between_version_insert_and_repoint_rolls_back_both(reg, world, monkeypatch):
    v1 = register(reg, world).version.version_id
    before = reg.count_rows()
    inserted = []
    original = Registry._insert_version

    def insert_then_note(self, conn, version_id, *a, **kw):
        created = original(self, conn, version_id, *a, **kw)
        inserted.append((version_id, created))
        return created

    def fail(*a, **kw):
        raise RuntimeError("injected: crash between version insert and alias repoint")

    monkeypatch.setattr(Registry, "_insert_version", insert_then_note)
    monkeypatch.setattr(Registry, "_repoint", fail)
    with pytest.raises(RuntimeError, match="injected"):
        promote_run(reg, world)
    assert inserted and inserted[0][1] is True  # the row was written inside the transaction ...
    assert reg.count_rows() == before  # ... and rolled back with it
    assert reg.resolve("live").version_id == v1 and reg.verify() == []
    monkeypatch.undo()
    res = promote_run(reg, world)  # the same promotion succeeds afterwards
    assert res.created and res.event.from_version == v1


CRASH_SCRIPT = """
import os, sys
from qmachina_assets.core.registry import Registry
from qmachina_assets.core.registry import registry as regmod
original = regmod.Registry._insert_version
def insert_then_die(self, conn, *a, **kw):
    original(self, conn, *a, **kw)
    os._exit(17)  # the process dies after the insert, before the alias repoint and the commit
regmod.Registry._insert_version = insert_then_die
reg = Registry(url=sys.argv[1], lake=sys.argv[2])
reg.register(sys.argv[3], alias="live", actor="crash", reason="dies mid-transaction",
             expected_version_id=reg.current("live"))
"""


def test_process_crash_mid_promotion_leaves_the_old_state(reg, world):
    v1 = register(reg, world).version.version_id
    before = reg.count_rows()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_SCRIPT), reg.url, str(world.lake),
                           str(world.configs / "serving" / "synth_flow_b.yaml")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    with Registry(url=reg.url, lake=world.lake, instrument=world.instrument) as fresh:
        assert fresh.count_rows() == before
        assert fresh.resolve("live").version_id == v1 and fresh.verify() == []
        res = fresh.register(world.configs / "serving" / "synth_flow_b.yaml", alias="live", actor="t", reason="r",
                             expected_version_id=v1)
        assert res.created and res.event.from_version == v1


def _race(reg, jobs, *, inside_transaction: bool, monkeypatch) -> list:
    """Run `jobs` (callables) in threads released together; with `inside_transaction`, each thread has
    its transaction open before any of them asks for the alias lock (Postgres)."""
    barrier = threading.Barrier(len(jobs), timeout=60)
    if inside_transaction:
        original = Registry._lock_alias

        def lock_after_barrier(self, conn, alias):
            conn.exec_driver_sql("SELECT txid_current()")  # the transaction is really open
            barrier.wait()
            original(self, conn, alias)

        monkeypatch.setattr(Registry, "_lock_alias", lock_after_barrier)
    results: list = [None] * len(jobs)

    def work(i):
        try:
            if not inside_transaction:
                barrier.wait()
            results[i] = jobs[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    monkeypatch.undo()
    return results


def _assert_consistent(reg, alias: str, n_events: int) -> None:
    events = reg.history(alias)
    assert len(events) == n_events
    assert reg.resolve(alias).version_id == events[-1].to_version
    assert events[0].from_version is None
    assert all(b.from_version == a.to_version for a, b in itertools.pairwise(events))
    assert reg.verify() == []


def _retrying(reg, spec, lin, alias: str):
    """A writer that re-reads the alias after each conflict (what a client does with a 409)."""
    for _ in range(50):
        try:
            return reg.promote(spec, alias=alias, lineage=lin, actor="t", reason="race", pipeline=lin.pipeline_spec(),
                               expected_version_id=reg.current(alias))
        except AliasConflictError:
            continue
    raise AssertionError("no progress after 50 conflicts")


def test_concurrent_promotions_to_one_alias(reg, world, monkeypatch):
    # two writers that read the same (absent) alias: one wins, the other gets a conflict and writes nothing
    specs = [variant(world, i) for i in range(2)]
    jobs = [lambda s=s, lin=lin: reg.promote(s, alias="live", lineage=lin, actor=f"t{s.display_name}",
                                             reason="race", pipeline=world.pipeline, expected_version_id=None)
            for s, lin in specs]
    results = _race(reg, jobs, inside_transaction=reg.dialect == "postgresql", monkeypatch=monkeypatch)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], AliasConflictError), results
    assert won[0].created and reg.count_rows()["serving_versions"] == 1  # the loser's insert rolled back
    _assert_consistent(reg, "live", 1)
    # many writers that retry on conflict: the audit stays one unbroken chain, every write lands once
    more = [variant(world, i) for i in range(2, 8)]
    jobs = [lambda s=s, lin=lin: _retrying(reg, s, lin, "live") for s, lin in more]
    results = _race(reg, jobs, inside_transaction=False, monkeypatch=monkeypatch)
    assert not [r for r in results if isinstance(r, BaseException)], results
    _assert_consistent(reg, "live", 7)
    # the same new content raced through two aliases: one version row, both aliases on it
    spec, lin = variant(world, 99)
    jobs = [lambda a=a: reg.promote(spec, alias=a, lineage=lin, actor="t", reason="same content",
                                    pipeline=world.pipeline, expected_version_id=None) for a in ("blue", "green")]
    results = _race(reg, jobs, inside_transaction=reg.dialect == "postgresql", monkeypatch=monkeypatch)
    assert sorted(r.created for r in results) == [False, True]
    assert reg.resolve("blue").version_id == reg.resolve("green").version_id
    assert reg.count_rows()["serving_versions"] == 8


# ---- CLI, configuration, reproduce -----------------------------------------------------------------


def test_cli_commands(world, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    base = ["--url", url, "--lake", str(world.lake)]

    def cli(*argv: str) -> tuple[int, str]:
        code = commands.main(["serving", *argv[:1], *base, *argv[1:]])
        out = capsys.readouterr()
        return code, out.out + out.err

    code, out = cli("register", str(world.configs / "serving" / "synth_flow.yaml"), "--alias", "live",
                    "--reason", "first", "--actor", "ops", "--json")
    assert code == 0
    v1 = json.loads(out)["version"]["version_id"]
    code, out = cli("register", str(world.configs / "serving" / "synth_flow_b.yaml"), "--alias", "live",
                    "--reason", "second", "--expect", v1)
    assert code == 0
    v3 = out.split()[1]
    code, out = cli("promote", str(world.exp_path), world.other, "--alias", "champ", "--reason", "best oos")
    assert code == 1 and "[selection]" in out and f"selected run {world.selected}" in out
    code, out = cli("promote", str(world.exp_path), world.selected, "--alias", "champ", "--reason", "gate passed")
    assert code == 0 and "published sv_" in out and "[promote] by cli:" in out
    v2 = out.split()[1]
    code, out = cli("promote", str(world.exp_path), "--alias", "champ", "--reason", "the candidate")
    assert code == 0 and out.startswith(f"already published {v2}")  # no run ids: the walk-forward's selection
    code, out = cli("list", "--json")
    listed = json.loads(out)
    assert {v["version_id"] for v in listed["versions"]} == {v1, v2, v3}
    assert {a["name"]: a["owner_experiment"] for a in listed["aliases"]} == {"champ": "synth_registry", "live": None}
    code, out = cli("show", "champ")
    assert code == 0 and v2 in out and "experiment synth_registry" in out
    code, out = cli("diff", v1, v2, "--json")
    assert code == 0 and json.loads(out)["version_b"] == v2
    code, out = cli("diff", v1, v2)
    assert out.startswith(f"{v1} vs {v2}:") and "~ signal.threshold" in out
    code, out = cli("rollback", "live", "--reason", "bad pnl", "--expect", v1)
    assert code == 1 and "not at the expected" in out  # compare-and-swap: live points at v3
    code, out = cli("rollback", "live", "--reason", "bad pnl")
    assert code == 0 and f"{v3} -> {v1} [rollback]" in out
    code, out = cli("activate", "live", v2, "--reason", "fixed", "--json")
    assert json.loads(out)["to_version"] == v2
    code, out = cli("history", "live", "--json")
    assert [e["action"] for e in json.loads(out)] == ["register", "register", "rollback", "activate"]
    code, out = cli("register", str(world.configs / "serving" / "synth_flow.yaml"), "--alias", "champ",
                    "--reason", "bypass")
    assert code == 1 and "owned by experiment 'synth_registry'" in out
    code, out = cli("verify")
    assert code == 0 and "registry verified" in out
    bad = world.configs / "serving" / "cli_bad.yaml"
    bad.write_text((world.configs / "serving" / "synth_flow.yaml").read_text().replace("name: synth_flow",
                                                                                      "name: cli_bad")
                   .replace("model_id: vacuum_pressure", "model_id: mystery"))
    code, out = cli("register", str(bad), "--alias", "live", "--reason", "x")
    assert code == 1 and "refused" in out and "[spec]" in out and "model_id" in out
    code, out = cli("rollback", "ghost", "--reason", "x")
    assert code == 1 and "no alias 'ghost'" in out


def test_default_location_env_override_and_no_dagster(tmp_path, monkeypatch, world):
    monkeypatch.delenv(regmod.ENV_URL, raising=False)
    with Registry(lake=tmp_path / "lake", instrument=world.instrument) as r:
        assert r.url == f"sqlite:///{tmp_path / 'lake' / 'registry' / 'serving_registry.sqlite'}"
    monkeypatch.setenv(regmod.ENV_URL, f"sqlite:///{tmp_path / 'env.sqlite'}")
    with Registry(lake=tmp_path / "lake", instrument=world.instrument) as r:
        assert r.url.endswith("env.sqlite") and (tmp_path / "env.sqlite").is_file()
    assert regmod.normalize_url("postgresql://u@h:5432/db") == "postgresql+psycopg2://u@h:5432/db"
    code = "import sys, qmachina_assets.core.registry as r; r.Registry; assert 'dagster' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert proc.returncode == 0, proc.stderr


def test_reproduce_rebuilds_and_matches_exactly(world, tmp_path):
    with Registry(url=f"sqlite:///{tmp_path / 'r.sqlite'}", lake=world.lake, instrument=world.instrument) as reg:
        v = promote_run(reg, world).version
        with pinned_code():
            report = reproduce_version(reg.resolve(v.version_id), reg.lake)
        assert report.match, report.text()
        assert report.rebuilt and len(report.datasets) == 2 and len(report.runs) == 1
        assert all(d.rebuilt_id == d.dataset_id and not d.files for d in report.datasets)
        assert report.runs[0].reproduced == report.runs[0].recorded
        assert not list((world.lake / "tmp").iterdir())  # the scratch lake is gone
        # a recorded metric that the evaluation does not give is reported, field by field
        run = v.lineage.runs[0]
        forged = v.model_copy(update={"lineage": v.lineage.model_copy(update={"runs": [run.model_copy(
            update={"metrics": {**run.metrics, "oos_hit_rate": 0.123456}})]})})
        with pinned_code():
            bad = reproduce_version(forged, world.lake, rebuild=False)
        assert not bad.match and set(bad.runs[0].mismatches) == {"oos_hit_rate"}
        assert "code mismatch" not in bad.cause and "same code" in bad.cause
        assert bad.runs[0].mismatches["oos_hit_rate"].recorded == 0.123456
        r = register(reg, world, alias="direct").version
        with pytest.raises(RegistryError, match="registered directly"):
            reproduce_version(reg.resolve(r.version_id), reg.lake)
