"""An ML version carries its fitted model (issue 14 item 4): promotion fits the walk-forward's latest fold and
stores the model content-addressed in the lake, the preflight's `artifact` rule refuses a version without it
or with an altered file (a direct `register` of an ML spec included), the loaded model scores the test day as
the sweep's fitted signal did, the stream (`served_signal`) scores with it bin for bin as the batch does, and
`reproduce` refits it and compares.

World: the two synthetic days of tests/support/synth_days.py, a gbm_mf serving spec (15 boosting rounds) and a
one-fold walk-forward over two thresholds."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from qmachina_assets.core.registry import PreflightError, Registry, lineage_from_results
from qmachina_assets.core.registry.reproduce import check_model, reproduce_version
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research import model_artifact, sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.online_sim import OnlineSignal, signal_lookback
from qmachina_assets.core.research.served_signal import MLSignalUnavailable, SignalSetup, SignalStream
from qmachina_assets.core.research.signals.base import LabelSpec
from qmachina_assets.core.research.specs import apply_params, resolve_experiment
from tests.support.synth_days import DAYS, build_synth_days, pinned_code

SIGNAL = "signal:\n  name: gbm_mf\n  params: {max_rounds: 15, min_train_rows: 300, slope_window: 20}"
EXPERIMENT = """name: synth_gbm
description: gbm_mf, two thresholds, walk-forward
serving: synth_gbm
eval: {tp_ticks: [4], sl_ticks: [4], max_hold_bins: 300, warmup_bins: 100, cooldown_bins: [20], min_signals: 1}
sweep:
  thresholds: [0.1, 0.2]
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 1, min_hit_rate: 0.0, min_profit_factor: 0.0, max_drawdown_ticks: 100000}
tracking: {backend: none}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_synth_days(tmp_path_factory.mktemp("mlart"))
    serving = w.serving_text.replace("name: synth_flow", "name: synth_gbm").replace(
        "signal:\n  name: flow_score", SIGNAL)
    assert "gbm_mf" in serving
    (w.configs / "serving" / "synth_gbm.yaml").write_text(serving)
    exp_path = w.configs / "experiments" / "synth_gbm.yaml"
    exp_path.write_text(EXPERIMENT)
    exp, srv, pipe = resolve_experiment(exp_path)
    fold = sweeps.folds(pipe, exp)[0]
    with pinned_code():
        for day in DAYS:
            build_dataset_day(w.lake, pipe, day)
        table = sweeps.run_fold(w.lake, exp, srv, pipe, fold)
        sweeps.append_results(w.lake, table)
    rows = table.to_pylist()
    selected = next(r for r in rows if r["selected"])
    reg = Registry(url=f"sqlite:///{w.root / 'registry.sqlite'}", lake=w.lake, instrument=w.instrument,
                   configs_dir=w.configs)
    with pinned_code():
        t0 = time.perf_counter()
        result = reg.promote_run("synth_gbm", alias="gbm", actor="test", reason="ML winner",
                                 expected_version_id=None)
        promote_seconds = time.perf_counter() - t0
    yield SimpleNamespace(w=w, lake=w.lake, exp=exp, serving=srv, pipeline=pipe, fold=fold, selected=selected,
                          reg=reg, version=result.version, fit_seconds=reg.last_fit_seconds,
                          promote_seconds=promote_seconds)
    reg.close()


def _sweep_signal(world):
    """The selected set's signal fitted as the sweep fitted it, and its test-day scores (`fit_and_score`)."""
    applied = apply_params(world.serving, json.loads(world.selected["params_json"]))
    runtime = world.pipeline.runtime()
    label = LabelSpec(applied.tp_ticks, applied.sl_ticks, world.exp.eval.max_hold_bins, runtime.tick_size)
    srcs = [sweeps.DayData(world.lake, [ds], runtime.grid_radius_ticks, runtime.tick_int)
            for ds in (world.selected["train_dataset_ids"], world.selected["test_dataset_id"])]
    out = sweeps.fit_and_score(applied, world.pipeline, label, *srcs, world.pipeline.gold_config().config_hash)
    return applied, out["oos"]


def test_promotion_stores_the_fitted_model_and_it_scores_as_the_sweep(world):
    entry = world.version.runtime_snapshot["model"]
    path = world.lake / entry["path"]
    assert entry["path"] == f"registry/models/{entry['sha256']}.pkl" and path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"] and path.stat().st_size == entry["bytes"]
    assert entry["signal"] == "gbm_mf" and entry["params"]["max_rounds"] == 15
    assert entry["train_days"] == [DAYS[0].isoformat()] == world.version.lineage.runs[-1].train_dates
    assert entry["train_dataset_ids"] == [world.selected["train_dataset_ids"]]
    assert entry["labels"] == {"tp_ticks": 4.0, "sl_ticks": 4.0, "max_hold_bins": 300, "tick_size": 0.25}
    assert entry["libs"]["lightgbm"] and entry["libs"]["sklearn"] and entry["libs"]["numpy"]
    assert world.fit_seconds is not None and world.fit_seconds > 0
    print(f"\nmodel {entry['bytes']} bytes, fit {world.fit_seconds:.2f} s, promote_run {world.promote_seconds:.2f} s")

    # the loaded model scores the test day exactly as the sweep's fitted signal did
    _, (oos, test) = _sweep_signal(world)
    loaded = model_artifact.load_snapshot_model(world.lake, world.version.runtime_snapshot)
    got = loaded.score(test)
    assert np.isfinite(oos).sum() > 1000
    np.testing.assert_array_equal(got, oos)
    # the version is content-derived: the same promotion refits to the same bytes and publishes nothing new
    with pinned_code():
        again = world.reg.promote_run("synth_gbm", alias="gbm", actor="test", reason="again",
                                      expected_version_id=world.version.version_id)
    assert again.version.version_id == world.version.version_id and not again.created and again.event is None


def test_an_altered_or_missing_model_is_refused_naming_the_rule_and_the_file(world, tmp_path):
    v = world.version
    entry = v.runtime_snapshot["model"]
    path = world.lake / entry["path"]
    lineage, promoted = lineage_from_results(world.lake, world.exp, world.serving, world.pipeline,
                                             [r.run_id for r in v.lineage.runs])
    keep = tmp_path / "model.pkl"
    shutil.copy2(path, keep)
    before = world.reg.count_rows()
    try:
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # one byte changed
        with pinned_code(), pytest.raises(PreflightError) as exc:
            world.reg.promote(promoted, alias="other", lineage=lineage, actor="t", reason="r",
                              expected_version_id=None, model=entry)
        assert exc.value.kinds == {"artifact"}
        text = str(exc.value)
        assert f"[artifact] model file {path}: sha256" in text and "differs from the published" in text
        with pytest.raises(model_artifact.ModelArtifactError, match=f"model file {path}: sha256"):
            model_artifact.load_model(world.lake, entry)
        with pytest.raises(MLSignalUnavailable, match="sha256"):  # the stream closes 4501 naming the file
            _setup(world, v)
        with pytest.raises(PreflightError, match=r"\[artifact\] model file"):  # nor can an alias point at it
            world.reg.activate("spare", v.version_id, actor="t", reason="r", expected_version_id=None)
        path.unlink()
        with pinned_code(), pytest.raises(PreflightError, match=r"\[artifact\] model file .* is missing"):
            world.reg.promote(promoted, alias="other", lineage=lineage, actor="t", reason="r",
                              expected_version_id=None, model=entry)
        with pytest.raises(MLSignalUnavailable, match="missing"):
            _setup(world, v)
    finally:
        shutil.copy2(keep, path)
    # a model of other parameters, or none at all (the spec of an ML signal), is refused too
    other = {**entry, "params": {**entry["params"], "max_rounds": 16}}
    with pinned_code(), pytest.raises(PreflightError, match=r"\[artifact\] model .* was fitted for signal"):
        world.reg.promote(promoted, alias="other", lineage=lineage, actor="t", reason="r",
                          expected_version_id=None, model=other)
    moved = {**entry, "train_days": [DAYS[1].isoformat()]}
    with pinned_code(), pytest.raises(PreflightError, match=r"\[artifact\] model .* has train_days \['2024-03-15'\]; "
                                                            r"the walk-forward's latest fold has \['2024-03-14'\]"):
        world.reg.promote(promoted, alias="other", lineage=lineage, actor="t", reason="r",
                          expected_version_id=None, model=moved)
    assert world.reg.count_rows() == before


def test_a_failed_fit_at_promotion_is_refused_by_the_artifact_rule(world, monkeypatch):
    def broken(*a, **k):
        raise ValueError("gbm_mf: 12 usable training rows")

    monkeypatch.setattr(model_artifact, "build_model", broken)
    before = world.reg.count_rows()
    with pinned_code(), pytest.raises(PreflightError) as exc:
        world.reg.promote_run("synth_gbm", alias="other", actor="t", reason="r", expected_version_id=None)
    assert exc.value.kinds == {"artifact"}
    assert "fitting 'gbm_mf' on the latest fold's training days ['2024-03-14'] failed: ValueError: gbm_mf: 12" \
        in str(exc.value)
    assert world.reg.count_rows() == before


def test_register_of_an_ml_spec_is_refused(world):
    before = world.reg.count_rows()
    with pinned_code(), pytest.raises(PreflightError) as exc:
        world.reg.register(world.w.configs / "serving" / "synth_gbm.yaml", alias="direct", actor="ops",
                           reason="direct", expected_version_id=None)
    assert exc.value.kinds == {"artifact"}
    assert "gbm_mf' is an ML signal and the version carries no fitted model" in str(exc.value)
    assert "direct registration has no walk-forward fold" in str(exc.value)
    assert world.reg.count_rows() == before
    # a statistical spec registers as before, with no model section (its id is unchanged by this rule)
    with pinned_code():
        flow = world.reg.register(world.w.configs / "serving" / "synth_flow.yaml", alias="direct", actor="ops",
                                  reason="direct", expected_version_id=None).version
    assert "model" not in flow.runtime_snapshot


def _setup(world, v) -> SignalSetup:
    runtime = world.pipeline.runtime()
    return SignalSetup.from_published(v.serving, v.lineage.experiment["eval"], runtime,
                                      v.runtime_snapshot["gold_config"], model=v.runtime_snapshot.get("model"),
                                      lake=world.lake)


def test_the_stream_scores_with_the_stored_model_as_the_batch(world):
    v = world.version
    setup = _setup(world, v)
    info = setup.describe()
    assert info["model_sha256"] == v.runtime_snapshot["model"]["sha256"] and info["lookback_exact"]
    assert info["lookback_bins"] == 601
    stream = SignalStream(setup)
    # the test day's silver from its dataset, fed in chunks as the engine emits it
    path = dsets.dataset_dir(world.lake, world.selected["test_dataset_id"])
    n = 900
    bins = pq.read_table(path / dsets.BINS_NAME).slice(0, n)
    radius = int(world.pipeline.runtime().grid_radius_ticks)
    grid = pq.read_table(path / dsets.GRID_NAME).slice(0, n * (2 * radius + 1))
    scores = []
    for a in range(0, n, 200):
        b = {c: bins[c].to_numpy()[a:a + 200] for c in bins.column_names}
        g = {c: grid[c].to_numpy()[a * (2 * radius + 1):(a + 200) * (2 * radius + 1)] for c in grid.column_names}
        scores += [s.score for s in stream.feed(b, g)]
    _, (oos, _) = _sweep_signal(world)
    assert np.isfinite(oos[:n]).sum() > 250
    np.testing.assert_array_equal(np.asarray(scores), oos[:n])


def test_online_ml_score_is_exact_across_invalid_bins(world):
    """A tick return is the change from the day's last valid mid, however far back: after a stretch of invalid
    bins the buffer keeps that bin (`keep_last_valid`, growing its storage), so the score stays the batch's."""
    loaded = model_artifact.load_snapshot_model(world.lake, world.version.runtime_snapshot)
    _, (_, test) = _sweep_signal(world)
    n = 1300
    data = test.slice(0, n)
    data.valid = data.valid.copy()
    data.valid[650:700] = False
    data.mid = np.where(data.valid, data.mid, 0.0)
    for c in data.columns:
        data.columns[c] = np.where(data.valid[:, None], data.columns[c], 0.0)
    batch = loaded.score(data)
    lb = signal_lookback(loaded, data.cell_width_ms)
    assert lb.exact and lb.keep_last_valid and lb.bins == 601
    online = OnlineSignal(loaded, lb.bins, data.radius, data.cell_width_ms, 1.0, keep_last_valid=True)
    flat = {c: a.ravel() for c, a in data.columns.items()}
    bins = {"ts_ns": data.ts_ns, "mid_price": data.mid, "book_valid": data.valid,
            "best_bid_price_int": np.zeros(n), "best_ask_price_int": np.zeros(n)}
    got = np.array([online.push(bins, flat, flat, i) for i in range(n)])
    np.testing.assert_array_equal(got, batch)
    assert np.isfinite(batch[1250:]).sum() > 40  # scored where bin 649 (the carried mid) left a plain buffer
    assert online.data().n_bins == 651 and online.data().valid[0]  # bins 649 .. 1299
    # the features (vectorised band means may differ in the last bit with the array's length; the scores above
    # are equal bit for bit): the return moments need the carried bin, a plain 601-bin buffer gets them wrong
    want = loaded.features(data)[-1]
    np.testing.assert_allclose(loaded.features(online.data())[-1], want, rtol=1e-12, atol=1e-15)
    plain = loaded.features(data.slice(n - lb.bins, n))[-1]
    assert np.nanmax(np.abs(plain - want)) > 1e-6


def test_reproduce_refits_the_model_and_names_a_mismatch(world):
    check = check_model(world.version, world.lake, world.lake, world.pipeline)
    assert check.match and check.same_bytes and not check.problems, check
    assert check.n_scored > 1000 and check.max_abs_diff == 0.0
    # a published entry whose file holds another fit: the refit's predictions differ, and the cause says so
    entry = world.version.runtime_snapshot["model"]
    other = apply_params(world.version.serving_spec(),
                         {"signal.params.num_leaves": 4, "signal.params.learning_rate": 0.3})
    other_sig = model_artifact.fit_model(world.lake, other, world.pipeline, world.exp.eval, entry["train_dataset_ids"])
    p, sha, size = model_artifact.write_model(world.lake, other_sig)
    forged_entry = {**entry, "path": p.relative_to(world.lake).as_posix(), "sha256": sha, "bytes": size}
    forged = world.version.model_copy(update={"runtime_snapshot": {**world.version.runtime_snapshot,
                                                                   "model": forged_entry}})
    with pinned_code():
        bad = reproduce_version(forged, world.lake, rebuild=False)
    assert all(r.match for r in bad.runs) and all(d.match for d in bad.datasets)  # only the model differs
    assert not bad.match and not bad.model.match and not bad.model.same_bytes
    assert bad.cause.startswith("model artifact mismatch") and p.name in bad.cause, bad.cause
    assert "model " + forged_entry["path"] in bad.text()


def test_the_serving_source_accepts_the_ml_version_and_refuses_an_altered_model_with_4501(world, tmp_path):
    from qmachina_serving.stream.protocol import CloseCode, StreamError
    from qmachina_serving.stream.replay import signal_setup
    from qmachina_serving.stream.source import RegistrySource

    src = RegistrySource(url=world.reg.url, lake=world.lake, instrument=world.w.instrument)
    try:
        served = src.resolve("gbm")
        assert served.lake == world.lake
        info = signal_setup(served).describe()
        assert info["signal"] == "gbm_mf" and info["model_sha256"] == served.snapshot["model"]["sha256"]
        path = world.lake / served.snapshot["model"]["path"]
        keep = tmp_path / "model.pkl"
        shutil.copy2(path, keep)
        try:
            path.write_bytes(b"not the model")
            with pytest.raises(StreamError) as exc:
                signal_setup(served)
            assert exc.value.code == CloseCode.NOT_IMPLEMENTED and str(path) in exc.value.message
            assert "sha256" in exc.value.message and served.version_id in exc.value.message
        finally:
            shutil.copy2(keep, path)
    finally:
        src.close()
