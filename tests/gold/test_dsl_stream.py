"""The Gold DSL stream: `DslRuntime.step` bin by bin equals the batch `execute` to the bit, on every shipped
spec (a real day) and on random valid specs (hypothesis, over node types and parameters), also when the
stream is cut into random chunks and resumed from a checkpoint in a fresh runtime."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmachina_assets.core.engine import engine as eng
from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from tests.conftest import ESH4_1225, sample
from tests.support.dsl_reference import reference_execute
from tests.support.dsl_specs import Draw, random_spec, synthetic_silver

SHIPPED = sorted((PROJECT_ROOT / "configs" / "gold").glob("*.yaml"))


def _cut(bins: dict, grid: dict, b0: int, b1: int, w: int) -> tuple[dict, dict]:
    return {c: v[b0:b1] for c, v in bins.items()}, {c: v[b0 * w:b1 * w] for c, v in grid.items()}


def _stream(rt: dsl_runtime.DslRuntime, bins: dict, grid: dict, cuts: list[int]) -> dict[str, np.ndarray]:
    w = rt.program.width
    parts = [rt.step(*_cut(bins, grid, a, b, w)) for a, b in itertools.pairwise(cuts)]
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert list(a) == list(b), what
    for col in a:
        assert a[col].dtype == b[col].dtype, (what, col)
        bits = {8: np.uint64, 4: np.uint32}.get(a[col].dtype.itemsize) if a[col].dtype.kind == "f" else None
        x, y = (a[col], b[col]) if bits is None else (a[col].view(bits), b[col].view(bits))
        assert np.array_equal(x, y), (what, col)  # floats: the same bits (NaN payloads, signed zeros)


@pytest.fixture(scope="module")
def rth_slice() -> tuple[dict, dict]:
    """3,000 busy bins of the real sample day ESH4 2023-12-25 (±50 grid)."""
    bins_t, grid_t = eng.run_file(sample(ESH4_1225), locked_instrument())
    w = 2 * locked_instrument().grid_radius_ticks + 1
    b0, b1 = 40_000, 43_000
    return ({c: bins_t[c].to_numpy()[b0:b1].copy() for c in bins_t.column_names},
            {c: grid_t[c].to_numpy()[b0 * w:b1 * w].copy() for c in grid_t.column_names})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_spec_streams_bin_by_bin_as_batch(path, rth_slice) -> None:
    inst = locked_instrument()
    spec = dsl.load_spec(path)
    bins, grid = rth_slice
    bins = {**bins, "book_valid": bins["book_valid"].copy()}
    bins["book_valid"][700:705] = False  # an invalid run breaks every series
    r, tick, cw = inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms
    batch = dsl_runtime.execute(spec, bins, grid, r, tick, cw)
    n = len(bins["bin_seq"])
    one_by_one = _stream(dsl_runtime.DslRuntime(spec, r, tick, cw), bins, grid, list(range(n + 1)))
    _same(one_by_one, batch, f"{path.name}: one bin per step")
    rt = dsl_runtime.DslRuntime(spec, r, tick, cw)
    head = _stream(rt, bins, grid, [0, 1234])
    resumed = dsl_runtime.DslRuntime(spec, r, tick, cw)
    resumed.restore(rt.checkpoint())
    tail = _stream(resumed, bins, grid, [1234, 2000, 2001, n])
    _same({c: np.concatenate([head[c], tail[c]]) for c in head}, batch, f"{path.name}: checkpoint at bin 1234")
    outs = [spec.nodes[o].name for o in spec.outputs]  # type: ignore[union-attr]
    assert any(np.abs(batch[c][batch["gold_valid"]]).max() > 0 for c in outs)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_valid_specs_stream_as_batch(data) -> None:
    """Over node types and parameters: one bin per step, random chunks, and a checkpoint resumed in a fresh
    runtime all give the batch result to the bit; and the batch agrees with a plain per-series reference."""
    d = Draw(data)
    raw = random_spec(d)
    assert dsl.validate(raw) == [], raw
    spec = dsl.validate_or_raise(raw)
    radius = d.int(1, 3)
    n_bins = d.int(1, 90)
    bins, grid = synthetic_silver(np.random.default_rng(d.int(0, 2**31)), n_bins, radius)
    tick, cw = 250_000_000, d.choice([100, 250])
    batch = dsl_runtime.execute(spec, bins, grid, radius, tick, cw)
    assert len(batch["k"]) == n_bins * (2 * radius + 1)
    ref = reference_execute(spec, bins, grid, radius, tick, cw)
    assert list(ref) == list(batch)
    for col, want in ref.items():
        assert batch[col].dtype == want.dtype, col
        np.testing.assert_allclose(batch[col], want, rtol=1e-7, atol=1e-9, equal_nan=True, err_msg=f"{col}: {raw}")
    _same(_stream(dsl_runtime.DslRuntime(spec, radius, tick, cw), bins, grid, list(range(n_bins + 1))), batch,
          "one bin per step")
    cuts = sorted({0, n_bins, *(d.int(0, n_bins) for _ in range(d.int(0, 4)))})
    split = d.choice(cuts)
    rt = dsl_runtime.DslRuntime(spec, radius, tick, cw)
    head = _stream(rt, bins, grid, [c for c in cuts if c <= split]) if split else None
    resumed = dsl_runtime.DslRuntime(spec, radius, tick, cw)
    resumed.restore(rt.checkpoint())
    tail = _stream(resumed, bins, grid, [c for c in cuts if c >= split]) if split < n_bins else None
    parts = [p for p in (head, tail) if p is not None]
    _same({c: np.concatenate([p[c] for p in parts]) for c in parts[0]}, batch, f"chunks {cuts}, resumed at {split}")


def test_checkpoint_refuses_another_spec_or_geometry() -> None:
    spec = dsl.load_spec(SHIPPED[0])
    other = dsl.load_spec(PROJECT_ROOT / "configs" / "gold" / "depth_imbalance.yaml")
    assert spec.spec_hash != other.spec_hash
    blob = dsl_runtime.DslRuntime(spec, 5, 250_000_000, 100).checkpoint()
    for rt in (dsl_runtime.DslRuntime(other, 5, 250_000_000, 100), dsl_runtime.DslRuntime(spec, 4, 250_000_000, 100),
               dsl_runtime.DslRuntime(spec, 5, 250_000_000, 250)):
        with pytest.raises(ValueError, match="DSL checkpoint is for"):
            rt.restore(blob)


def test_step_refuses_a_grid_that_is_not_k_minus_r_to_r() -> None:
    spec = dsl.load_spec(PROJECT_ROOT / "configs" / "gold" / "depth_imbalance.yaml")
    rt = dsl_runtime.DslRuntime(spec, 2, 250_000_000, 100)
    bins, grid = synthetic_silver(np.random.default_rng(0), 3, 2)
    with pytest.raises(ValueError, match="expected 3 bins x 5 rows"):
        rt.step(bins, {c: v[:-1] for c, v in grid.items()})
    grid["k"] = grid["k"][::-1].copy()
    with pytest.raises(ValueError, match=r"k = -R\.\.R"):
        rt.step(bins, grid)
