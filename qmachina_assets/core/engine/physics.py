"""Absolute-tick physics (SPEC §2.3–§2.7) as numba helpers over a per-tick state array.

State of slot i lives in one row `ph[i, :]` (float64, 24 columns = 192 bytes, cache friendly):
`0..2` add/pull/fill mass, `3..7` v of add/pull/fill/bid_depth/ask_depth, `8..12` a, `13..17` j,
`18..20` pending add/pull/fill deltas, `21..22` bid/ask depth at the last chain update (the chain
baseline). `tk[i] = (ts the row's state refers to, last_event_id, 1 if it is a zero-input boundary
state)`. Depth levels themselves are the book's integer
`depth[2, N]` (the physics never keeps a second, possibly stale, copy: SPEC §10.4).

Departures from SPEC §2 (each one deliberate):
1. §2.4 step 4 / §10.2: a delta arriving with dt = 0 (same ts_recv as the tick's previous touch, or
   the tick's first touch) is not lost. Add/pull/fill deltas go into `pending` and the depth chain
   keeps its baseline (depth at the last chain update); at the next positive dt (event or bin close)
   the chain input is `(pending + delta) / dt` resp. `(depth - baseline) / dt`. With a single event per
   timestamp this is exactly the SPEC formula (baseline = previous depth, pending = 0).
2. §2.7: the bin-close advance applies that pending input instead of a zero input, so a sweep of
   cancels at one timestamp moves v_pull by the bin close. Afterwards input is zero as in the SPEC.
3. §2.7 is evaluated lazily and in closed form: after an event touch only the first boundary step
   (the one carrying pending input) is stored; every further cell has zero input, which makes the
   SPEC §2.5 chain update linear, x' = M x, so k cells are applied as M^k (tabulated powers, fixed
   order of products) and masses decay by exp(-k·cell/τ_rest). Emitting a bin applies this to a copy,
   so the stored state changes only at stream events: outputs do not depend on which bins were read,
   the chunking, a checkpoint, or the emission window, and no O(N) work is done per bin. Equal to the
   eager SPEC loop up to float rounding.
4. Chains keep the SPEC's "non-finite result keeps the previous triple" at event updates; the
   zero-input M^k steps cannot produce non-finite values from finite ones.
5. v_rest/a_rest/j_rest and rest_depth are derived at read time (bid + ask, SPEC §2.4 step 5);
   pressure/vacuum (§2.6) are not silver and are not kept per tick: `pressure_vacuum` computes them.
6. Time axis is ts_recv (Databento's replay order), not ts_event (SPEC §1.1): ts_event is not monotone
   in a file and snapshot ts_event are original placement times.
7. §10.3: alpha = -expm1(-dt/tau) (accurate for tiny dt, `_exps`). Arithmetic reorderings that change
   results by a few ulp only: `aa/dt` and `aj/dt` are formed once per update and multiplied in; a
   chain with zero input and an all-zero state is left untouched (exactly its fixed point). Not
   fixed (inherent in §2.7): silver still depends weakly on cell_width_ms through the bin-close step.
8. The SPEC's per-tick `last_ts` doubles as "time the stored state refers to": after a bin-close step
   it is that boundary (SPEC §2.7 sets last_ts = T as well), so the next dt is measured from it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# per-tick row layout
P_MASS = 0  # add, pull, fill
P_V = 3  # add, pull, fill, bid, ask
P_A = 8
P_J = 13
P_PEND = 18  # add, pull, fill
P_BASE = 21  # bid, ask
P_COLS = 24
# tk columns: time the row's state refers to, last event id, 1 if the state is a zero-input boundary state
T_LAST_TS, T_LAST_EID, T_AT_BOUNDARY = 0, 1, 2
T_COLS = 3

# constants vector (built by `physics_constants`)
C_TAU_REST, C_TAU_V, C_TAU_A, C_TAU_J, C_CELL_S, C_INV_CELL_NS = range(6)
N_CONSTS = 6
POW_TABLE = 4096  # M^k tabulated for k <= POW_TABLE; larger k through binary powers of M^POW_TABLE
N_BIG = 48
TAB_DECAY = 9  # tab[k, TAB_DECAY] = exp(-(k * cell_s) / tau_rest), the mass decay over k zero-input cells
TAB_COLS = 10
_FDIV_FAST_MAX = 1 << 62


@njit(cache=True, _nrt=False, error_model="numpy")
def fdiv(x: int, d: int, inv_d: float) -> int:
    """`x // d` (d > 0) without a hardware divide in the common case: a float estimate of the quotient
    is accepted only if its remainder is in [0, d), which makes it exact; anything else takes `//`."""
    if 0 <= x < _FDIV_FAST_MAX:
        q = np.int64(x * inv_d)
        r = x - q * d
        if 0 <= r < d:
            return q
    return x // d


@njit(cache=True, _nrt=False, error_model="numpy")
def alpha(dt: float, tau: float) -> float:
    """SPEC §2.5 continuous-time EMA weight (computed with expm1, see `_exps`)."""
    if dt <= 0.0:
        return 0.0
    x = dt / tau
    if x > 50.0:
        return 1.0
    return -math.expm1(-x)


def physics_constants(tau_rest: float, tau_v: float, tau_a: float, tau_j: float, cell_s: float) -> np.ndarray:
    """[tau_rest, tau_v, tau_a, tau_j, cell seconds, 1 / cell nanoseconds (a hint for `fdiv`, never a result)]."""
    c = np.zeros(N_CONSTS, dtype=np.float64)
    c[C_TAU_REST] = tau_rest
    c[C_TAU_V] = tau_v
    c[C_TAU_A] = tau_a
    c[C_TAU_J] = tau_j
    c[C_CELL_S] = cell_s
    c[C_INV_CELL_NS] = 1.0 / (cell_s * 1e9)
    return c


@njit(cache=True, inline="always", _nrt=False, error_model="numpy")
def _exps(dt: float, pc: np.ndarray) -> tuple[float, float, float, float]:
    """(exp(-dt/tau_rest), alpha_v, alpha_a, alpha_j) for dt > 0.

    SPEC §10.3 (numerically fragile chains): alpha = -expm1(-dt/tau) instead of 1 - exp(-dt/tau), which
    loses most digits for the microsecond dts inside a venue event (dt/tau ~ 1e-7 -> ~1e-9 relative
    error, 1e-7 at 1 ns). The dt/tau > 50 -> 1 rule of SPEC §2.5 is kept.
    """
    decay = math.exp(-dt / pc[C_TAU_REST])
    xv = dt / pc[C_TAU_V]
    xa = dt / pc[C_TAU_A]
    xj = dt / pc[C_TAU_J]
    av = 1.0 if xv > 50.0 else -math.expm1(-xv)
    aa = 1.0 if xa > 50.0 else -math.expm1(-xa)
    aj = 1.0 if xj > 50.0 else -math.expm1(-xj)
    return decay, av, aa, aj


@njit(cache=True, _nrt=False, error_model="numpy")
def _decay_exp(k: int, pc: np.ndarray) -> float:
    """Mass decay over k whole cells (SPEC §2.7 applied k times in closed form)."""
    return math.exp(-(k * pc[C_CELL_S]) / pc[C_TAU_REST])


@njit(cache=True, inline="always", _nrt=False, error_model="numpy")
def _decay_k(k: int, pc: np.ndarray, tab: np.ndarray) -> float:
    if k <= POW_TABLE:
        return tab[k, TAB_DECAY]
    return _decay_exp(k, pc)


@njit(cache=True, error_model="numpy")
def _matmul3(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    for r in range(3):
        for c in range(3):
            s = 0.0
            for m in range(3):
                s += x[r * 3 + m] * y[m * 3 + c]
            out[r * 3 + c] = s


@njit(cache=True, error_model="numpy")
def power_tables(pc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M^k (k = 0..POW_TABLE) and M^(POW_TABLE*2^p) for the zero-input chain step over one cell.

    With zero input and dt = cell the SPEC §2.5 update is linear in (v, a, j): x' = M x with
    M = [[1-av, 0, 0], [-aa*av/dt, 1-aa, 0], [-aj*aa*av/dt^2, -aj*aa/dt, 1-aj]].
    Row k also carries the mass decay over k cells (column TAB_DECAY), the very expression `_decay_k`
    would otherwise evaluate, so a lookup is bit-identical to the exp call.
    """
    dt = pc[C_CELL_S]
    _, av, aa, aj = _exps(dt, pc)  # the same weights an eager per-cell step would use
    m = np.zeros(9)
    m[0] = 1.0 - av
    m[3] = -aa * av / dt
    m[4] = 1.0 - aa
    m[6] = -aj * aa * av / (dt * dt)
    m[7] = -aj * aa / dt
    m[8] = 1.0 - aj
    tab = np.zeros((POW_TABLE + 1, TAB_COLS))
    tab[0, 0] = 1.0
    tab[0, 4] = 1.0
    tab[0, 8] = 1.0
    for k in range(1, POW_TABLE + 1):
        _matmul3(m, tab[k - 1], tab[k])
    for k in range(POW_TABLE + 1):
        tab[k, TAB_DECAY] = _decay_exp(k, pc)
    big = np.zeros((N_BIG, 9))
    big[0, :] = tab[POW_TABLE, :9]
    for p in range(1, N_BIG):
        _matmul3(big[p - 1], big[p - 1], big[p])
    return tab, big


@njit(cache=True, inline="always", _nrt=False, error_model="numpy")
def _step(v: float, a: float, j: float, r: float, av: float, cv: float, ka: float, ca: float, kj: float,
          cj: float) -> tuple[float, float, float]:
    """SPEC §2.5 on scalars with per-update coefficients (cv = 1-av, ka = aa/dt, ca = 1-aa, kj = aj/dt,
    cj = 1-aj); a non-finite result keeps the old triple; an all-zero triple with r = 0 stays."""
    if r == 0.0 and v == 0.0 and a == 0.0 and j == 0.0:
        return v, a, j
    v2 = av * r + cv * v
    a2 = ka * (v2 - v) + ca * a
    j2 = kj * (a2 - a) + cj * j
    if math.isfinite(v2) and math.isfinite(a2) and math.isfinite(j2):
        return v2, a2, j2
    return v, a, j


@njit(cache=True, inline="always", _nrt=False, error_model="numpy")
def _update5(ph: np.ndarray, i: int, r0: float, r1: float, r2: float, r3: float, r4: float, inv: float,
             av: float, aa: float, aj: float) -> None:
    """All five chains of slot i: loads first, five independent updates, stores last (lets them overlap)."""
    cv = 1.0 - av
    ka = aa * inv
    ca = 1.0 - aa
    kj = aj * inv
    cj = 1.0 - aj
    v0, a0, j0 = ph[i, P_V], ph[i, P_A], ph[i, P_J]
    v1, a1, j1 = ph[i, P_V + 1], ph[i, P_A + 1], ph[i, P_J + 1]
    v2, a2, j2 = ph[i, P_V + 2], ph[i, P_A + 2], ph[i, P_J + 2]
    v3, a3, j3 = ph[i, P_V + 3], ph[i, P_A + 3], ph[i, P_J + 3]
    v4, a4, j4 = ph[i, P_V + 4], ph[i, P_A + 4], ph[i, P_J + 4]
    v0, a0, j0 = _step(v0, a0, j0, r0, av, cv, ka, ca, kj, cj)
    v1, a1, j1 = _step(v1, a1, j1, r1, av, cv, ka, ca, kj, cj)
    v2, a2, j2 = _step(v2, a2, j2, r2, av, cv, ka, ca, kj, cj)
    v3, a3, j3 = _step(v3, a3, j3, r3, av, cv, ka, ca, kj, cj)
    v4, a4, j4 = _step(v4, a4, j4, r4, av, cv, ka, ca, kj, cj)
    ph[i, P_V], ph[i, P_A], ph[i, P_J] = v0, a0, j0
    ph[i, P_V + 1], ph[i, P_A + 1], ph[i, P_J + 1] = v1, a1, j1
    ph[i, P_V + 2], ph[i, P_A + 2], ph[i, P_J + 2] = v2, a2, j2
    ph[i, P_V + 3], ph[i, P_A + 3], ph[i, P_J + 3] = v3, a3, j3
    ph[i, P_V + 4], ph[i, P_A + 4], ph[i, P_J + 4] = v4, a4, j4


@njit(cache=True, inline="always", _nrt=False, error_model="numpy")
def _materialize(ph: np.ndarray, tk: np.ndarray, depth: np.ndarray, i: int, b_last: int, cell_ns: int,
                 pc: np.ndarray) -> None:
    """Apply the first closed boundary b1 after an event touch (pending input, SPEC §2.7 + departure 2).

    `b_last` is the last closed boundary (a multiple of cell_ns); b1 <= b_last exactly when lt < b_last.
    """
    lt = tk[i, T_LAST_TS]
    if lt <= 0 or tk[i, T_AT_BOUNDARY] == 1 or lt >= b_last:
        return
    b1 = (fdiv(lt, cell_ns, pc[C_INV_CELL_NS]) + 1) * cell_ns
    dt = (b1 - lt) * 1e-9
    decay, av, aa, aj = _exps(dt, pc)
    inv = 1.0 / dt
    db = float(depth[0, i])
    dk = float(depth[1, i])
    _update5(ph, i, ph[i, P_PEND] * inv, ph[i, P_PEND + 1] * inv, ph[i, P_PEND + 2] * inv,
             (db - ph[i, P_BASE]) * inv, (dk - ph[i, P_BASE + 1]) * inv, inv, av, aa, aj)
    for m in range(3):
        ph[i, P_MASS + m] *= decay
        ph[i, P_PEND + m] = 0.0
    ph[i, P_BASE] = db
    ph[i, P_BASE + 1] = dk
    tk[i, T_LAST_TS] = b1
    tk[i, T_AT_BOUNDARY] = 1


@njit(cache=True, inline="always", _nrt=False, error_model="numpy")
def _steps3(v: float, a: float, j: float, k: int, tab: np.ndarray, big: np.ndarray) -> tuple[float, float, float]:
    """M^k (v, a, j) with a canonical order of products (bit-stable whoever calls it)."""
    if v == 0.0 and a == 0.0 and j == 0.0:
        return 0.0, 0.0, 0.0
    r = k % POW_TABLE
    q = k // POW_TABLE
    v2 = tab[r, 0] * v
    a2 = tab[r, 3] * v + tab[r, 4] * a
    j2 = tab[r, 6] * v + tab[r, 7] * a + tab[r, 8] * j
    p = 0
    while q > 0:
        if q & 1:
            v3 = big[p, 0] * v2
            a3 = big[p, 3] * v2 + big[p, 4] * a2
            j3 = big[p, 6] * v2 + big[p, 7] * a2 + big[p, 8] * j2
            v2, a2, j2 = v3, a3, j3
        q >>= 1
        p += 1
    return v2, a2, j2


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def advance_to(ph: np.ndarray, tk: np.ndarray, depth: np.ndarray, i: int, upto_ns: int, cell_ns: int,
               pc: np.ndarray, tab: np.ndarray, big: np.ndarray) -> None:
    """Store slot i's state as of the last closed boundary <= upto_ns (before an event touch)."""
    b_last = fdiv(upto_ns, cell_ns, pc[C_INV_CELL_NS]) * cell_ns
    _materialize(ph, tk, depth, i, b_last, cell_ns, pc)
    if tk[i, T_AT_BOUNDARY] != 1:
        return
    lt = tk[i, T_LAST_TS]
    k = fdiv(b_last - lt, cell_ns, pc[C_INV_CELL_NS])
    if k <= 0:
        return
    for c in range(5):
        v, a, j = _steps3(ph[i, P_V + c], ph[i, P_A + c], ph[i, P_J + c], k, tab, big)
        ph[i, P_V + c] = v
        ph[i, P_A + c] = a
        ph[i, P_J + c] = j
    decay = _decay_k(k, pc, tab)
    for m in range(3):
        ph[i, P_MASS + m] *= decay
    tk[i, T_LAST_TS] = b_last


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def touch(ph: np.ndarray, tk: np.ndarray, depth: np.ndarray, i: int, ts: int, da: float, dp: float,
          df: float, eid: int, pc: np.ndarray) -> None:
    """Event update of slot i at ts (SPEC §2.4 with departure 1). Call after advance_to and the depth change."""
    lt = tk[i, T_LAST_TS]
    if lt > 0 and ts > lt:
        dt = (ts - lt) * 1e-9
        decay, av, aa, aj = _exps(dt, pc)
        ph[i, P_MASS] = ph[i, P_MASS] * decay + da
        ph[i, P_MASS + 1] = ph[i, P_MASS + 1] * decay + dp
        ph[i, P_MASS + 2] = ph[i, P_MASS + 2] * decay + df
        inv = 1.0 / dt
        db = float(depth[0, i])
        dk = float(depth[1, i])
        _update5(ph, i, (ph[i, P_PEND] + da) * inv, (ph[i, P_PEND + 1] + dp) * inv,
                 (ph[i, P_PEND + 2] + df) * inv, (db - ph[i, P_BASE]) * inv, (dk - ph[i, P_BASE + 1]) * inv,
                 inv, av, aa, aj)
        ph[i, P_PEND] = 0.0
        ph[i, P_PEND + 1] = 0.0
        ph[i, P_PEND + 2] = 0.0
        ph[i, P_BASE] = db
        ph[i, P_BASE + 1] = dk
    else:
        ph[i, P_MASS] += da
        ph[i, P_MASS + 1] += dp
        ph[i, P_MASS + 2] += df
        ph[i, P_PEND] += da
        ph[i, P_PEND + 1] += dp
        ph[i, P_PEND + 2] += df
    if ts > lt:
        tk[i, T_LAST_TS] = ts
    tk[i, T_LAST_EID] = eid
    tk[i, T_AT_BOUNDARY] = 0


@njit(cache=True, _nrt=False, error_model="numpy")
def read_window(ph: np.ndarray, tk: np.ndarray, depth: np.ndarray, lo: int, hi: int, t_ns: int, cell_ns: int,
                pc: np.ndarray, tab: np.ndarray, big: np.ndarray, out: np.ndarray, out_eid: np.ndarray,
                row0: int) -> None:
    """Slots lo..hi-1 as of closed boundary t_ns as the 24 SILVER floats into out[:, row0 + (i - lo)].

    Only the first boundary after a touch is stored (`_materialize`, the same whenever it runs); further
    zero-input cells are applied to a copy, so what is emitted never depends on which bins were read.
    One call per bin (not per row): numba call overhead per row would dominate the emission cost.
    """
    n = depth.shape[1]
    inv_cell = pc[C_INV_CELL_NS]
    b_last = fdiv(t_ns, cell_ns, inv_cell) * cell_ns
    for i in range(lo, hi):
        row = row0 + i - lo
        if i < 0 or i >= n:
            for c in range(24):
                out[c, row] = 0.0
            out_eid[row] = 0
            continue
        if tk[i, T_AT_BOUNDARY] == 0 and tk[i, T_LAST_TS] > 0:
            _materialize(ph, tk, depth, i, b_last, cell_ns, pc)
        k = 0
        if tk[i, T_AT_BOUNDARY] == 1:
            k = fdiv(t_ns - tk[i, T_LAST_TS], cell_ns, inv_cell)
        b = float(depth[0, i])
        a = float(depth[1, i])
        decay = _decay_k(k, pc, tab) if k > 0 else 1.0
        out[0, row] = ph[i, P_MASS] * decay
        out[1, row] = ph[i, P_MASS + 1] * decay
        out[2, row] = ph[i, P_MASS + 2] * decay
        out[3, row] = b + a
        out[4, row] = b
        out[5, row] = a
        for c in range(5):
            v = ph[i, P_V + c]
            av_ = ph[i, P_A + c]
            j = ph[i, P_J + c]
            if k > 0:
                v, av_, j = _steps3(v, av_, j, k, tab, big)
            col = 6 + c if c < 3 else 7 + c  # bid -> 10, ask -> 11 (9 is rest)
            out[col, row] = v
            out[col + 6, row] = av_
            out[col + 12, row] = j
        for g in range(3):
            out[9 + 6 * g, row] = out[10 + 6 * g, row] + out[11 + 6 * g, row]
        out_eid[row] = tk[i, T_LAST_EID]


def pressure_vacuum(cols: dict[str, np.ndarray], c: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §2.6 two-force model from silver columns; `c` = (c1..c7). Lives in gold, provided for full-grid use."""
    c1, c2, c3, c4, c5, c6, c7 = c
    pressure = c1 * cols["v_add"] + c2 * np.maximum(cols["v_rest_depth"], 0) + c3 * np.maximum(cols["a_add"], 0)
    vacuum = (c4 * cols["v_pull"] + c5 * cols["v_fill"] + c6 * np.maximum(-cols["v_rest_depth"], 0)
              + c7 * np.maximum(cols["a_pull"], 0))
    return pressure, vacuum
