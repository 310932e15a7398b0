"""A published version whose pipeline has a Gold DSL streams it: the snapshot and runtime_config carry the spec,
the replay's `DslRuntime` outputs equal the batch DSL over the silver partition bit for bit, a mid-day start
from the checkpoint (engine + DSL state) gives the outputs of a replay from the session start, and preflight
refuses a spec the browser could not run (naming the node)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from websockets.asyncio.client import connect

from qmachina_assets.core.engine.silver_partition import silver_dir
from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import PreflightError, Registry
from qmachina_assets.core.registry.lineage import lineage_for_register
from qmachina_assets.core.registry.preflight import preflight
from qmachina_assets.core.research.specs import ConfigError, SignalSpec, load_serving, resolve_serving
from qmachina_serving.stream.replay import BinProducer, ReplayRequest, plan_replay
from qmachina_serving.stream.source import RegistrySource
from tests.support.served_signals import evaluated_day, expected_events, stream_events
from tests.support.serving import DATE, build_served_lake, serve

SPEC = PROJECT_ROOT / "configs" / "gold" / "depth_imbalance.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_served_lake(tmp_path_factory.mktemp("dsl_serving"))
    cfg = w.configs
    (cfg / "gold").mkdir()
    (cfg / "gold" / "depth_imbalance.yaml").write_text(SPEC.read_text())
    pipeline = (cfg / "pipelines" / "esh4_sunday_open.yaml").read_text()
    (cfg / "pipelines" / "esh4_sunday_open_dsl.yaml").write_text(
        pipeline.replace("name: esh4_sunday_open", "name: esh4_sunday_open_dsl") + "gold_dsl: depth_imbalance\n")
    vp = w.serving("vp_stream_test").read_text().replace("pipeline: esh4_sunday_open", "pipeline: esh4_sunday_open_dsl")
    w.serving("vp_dsl").write_text(vp.replace("name: vp_stream_test", "name: vp_dsl"))
    w.serving("vp_dsl_no_depth").write_text(
        vp.replace("name: vp_stream_test", "name: vp_dsl_no_depth").replace(
            "  - {name: bid_depth, dtype: float64, role: force}\n", ""))
    assert "signal:\n  name: flow_score\nthreshold: 0.15\n" in vp
    for name, pipe, column in (("vp_dsl_gc", "esh4_sunday_open_dsl", "book_depth_imbalance_z"),
                               ("vp_dsl_gc_unknown", "esh4_sunday_open_dsl", "book_depth_imbalance_zz"),
                               ("vp_gc_no_dsl", "esh4_sunday_open", "book_depth_imbalance_z")):
        w.serving(name).write_text(vp.replace("name: vp_stream_test", f"name: {name}").replace(
            "pipeline: esh4_sunday_open_dsl", f"pipeline: {pipe}").replace(
            "signal:\n  name: flow_score\nthreshold: 0.15\n",
            f"signal:\n  name: gold_column\n  params: {{column: {column}, sign: -1}}\nthreshold: 1.5\n"))
    ema = w.serving("ema_stream_test").read_text()
    w.serving("ema_dsl").write_text(ema.replace("name: ema_stream_test", "name: ema_dsl").replace(
        "pipeline: esh4_sunday_open", "pipeline: esh4_sunday_open_dsl"))
    with Registry(lake=w.lake, instrument=w.instrument) as reg:
        reg.register(w.serving("vp_dsl"), alias="dsl", actor="tests", reason="Gold DSL stream",
                     configs_dir=cfg, expected_version_id=None)
    return w


def _frames(world, alias: str = "dsl", **req) -> tuple[BinProducer, list]:
    version = RegistrySource(lake=world.lake, instrument=world.instrument).resolve(alias)
    plan = plan_replay(version, ReplayRequest(serving=alias, **req), world.lake)
    producer = BinProducer(world.lake, plan, version)
    producer.open()
    frames = []
    while not producer.finished:
        frames += producer.produce(256)
    return producer, frames


def test_snapshot_and_runtime_config_carry_the_spec(world) -> None:
    version = RegistrySource(lake=world.lake, instrument=world.instrument).resolve("dsl")
    spec = dsl.load_spec(SPEC)
    section = version.runtime_config["gold_dsl"]
    assert section == version.snapshot["gold_dsl"]
    assert section["spec_hash"] == spec.spec_hash and section["name"] == "depth_imbalance"
    assert dsl.GoldDslSpec.model_validate(section["spec"]) == spec
    assert section["outputs"] == [spec.nodes[o].name for o in spec.outputs]
    assert section["runtime_version"] == dsl_runtime.RUNTIME_VERSION
    json.dumps(version.runtime_config, allow_nan=False)  # the message is valid JSON


def test_stream_outputs_equal_the_batch_dsl_on_silver(world) -> None:
    producer, frames = _frames(world)
    assert producer.open_info["gold_dsl"]["state"] == "fresh"
    s = silver_dir(world.lake, "ESH4", DATE)
    bins = pq.read_table(s / "bins.parquet").to_pydict()
    bins = {c: np.asarray(v) for c, v in bins.items()}
    grid = {c: pq.read_table(s / "grid.parquet").column(c).to_numpy() for c in ("k", "bid_depth", "ask_depth")}
    inst = world.instrument
    batch = dsl_runtime.execute(dsl.load_spec(SPEC), bins, grid, inst.grid_radius_ticks, inst.tick_int,
                                inst.cell_width_ms)
    w = 2 * inst.grid_radius_ticks + 1
    row = {int(e): i for i, e in enumerate(bins["bin_end_ns"])}
    assert len(frames) == len(bins["bin_seq"])
    outs = [c for c in batch if c not in ("bin_seq", "k", "gold_valid")]
    for f in frames:
        b = row[f.bin_end_ns]
        for c in outs:
            assert np.array_equal(f.gold[c], batch[c][b * w:(b + 1) * w], equal_nan=True), (f.bin_seq, c)
    assert np.abs(batch["book_depth_imbalance_z"]).max() > 0.5  # the window exercises the z-scores


def test_midday_start_resumes_the_session_state_from_the_checkpoint(world) -> None:
    _, full = _frames(world)
    by_end = {f.bin_end_ns: f for f in full}
    for expect in ("miss", "hit"):
        producer, frames = _frames(world, start=dt.time(18, 3, 30))
        assert producer.open_info["checkpoint"] == expect
        assert producer.open_info["gold_dsl"]["state"] == "checkpoint"
        assert frames and frames[0].bin_seq == 0  # the mid-day engine numbers its bins from 0
        for f in frames:
            ref = by_end[f.bin_end_ns]
            for c, v in f.gold.items():
                assert np.array_equal(v, ref.gold[c], equal_nan=True), (f.bin_end_ns, c, expect)
    # warm: a cold start would emit 0 for the bin-level z-score until 100 bins (its min_periods) were seen
    assert np.abs(frames[0].gold["book_depth_imbalance_z"]).max() > 0


def test_signals_and_the_dsl_share_one_checkpoint(world) -> None:
    """signals=1 on a Gold DSL version: both followers warm into one engine checkpoint (`replay.Followers`) and a
    mid-day start from it (built, then loaded) sends the full replay's signal messages and DSL outputs; the
    position opened before the start closes at the end with the full replay's price and P&L."""
    whole, full = _frames(world, signals=True)
    by_end = {f.bin_end_ns: f for f in full}
    want = json.loads(whole.final_signal)
    for expect in ("miss", "hit"):
        producer, frames = _frames(world, start=dt.time(18, 3, 30), signals=True)
        info = producer.open_info
        assert (info["checkpoint"], info["gold_dsl"]["state"], info["signal"]["state"]) == (expect, "checkpoint",
                                                                                            "checkpoint")
        assert len(frames) == 900 and frames[0].bin_seq == 0
        for f in frames:
            ref = by_end[f.bin_end_ns]
            a, b = json.loads(f.signal), json.loads(ref.signal)
            assert (a["ts_ns"], a["score"]) == (b["ts_ns"], b["score"]) and a["score"] is not None
            assert [e["ts_ns"] for e in a["events"]] == [e["ts_ns"] for e in b["events"]]
            for c, v in f.gold.items():
                assert np.array_equal(v, ref.gold[c], equal_nan=True), (f.bin_end_ns, c, expect)
        final = json.loads(producer.final_signal)
        assert final["final"] and final["events"][0]["outcome"] == "truncated"
        assert final["events"] == [{**e, "bin_seq": e["bin_seq"] - 2100} for e in want["events"]]


def test_gold_column_on_a_dsl_output_streams_the_evaluated_trades_exactly(world, monkeypatch) -> None:
    """A `gold_column` signal on a Gold DSL output with signals=1 (at max speed: the producer unpaced): every bin's
    score equals the batch signal on the research dataset (which carries the DSL outputs) bit for bit and the
    events equal `evaluate`'s trades exactly; the signal reads the DSL follower's outputs (the DSL runs once per
    bin), and a mid-day start from the shared checkpoint resumes the same messages."""
    s, data, _, res = evaluated_day(world.lake, "vp_dsl_gc")
    assert res.metrics.n_trades >= 4 and {int(o) for o in res.trades["outcome"]} >= {1, -1}  # the test can fail
    with Registry(lake=world.lake, instrument=world.instrument) as reg:
        reg.register(world.serving("vp_dsl_gc"), alias="dsl_gc", actor="tests", reason="gold_column on a DSL output",
                     configs_dir=world.configs, expected_version_id=None)
    rows = []
    step_raw = dsl_runtime.DslRuntime.step_raw
    monkeypatch.setattr(dsl_runtime.DslRuntime, "step_raw",
                        lambda rt, *a: rows.append(a[3].shape[1]) or step_raw(rt, *a))
    producer, frames = _frames(world, "dsl_gc", signals=True)
    monkeypatch.undo()
    w = 2 * world.instrument.grid_radius_ticks + 1
    assert len(frames) == len(data.ts_ns) == 3000 and sum(rows) == 3000 * w  # one DSL computation per bin
    signals = [json.loads(f.signal) for f in frames] + [json.loads(producer.final_signal)]
    assert [m["ts_ns"] for m in signals[:-1]] == [str(t) for t in data.ts_ns]
    scores = np.array([np.nan if m["score"] is None else m["score"] for m in signals[:-1]])
    np.testing.assert_array_equal(scores, s)  # NaN where the batch score is NaN, else bit-equal
    np.testing.assert_array_equal(scores[data.valid], -np.array([f.gold["book_depth_imbalance_z"][w // 2]
                                                                 for f in frames])[data.valid])
    assert stream_events(signals) == expected_events(res, data)
    assert signals[-1]["final"] and producer.open_info["signal"]["state"] == "fresh"
    mid, later = _frames(world, "dsl_gc", start=dt.time(18, 3, 30), signals=True)
    assert (mid.open_info["gold_dsl"]["state"], mid.open_info["signal"]["state"]) == ("checkpoint", "checkpoint")
    got = [json.loads(f.signal) for f in later] + [json.loads(mid.final_signal)]

    def key(m: dict) -> tuple:  # bin_seq restarts at 0 at the start
        return m["ts_ns"], m["score"], [(e["event"], e["ts_ns"], e["price"], e.get("pnl_ticks")) for e in m["events"]]

    assert len(got) == 901 and [key(m) for m in got] == [key(m) for m in signals[2100:]]


def test_a_gold_column_must_name_a_gold_column_of_the_pipeline(world) -> None:
    """The serving spec's column is checked against the pipeline: a DSL output its Gold DSL does not define, or any
    non-built-in column on a pipeline without one, fails at signal.params.column naming what exists."""
    assert load_serving(world.serving("vp_dsl_gc"), configs_dir=world.configs).signal.params["column"] == \
        "book_depth_imbalance_z"
    with pytest.raises(ConfigError) as e:
        load_serving(world.serving("vp_dsl_gc_unknown"), configs_dir=world.configs)
    assert e.value.field == "signal.params.column"
    assert "'book_depth_imbalance_zz' is not a built-in gold column (pressure_variant, " in e.value.reason
    assert "Gold DSL 'depth_imbalance' (outputs: local_depth_imbalance, " in e.value.reason
    with pytest.raises(ConfigError) as e:
        load_serving(world.serving("vp_gc_no_dsl"), configs_dir=world.configs)
    assert e.value.field == "signal.params.column" and "has no Gold DSL (gold_dsl)" in e.value.reason
    # a spec built in code (not loaded from a file) is checked by the publishing preflight against the snapshot
    serving, pipeline = resolve_serving(world.serving("vp_dsl_gc"), configs_dir=world.configs)
    bad = serving.model_copy(update={"signal": SignalSpec(name="gold_column", params={"column": "nope"})})
    with pytest.raises(PreflightError) as p:
        preflight(bad, pipeline, lineage_for_register(bad, pipeline, code_version="", code_dirty=False),
                  instrument=world.instrument, lake=world.lake)
    assert "spec" in p.value.kinds and "signal.params.column: 'nope' is not a built-in gold column" in str(p.value)
    assert "Gold DSL 'depth_imbalance' (outputs: local_depth_imbalance, " in str(p.value)


def _refused(world, name: str, kinds: set[str], *needles: str) -> None:
    with Registry(lake=world.lake, instrument=world.instrument) as reg, pytest.raises(PreflightError) as e:
        reg.register(world.serving(name), alias=f"x_{name}", actor="tests", reason="refused",
                     configs_dir=world.configs, expected_version_id=None)
    assert kinds <= e.value.kinds, e.value
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_preflight_refuses_what_the_browser_cannot_run(world, tmp_path, monkeypatch) -> None:
    _refused(world, "vp_dsl_no_depth", {"gold_dsl"}, "node 'bid_depth'", "not in the stream_schema")
    _refused(world, "ema_dsl", {"gold_dsl"}, "ema_ensemble producer")
    caps = json.loads(dsl.BROWSER_CAPABILITIES_PATH.read_text())
    caps["node_types"]["norm"]["method"].remove("zscore")
    narrowed = tmp_path / "caps.json"
    narrowed.write_text(json.dumps(caps))
    monkeypatch.setattr(dsl, "BROWSER_CAPABILITIES_PATH", narrowed)
    _refused(world, "vp_dsl", {"gold_dsl"}, "node 'local_imbalance_z'", "node 'book_imbalance_z'", "zscore")
    monkeypatch.undo()
    broken = world.configs / "gold" / "depth_imbalance.yaml"
    good = broken.read_text()
    try:
        broken.write_text(good.replace("source: local_imbalance_ewm", "source: nowhere"))
        _refused(world, "vp_dsl", {"gold_dsl"}, "nowhere")
    finally:
        broken.write_text(good)


def test_the_browser_capabilities_name_only_what_the_dsl_has() -> None:
    caps = dsl.browser_capabilities()
    fields = {"temporal_window": dsl.TemporalWindow, "norm": dsl.Norm, "spatial_neighborhood": dsl.SpatialNeighborhood,
              "expr": dsl.Expr, "output": dsl.Output, "silver_ref": dsl.SilverRef, "const": dsl.Const}
    assert set(caps["node_types"]) == set(fields)
    for t, rules in caps["node_types"].items():
        for field, allowed in rules.items():
            ann = str(fields[t].model_fields[field].annotation)
            assert all(f"'{v}'" in ann for v in allowed), (t, field)
    assert set(caps["expr_functions"]) == set(dsl.EXPR_FUNCTIONS)
    assert dsl.browser_problems(dsl.load_spec(SPEC), {"k", "bid_depth", "ask_depth"}) == []
    assert Path(dsl.BROWSER_CAPABILITIES_PATH).is_file()


async def _stream(uri: str, limit_bins: int, headers: dict[str, str]) -> tuple[dict, list]:
    out: list = []
    hello = None
    pending = None
    async with connect(uri, max_size=None, compression=None, additional_headers=headers) as ws:
        async for msg in ws:
            if isinstance(msg, bytes):
                out.append((pending, msg))
                if len(out) >= limit_bins:
                    break
                continue
            d = json.loads(msg)
            if d["type"] == "runtime_config":
                hello = d
            elif d["type"] == "grid_update":
                pending = d
    return hello, out


def _state(msg: dict) -> dict[str, np.ndarray]:
    return {name: np.frombuffer(base64.b64decode(msg[name]["b64"]), np.dtype(msg[name]["dtype"]).newbyteorder("<"))
            for name in dsl_runtime.STATE_ARRAYS}


def test_a_midday_client_gets_the_session_state_and_reproduces_the_served_outputs(world) -> None:
    """Over the wire: the hello carries the DSL state (the worker-built checkpoint's), and a runtime resumed from it
    on the received silver gives the outputs of a replay from the session start, bin for bin."""
    _, full = _frames(world)
    by_end = {f.bin_end_ns: f for f in full}
    version = RegistrySource(lake=world.lake, instrument=world.instrument).resolve("dsl")
    spec = dsl.GoldDslSpec.model_validate(version.snapshot["gold_dsl"]["spec"])
    inst = world.instrument
    with serve(world.lake, version.version_id, QMACHINA_SERVING_LEAD_IN_S="0.05", QMACHINA_SERVING_MAX_STALL_S="30",
               QMACHINA_SERVING_INLINE_WARMUP_RECORDS="1000") as srv:
        hello, got = asyncio.run(_stream(f"{srv.ws}?serving=dsl&start=18:02:10&end=18:03:00&speed=50", 300,
                                         srv.access.ws_headers("viewer")))
    state = hello["replay"]["gold_dsl_state"]
    rt = dsl_runtime.DslRuntime(spec, inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms)
    assert state["key"] == rt.state_key()
    rt.load_state(_state(state))
    assert len(got) == 300
    cell_ns = inst.cell_width_ms * 1_000_000
    for upd, frame in got:
        t = pa.ipc.open_stream(frame).read_all()
        out = rt.step({"bin_seq": np.array([int(upd["bin_start_ns"]) // cell_ns]),
                       "spot_ref_price_int": np.array([int(upd["spot_ref_price_int"])]),
                       "book_valid": np.array([upd["book_valid"]])},
                      {c: t.column(c).to_numpy() for c in ("k", "bid_depth", "ask_depth")})
        ref = by_end[int(upd["bin_end_ns"])]
        for c, v in ref.gold.items():
            assert np.array_equal(out[c], v, equal_nan=True), (upd["bin_seq"], c)
