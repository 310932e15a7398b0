"""The config chain: shipped configs validate, the chain resolves, every kind of error names file + field."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import specs
from qmachina_assets.core.research.specs import ConfigError, ExperimentSpec, PipelineSpec, ServingSpec

CONFIGS = PROJECT_ROOT / "configs"


def tree(tmp_path: Path) -> Path:
    """A copy of the shipped configs under tmp_path/configs (tests never write into the repo)."""
    shutil.copytree(CONFIGS, tmp_path / "configs")
    return tmp_path


def edit(root: Path, rel: str, mutate: Callable[[dict[str, Any]], Any]) -> None:
    path = root / "configs" / rel
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def issues_for(root: Path, rel: str) -> list[specs.ConfigIssue]:
    issues = specs.validate_configs(root)
    return [i for i in issues if i.file == f"configs/{rel}"]


# ---- shipped configs and the chain ----------------------------------------------------------------


def test_every_shipped_config_validates():
    assert specs.validate_configs(PROJECT_ROOT) == []


def test_reference_configs_are_shipped():
    names = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.glob("*/*.yaml")}
    assert {
        "pipelines/es_rth_1h.yaml", "pipelines/es_sample_days.yaml", "serving/vp_flow_score.yaml",
        "serving/vp_derivative.yaml", "serving/ema_ensemble.yaml", "experiments/flow_score_sweep.yaml",
        "experiments/derivative_sweep.yaml",
    } <= names


@pytest.mark.parametrize("name,serving,pipeline", [
    ("flow_score_sweep", "vp_flow_score", "es_sample_days"),
    ("derivative_sweep", "vp_derivative", "es_sample_days"),
])
def test_chain_resolves(name, serving, pipeline):
    exp, srv, pipe = specs.resolve_experiment(name)
    assert (type(exp), type(srv), type(pipe)) == (ExperimentSpec, ServingSpec, PipelineSpec)
    assert (exp.serving, srv.name, srv.pipeline, pipe.name) == (serving, serving, pipeline, pipeline)
    assert exp.tracking.experiment_name == f"qmachina/{name}"
    runtime = srv.runtime(pipe)
    assert isinstance(runtime, InstrumentConfig)
    assert runtime.projection_horizons_ms == srv.projection.horizons_ms
    assert isinstance(srv.gold_config(pipe), GoldFeatureConfig)


def test_serving_fields_reach_the_runtime():
    srv, pipe = specs.resolve_serving("vp_derivative")
    rt = srv.runtime(pipe)
    assert rt.model_id == "vacuum_pressure"
    assert rt.state_model_zscore_window_bins == srv.signal.params["zscore_window_bins"]
    assert rt.state_model_mixed_weight == srv.signal.weights["mixed"]
    srv2, pipe2 = specs.resolve_serving("ema_ensemble")
    assert srv2.runtime(pipe2).model_id == "ema_ensemble"
    assert srv2.runtime(pipe2).projection_horizons_bins == [1, 2, 4, 8]


def test_flow_score_serving_streams_the_whole_silver_allow_list_with_roles():
    srv = specs.load_serving("vp_flow_score")
    assert [(f.name, f.dtype) for f in srv.stream_schema] == [
        (name, dt.name) for name, dt in specs.silver.SILVER_COLUMNS]
    roles = {f.name: f.role for f in srv.stream_schema}
    assert (roles["k"], roles["last_event_id"], roles["v_add"], roles["j_ask_depth"], roles["microstate_id"],
            roles["add_mass"]) == ("grid_index", "metadata", "velocity", "jerk", "indicator", "force")
    assert [o.z_order for o in srv.visualization.overlays] == [0, 10, 15, 20, 30]


def test_load_by_path_resolves_references_in_that_tree(tmp_path):
    root = tree(tmp_path)
    edit(root, "pipelines/es_sample_days.yaml", lambda d: d["engine"].update(c1=2.0))
    edit(root, "serving/vp_flow_score.yaml", lambda d: d.update(threshold=0.3))
    edit(root, "experiments/flow_score_sweep.yaml", lambda d: d["sweep"].pop("thresholds"))
    exp, srv, pipe = specs.resolve_experiment(root / "configs" / "experiments" / "flow_score_sweep.yaml")
    assert (pipe.engine.c1, srv.threshold) == (2.0, 0.3)
    sets = exp.expand()  # loads the serving spec from the same tree, not from the repo
    assert len(sets) == 8 and {s["threshold"] for s in sets} == {0.3}


# ---- every kind of error names the file and the field ----------------------------------------------


def _append(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d[key].append(value)


CASES = [
    # (id, file, mutation, field, reason pattern)
    ("unknown key", "serving/vp_flow_score.yaml", lambda d: d.update(colour="red"),
     "colour", r"unknown key \(allowed: name, description, display_name"),
    ("unknown nested key", "serving/vp_flow_score.yaml",
     lambda d: d["visualization"]["cell_shader"].update(hue=3),
     "visualization.cell_shader.hue", r"unknown key \(allowed: signal_field, depth_field"),
    ("unknown overlay param", "serving/vp_flow_score.yaml",
     lambda d: d["visualization"]["overlays"][0].update(params={"alpha": 1}),
     "visualization.overlays[0].params.alpha", r"unknown key"),
    ("bad dtype", "serving/vp_flow_score.yaml", lambda d: d["stream_schema"][0].update(dtype="float64"),
     "stream_schema[0].dtype", r"k is int32 in silver, not float64"),
    ("unsupported dtype", "serving/vp_flow_score.yaml", lambda d: d["stream_schema"][3].update(dtype="float32"),
     "stream_schema[3].dtype", r"Input should be 'int8', 'int32', 'int64' or 'float64'"),
    ("wrong role", "serving/vp_flow_score.yaml", lambda d: d["stream_schema"][7].update(role="force"),
     "stream_schema[7].role", r"v_add has role velocity"),
    ("non-silver stream field", "serving/vp_flow_score.yaml",
     _append("stream_schema", {"name": "composite", "dtype": "float64", "role": "signal"}),
     "stream_schema[33].name", r"'composite' is not a silver column"),
    ("missing k", "serving/vp_derivative.yaml", lambda d: d["stream_schema"].pop(0),
     "stream_schema", r"required field k:int32:grid_index is missing"),
    ("duplicate stream field", "serving/vp_derivative.yaml",
     _append("stream_schema", {"name": "v_add", "dtype": "float64", "role": "velocity"}),
     "stream_schema[12].name", r"duplicate field 'v_add'"),
    ("signal input not streamed", "serving/vp_derivative.yaml", lambda d: d["stream_schema"].pop(11),
     "stream_schema", r"derivative is computed from microstate_id"),
    ("ema producer field", "serving/ema_ensemble.yaml",
     _append("stream_schema", {"name": "v_add", "dtype": "float64", "role": "velocity"}),
     "stream_schema[4].name", r"the ema_ensemble producer does not emit 'v_add'"),
    ("horizon not a multiple of the cell width", "serving/vp_flow_score.yaml",
     lambda d: d["projection"].update(horizons_ms=[100, 250]),
     "projection.horizons_ms[1]", r"250 ms is not a multiple of the pipeline's cell_width_ms 100"),
    ("serving cooldown 0", "serving/vp_flow_score.yaml", lambda d: d.update(cooldown_bins=0),
     "cooldown_bins", r"greater than or equal to 1"),
    ("experiment cooldown 0", "experiments/flow_score_sweep.yaml",
     lambda d: d["eval"].update(cooldown_bins=[10, 0]), "eval.cooldown_bins[1]", r"greater than or equal to 1"),
    ("unknown signal", "serving/vp_flow_score.yaml", lambda d: d["signal"].update(name="foo"),
     "signal.name", r"unknown signal 'foo' \(known: ads, .*flow_score, gold_column\)"),
    ("unknown signal param", "serving/vp_derivative.yaml", lambda d: d["signal"]["params"].update(window=3),
     "signal.params.window", r"unknown parameter of signal 'derivative'"),
    ("signal param fails the runtime rules", "serving/vp_derivative.yaml",
     lambda d: d["signal"]["params"].update(zscore_min_periods=500),
     "signal.params.zscore_min_periods", r"must be <= state_model_zscore_window_bins"),
    ("signal without threshold", "serving/vp_flow_score.yaml", lambda d: d.pop("threshold"),
     "threshold", r"required with a signal"),
    ("threshold beyond a bounded score", "serving/vp_flow_score.yaml", lambda d: d.update(threshold=1.5),
     "threshold", r"clipped to \[-1, 1\]"),
    ("dangling serving -> pipeline", "serving/vp_flow_score.yaml", lambda d: d.update(pipeline="nope"),
     "pipeline", r"dangling reference: no pipeline spec 'nope' \(configs/pipelines/nope.yaml not found\)"),
    ("dangling experiment -> serving", "experiments/flow_score_sweep.yaml", lambda d: d.update(serving="nope"),
     "serving", r"dangling reference: no serving spec 'nope'"),
    ("symbol outside the lock", "pipelines/es_rth_1h.yaml", lambda d: d["capture"].update(symbol="NQH4"),
     "capture.symbol", r"'NQH4' is not an outright contract of the locked root 'ES'"),
    ("spread symbol", "pipelines/es_rth_1h.yaml", lambda d: d["capture"].update(symbol="ESH4-ESM4"),
     "capture.symbol", r"not an outright contract"),
    ("name != file stem", "pipelines/es_rth_1h.yaml", lambda d: d.update(name="es_other"),
     "name", r"'es_other' must equal the file name 'es_rth_1h'"),
    ("override c1 < 0", "pipelines/es_rth_1h.yaml", lambda d: d["engine"].update(c1=-1),
     "engine.c1", r"greater than or equal to 0 \(runtime field c1\)"),
    ("cross-field override", "pipelines/es_rth_1h.yaml", lambda d: d["engine"].update(flow_windows=[5, 10]),
     "engine.flow_rollup_weights", r"one weight per flow_windows entry"),
    ("window end before start", "pipelines/es_rth_1h.yaml", lambda d: d["capture"].update(end_et="09:00"),
     "capture.end_et", r"must be after start_et"),
    ("unquoted HH:MM", "pipelines/es_rth_1h.yaml", lambda d: d["capture"].update(end_et=630),
     "capture.end_et", r"quote HH:MM times in YAML \(\"10:30\"\)"),
    ("bad date", "pipelines/es_sample_days.yaml", lambda d: d["capture"].update(dates=["2023-12-24", "12/25/23"]),
     "capture.dates[1]", r"expected a date YYYY-MM-DD"),
    ("dangling gold dsl", "pipelines/es_rth_1h.yaml", lambda d: d.update(gold_dsl="nope"),
     "gold_dsl", r"configs/gold/nope.yaml not found"),
    ("heatmap without shader", "serving/vp_flow_score.yaml", lambda d: d["visualization"].pop("cell_shader"),
     "visualization.cell_shader", r"heatmap display needs a cell_shader"),
    ("duplicate z_order", "serving/vp_flow_score.yaml",
     lambda d: d["visualization"]["overlays"][1].update(z_order=0),
     "visualization.overlays[1].z_order", r"0 is also the z_order of 'vp_gold'"),
    ("projection bands without signal_field", "serving/vp_flow_score.yaml",
     lambda d: d["visualization"]["overlays"][4].update(params={}),
     "visualization.overlays[4].params.signal_field", r"required field missing"),
    ("enabled ema_lines without params", "serving/ema_ensemble.yaml",
     lambda d: d["visualization"]["overlays"][2]["params"].pop("sma_periods"),
     "visualization.overlays[2].params.sma_periods", r"required by an enabled ema_lines overlay"),
    ("viewer field not available", "serving/vp_derivative.yaml",
     lambda d: d["visualization"]["overlays"].pop(0),
     "visualization.cell_shader.signal_field", r"'flow_score' is not available to the viewer"),
    ("sweep of another signal", "experiments/derivative_sweep.yaml",
     lambda d: d["sweep"]["per_signal"].update(flow_score={}),
     "sweep.per_signal.flow_score", r"evaluates the serving spec's signal 'derivative' only"),
    ("sweep value fails the runtime rules", "experiments/derivative_sweep.yaml",
     lambda d: d["sweep"]["per_signal"]["derivative"].update(zscore_min_periods=[30, 500]),
     "sweep.per_signal.derivative.zscore_min_periods[1]", r"invalid serving spec \(signal.params.zscore_min_periods"),
    ("unknown scoring axis", "experiments/flow_score_sweep.yaml",
     lambda d: d["sweep"]["scoring"].update(window=[1]), "sweep.scoring.window", r"unknown scoring axis"),
    ("threshold sweep beyond the bound", "experiments/flow_score_sweep.yaml",
     lambda d: d["sweep"].update(thresholds=[0.1, 2.0]), "sweep.thresholds[1]", r"never fires"),
    ("walk-forward longer than the capture", "experiments/flow_score_sweep.yaml",
     lambda d: d["walk_forward"].update(train_days=2), "walk_forward",
     r"needs train_days \+ test_days = 3 days; pipeline 'es_sample_days' captures 2"),
    ("random search without n_samples", "experiments/derivative_sweep.yaml",
     lambda d: d["sweep"]["search"].pop("n_samples"), "sweep.search.n_samples", r"required by random search"),
    ("missing gate", "experiments/flow_score_sweep.yaml", lambda d: d.pop("promotion"),
     "promotion", r"required field missing"),
]


@pytest.mark.parametrize("rel,mutate,field,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_names_file_and_field(tmp_path, rel, mutate, field, reason):
    root = tree(tmp_path)
    edit(root, rel, mutate)
    found = issues_for(root, rel)
    assert [(i.field, i.severity) for i in found] == [(field, "error")], found
    assert re.search(reason, found[0].reason), found[0].reason
    kind, fname = rel.split("/")
    loader = {"pipelines": specs.load_pipeline, "serving": specs.load_serving,
              "experiments": specs.load_experiment}[kind]
    with pytest.raises(ConfigError) as exc:
        loader(Path(fname).stem, configs_dir=root / "configs")
    assert (exc.value.file, exc.value.field) == (f"configs/{rel}", field)
    assert str(exc.value).startswith(f"configs/{rel}: {field}: ")


def test_error_message_format(tmp_path):
    root = tree(tmp_path)
    edit(root, "serving/vp_flow_score.yaml", lambda d: d["signal"].update(name="foo"))
    with pytest.raises(ConfigError) as exc:
        specs.load_serving("vp_flow_score", configs_dir=root / "configs")
    known = ", ".join(specs.KNOWN_SIGNALS)
    assert str(exc.value) == f"configs/serving/vp_flow_score.yaml: signal.name: unknown signal 'foo' (known: {known})"
    assert (exc.value.field, exc.value.reason.split(" (")[0]) == ("signal.name", "unknown signal 'foo'")
    assert isinstance(exc.value, ValueError)


def test_invalid_lower_layer_is_reported_in_the_referencing_file(tmp_path):
    root = tree(tmp_path)
    edit(root, "pipelines/es_sample_days.yaml", lambda d: d["engine"].update(c1=-1))
    issues = specs.validate_configs(root)
    by_file = {(i.file, i.field) for i in issues}
    assert ("configs/pipelines/es_sample_days.yaml", "engine.c1") in by_file
    assert ("configs/serving/vp_flow_score.yaml", "pipeline") in by_file
    assert ("configs/experiments/flow_score_sweep.yaml", "serving") in by_file
    ref = next(i for i in issues if i.file == "configs/serving/vp_flow_score.yaml")
    assert "pipeline spec 'es_sample_days' is invalid (configs/pipelines/es_sample_days.yaml: engine.c1:" in ref.reason


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    root = tree(tmp_path)
    path = root / "configs" / "serving" / "vp_flow_score.yaml"
    lines = path.read_text().splitlines()
    n = lines.index("signal:") + 1  # 1-based line of `signal:`
    lines[n] = "  name: [flow_score"  # unclosed flow sequence
    path.write_text("\n".join(lines) + "\n")
    found = issues_for(root, "serving/vp_flow_score.yaml")
    assert len(found) == 1 and found[0].field == ""
    m = re.search(r"invalid YAML at line (\d+), column \d+", found[0].reason)
    assert m and abs(int(m.group(1)) - (n + 1)) <= 1, found[0].reason
    with pytest.raises(ConfigError, match=r"^configs/serving/vp_flow_score.yaml: invalid YAML at line \d+"):
        specs.load_serving("vp_flow_score", configs_dir=root / "configs")


def test_duplicate_yaml_key_names_the_line(tmp_path):
    root = tree(tmp_path)
    path = root / "configs" / "pipelines" / "es_rth_1h.yaml"
    path.write_text(path.read_text() + "description: again\n")
    (issue,) = issues_for(root, "pipelines/es_rth_1h.yaml")
    assert re.search(r"line \d+, column 1: duplicate key 'description' \(first at line \d+\)", issue.reason)


@pytest.mark.parametrize("content,reason", [
    ("", r"got an empty file"),
    ("- a\n- b\n", r"got list"),
])
def test_not_a_mapping(tmp_path, content, reason):
    root = tree(tmp_path)
    (root / "configs" / "pipelines" / "es_rth_1h.yaml").write_text(content)
    found = [i for i in issues_for(root, "pipelines/es_rth_1h.yaml") if re.search(reason, i.reason)]
    assert found


def test_unknown_location_and_extension(tmp_path):
    root = tree(tmp_path)
    (root / "configs" / "legacy").mkdir()
    (root / "configs" / "legacy" / "old.yaml").write_text("a: 1\n")
    (root / "configs" / "serving" / "x.yml").write_text("a: 1\n")
    (root / "configs" / "notes.yaml").write_text("a: 1\n")
    issues = {i.file: i.reason for i in specs.validate_configs(root)}
    assert issues["configs/legacy/old.yaml"].startswith("unknown config location")
    assert issues["configs/notes.yaml"].startswith("unknown config location")
    assert "use the .yaml extension" in issues["configs/serving/x.yml"]
    assert len(issues) == 3


def test_instrument_file_is_validated(tmp_path):
    root = tree(tmp_path)
    edit(root, "instrument.yaml", lambda d: d.update(tick_size=-1))
    issues = specs.validate_configs(root)
    assert [(i.file, i.field) for i in issues] == [("configs/instrument.yaml", "tick_size")]


def test_tree_is_checked_against_its_own_instrument_lock(tmp_path):
    root = tree(tmp_path)
    edit(root, "instrument.yaml", lambda d: d.update(symbol="NQH4", symbol_root="NQ"))
    files = {(i.file, i.field) for i in specs.validate_configs(root)}
    assert ("configs/pipelines/es_rth_1h.yaml", "capture.symbol") in files


def test_gold_files_use_the_dsl_module(tmp_path, monkeypatch):
    root = tree(tmp_path)
    gold_dir = root / "configs" / "gold"
    gold_dir.mkdir(exist_ok=True)
    (gold_dir / "broken.yaml").write_text("version: 1\nname: broken\nnodes: {}\n")
    issues = [i for i in specs.validate_configs(root) if i.file == "configs/gold/broken.yaml"]
    assert issues and all(i.severity == "error" for i in issues)
    assert any("output" in i.reason for i in issues)
    renamed = gold_dir / "renamed.yaml"
    renamed.write_text((gold_dir / "depth_imbalance.yaml").read_text())
    assert [(i.field, i.reason) for i in specs.validate_configs(root) if i.file == "configs/gold/renamed.yaml"] == [
        ("name", "'depth_imbalance' must equal the file name 'renamed'")]
    monkeypatch.setitem(sys.modules, "qmachina_assets.core.gold.dsl", None)  # import now fails
    notes = specs.validate_configs(root)
    gold_notes = [i for i in notes if i.file.startswith("configs/gold/")]
    assert gold_notes and all(i.severity == "note" and "not checked" in i.reason for i in gold_notes)
    assert [i for i in notes if i.severity == "error"] == []


def test_empty_tree(tmp_path):
    (tmp_path / "configs").mkdir()
    reasons = [i.reason for i in specs.validate_configs(tmp_path)]
    assert any("no YAML config files found" in r for r in reasons)
    assert specs.validate_configs(tmp_path / "nowhere")[0].reason == "no configs directory"


# ---- sweeps -----------------------------------------------------------------------------------------


def test_grid_expansion_is_the_sorted_cartesian_product():
    exp, srv, _ = specs.resolve_experiment("flow_score_sweep")
    sets = exp.expand(srv)
    assert len(sets) == 2 * 2 * 3 * 2 == exp.n_combinations(srv)
    keys = ["cooldown_bins", "scoring.tanh_scale", "scoring.zscore_window_bins", "sl_ticks", "threshold", "tp_ticks"]
    assert all(list(s)[:-1] == keys and list(s)[-1] == "param_hash" for s in sets)
    assert {tuple(s[k] for k in keys) for s in sets} == {
        (c, t, w, 4, th, 8) for c in (10, 20) for t in (2.0, 3.0) for w in (150, 300) for th in (0.1, 0.15, 0.2)}
    assert [s["threshold"] for s in sets[:3]] == [0.1, 0.15, 0.2]  # last sorted key with >1 value varies fastest
    assert len({s["param_hash"] for s in sets}) == 24


def test_random_search_is_a_seeded_sample_without_replacement():
    exp, srv, _ = specs.resolve_experiment("derivative_sweep")
    grid = exp.model_copy(update={"sweep": exp.sweep.model_copy(update={"search": specs.SearchConfig()})})
    everything = {s["param_hash"] for s in grid.expand(srv)}
    assert len(everything) == 3 * 2 * 2 * 2 == 24
    sample = exp.expand(srv)
    hashes = [s["param_hash"] for s in sample]
    assert len(hashes) == 8 == len(set(hashes)) and set(hashes) <= everything
    assert [s["param_hash"] for s in exp.expand(srv)] == hashes  # same seed, same sample

    def with_search(**kw: Any) -> ExperimentSpec:
        search = specs.SearchConfig(method="random", **kw)
        return exp.model_copy(update={"sweep": exp.sweep.model_copy(update={"search": search})})

    assert [s["param_hash"] for s in with_search(n_samples=8, seed=8).expand(srv)] != hashes
    assert {s["param_hash"] for s in with_search(n_samples=100, seed=1).expand(srv)} == everything
    assert sample[0]["signal.weights.mixed"] in (0.0, 0.5)  # weights and params are routed apart
    assert "signal.params.d2_weight" in sample[0]


def test_expand_loads_the_serving_spec_itself():
    exp = specs.load_experiment("flow_score_sweep")
    assert exp.expand() == exp.expand(specs.load_serving("vp_flow_score"))


def test_param_hash_is_stable():
    values = {"threshold": 0.1, "scoring.tanh_scale": 2.0}
    h = specs.param_hash("flow_score", values)
    assert h == specs.param_hash("flow_score", dict(reversed(values.items())))
    canonical = json.dumps({"signal": "flow_score", "params": values}, sort_keys=True, separators=(",", ":"))
    assert h == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert h == "87b6b8465bd6aca4"  # fixed across processes and releases: results are keyed by it
    assert specs.param_hash("derivative", values) != h
    assert specs.param_hash("flow_score", {**values, "threshold": 0.2}) != h


def test_apply_params_gives_the_promotable_serving_spec():
    exp, srv, pipe = specs.resolve_experiment("derivative_sweep")
    chosen = exp.expand(srv)[0]
    out = specs.apply_params(srv, chosen)
    assert out.threshold == chosen["threshold"] and out.cooldown_bins == chosen["cooldown_bins"]
    assert out.signal.params["zscore_window_bins"] == chosen["signal.params.zscore_window_bins"]
    assert out.signal.weights["mixed"] == chosen["signal.weights.mixed"]
    assert out.runtime(pipe).state_model_d2_weight == chosen["signal.params.d2_weight"]
    with pytest.raises(ConfigError, match=r"vp_derivative.yaml: cooldown_bins: .*greater than or equal to 1"):
        specs.apply_params(srv, {"cooldown_bins": 0})


# ---- pipelines: dataset ids, runtime ----------------------------------------------------------------


def test_dataset_id_format():
    rth = specs.load_pipeline("es_rth_1h")
    did = rth.dataset_id("2024-03-15")
    assert re.fullmatch(r"esh4_20240315_0930_1030__es_rth_1h__[0-9a-f]{8}", did), did
    assert did.endswith(rth.dataset_hash[:8])
    full = specs.load_pipeline("es_sample_days")
    assert re.fullmatch(r"esh4_20231225_full__es_sample_days__[0-9a-f]{8}", full.dataset_id("2023-12-25"))
    with pytest.raises(ValueError, match="not a capture date"):
        rth.dataset_id("2024-03-18")
    assert len(rth.spec_hash) == 16 and rth.spec_hash != full.spec_hash


def test_dataset_id_follows_the_data_not_the_date_list():
    base = specs.load_pipeline("es_sample_days")
    data = base.model_dump(mode="json")
    more = PipelineSpec.model_validate({**data, "capture": {**data["capture"], "dates": {
        "start": "2023-12-24", "end": "2023-12-27"}}})
    assert [d.isoformat() for d in more.days] == ["2023-12-24", "2023-12-25", "2023-12-26", "2023-12-27"]
    assert more.dataset_id("2023-12-24") == base.dataset_id("2023-12-24")
    assert more.spec_hash != base.spec_hash
    tuned = PipelineSpec.model_validate({**data, "engine": {"c2": 0.75}})
    assert tuned.dataset_id("2023-12-24") != base.dataset_id("2023-12-24")
    redescribed = PipelineSpec.model_validate({**data, "description": "other words"})
    assert redescribed.spec_hash == base.spec_hash


def test_runtime_overrides_are_applied_and_revalidated(instrument):
    data = specs.load_pipeline("es_rth_1h").model_dump(mode="json")
    tuned = PipelineSpec.model_validate({**data, "engine": {"c1": 2.5, "cell_width_ms": 50, "tau_jerk": 4.0}})
    rt = tuned.runtime(instrument)
    assert (rt.c1, rt.cell_width_ms, rt.tau_jerk, rt.c2) == (2.5, 50, 4.0, instrument.c2)
    assert rt.config_version != instrument.config_version
    assert tuned.gold_config(instrument).c1 == 2.5 and tuned.gold_config(instrument).cell_width_ms == 50
    srv = specs.load_serving("vp_flow_score")
    assert srv.runtime(tuned, instrument).projection_horizons_bins == [2, 4, 6, 8]  # 100..400 ms at 50 ms
    bad = PipelineSpec.model_validate({**data, "engine": {"c1": -1}})
    with pytest.raises(ConfigError) as exc:
        bad.runtime(instrument)
    assert exc.value.field == "engine.c1" and "greater than or equal to 0" in exc.value.reason


def test_unknown_override_key_fails():
    data = specs.load_pipeline("es_rth_1h").model_dump(mode="json")
    with pytest.raises(Exception, match="symbol"):
        PipelineSpec.model_validate({**data, "engine": {"symbol": "NQH4"}})


def test_open_signal_params_are_checked_against_the_signal_registry(tmp_path, monkeypatch):
    class AdsParams(specs.StrictSpec):
        zscore_window: int = 200

    monkeypatch.setattr(specs, "registry_params", lambda name: AdsParams if name == "ads" else None)
    root = tree(tmp_path)
    ads = {"name": "ads", "params": {"zscore_window": 100}}
    edit(root, "serving/vp_flow_score.yaml", lambda d: d.update(signal=ads))
    assert issues_for(root, "serving/vp_flow_score.yaml") == []
    edit(root, "serving/vp_flow_score.yaml", lambda d: d["signal"]["params"].update(window=3))
    (issue,) = issues_for(root, "serving/vp_flow_score.yaml")
    assert (issue.field, issue.reason) == ("signal.params.window", "unknown key (allowed: zscore_window)")
    edit(root, "serving/vp_flow_score.yaml", lambda d: d.update(signal=ads))
    edit(root, "experiments/flow_score_sweep.yaml", lambda d: d["sweep"].update(per_signal={"ads": {"lag": [1]}}))
    issues = [i for i in issues_for(root, "experiments/flow_score_sweep.yaml") if i.field.startswith("sweep")]
    assert issues and issues[0].field == "sweep.per_signal.ads.lag"
