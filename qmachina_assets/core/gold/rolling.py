"""Numba primitives for causal rolling statistics, shared by the built-in gold kernel and the Gold DSL.

A rolling robust z-score needs the median and the MAD of the last W samples at every step. Both
come from a sorted copy of the window kept up to date by a replace per step (positions by counting,
then one memmove of the elements between them: O(W), fast for W in the hundreds), and the MAD from the
split of the two sorted deviation runs on either side of the median (bracketed around the previous
step's split, else counted), so no step sorts. Results equal numpy's `median` / `median(|x - median|)`
bit for bit (tested), which is what lets the browser (sorted copies) match. Measured choices (W = 300,
real d1..d3 series): counting beat binary search (whose loads race the memmove's stores); the
memmove itself is ~15 % of the gold cell, so a blocked sqrt(W) layout (shorter moves, but indirect
median/MAD reads) was not pursued; `_nrt=False` everywhere, since numba's atomic incref/decref on
every array view had cost a third of the gold cell.

Undefined samples are NaN: they occupy a slot of the window (the window is the last W *bins*) but
never enter the sorted copy, so statistics use the defined values only.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

MAD_SCALE = 1.4826  # MAD -> standard deviation under normality (SPEC §4.4)


@intrinsic
def _move(typingctx, arr, dst, src, count):
    """llvm.memmove of `count` float64 items of a contiguous 1-D array from index `src` to index `dst`.

    Shifting the sorted window is the hot spot of the rolling median; a scalar loop measured 83 ns per
    100 items, memmove 15 ns.
    """
    sig = types.void(arr, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a, d, s, n = args
        data = context.make_array(signature.args[0])(context, builder, a).data
        cgutils.raw_memmove(builder, builder.gep(data, [d]), builder.gep(data, [s]), n, 8)

    return sig, codegen


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def lower_bound(a: np.ndarray, n: int, x: float) -> int:
    """First index i in a[:n] with a[i] >= x."""
    base = 0
    size = n
    while size > 1:  # branch-free halving: the compare becomes a conditional move
        half = size >> 1
        base = base + half if a[base + half - 1] < x else base
        size -= half
    if size == 1 and a[base] < x:
        base += 1
    return base


@njit(cache=True, _nrt=False, error_model="numpy")
def sorted_insert(a: np.ndarray, n: int, x: float) -> int:
    """Insert x into the sorted a[:n]; returns the new length."""
    i = lower_bound(a, n, x)
    _move(a, i + 1, i, n - i)
    a[i] = x
    return n + 1


@njit(cache=True, _nrt=False, error_model="numpy")
def sorted_remove(a: np.ndarray, n: int, x: float) -> int:
    """Remove one occurrence of x from the sorted a[:n]; returns the new length."""
    i = lower_bound(a, n, x)
    _move(a, i, i + 1, n - 1 - i)
    return n - 1


_BLOCK = 32  # rank2's first level: every _BLOCK-th element of the sorted window


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def count_below2(a: np.ndarray, lo: int, hi: int, x: float, y: float) -> tuple[int, int]:
    """(#a[lo:hi] < x, #a[lo:hi] < y) in one vectorised pass (indices from 0 in a slice: numba's
    negative-index wraparound on a computed index would keep the loop scalar)."""
    v = a[lo:hi]
    ci = 0
    cj = 0
    for k in range(hi - lo):
        ci += v[k] < x
        cj += v[k] < y
    return ci, cj


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def rank2(a: np.ndarray, n: int, x: float, y: float) -> tuple[int, int]:
    """(lower_bound(x), lower_bound(y)) in the sorted a[:n], as counts of smaller elements.

    Counting instead of binary search: no dependent load chain, and no loads racing the previous
    step's memmove stores (112 ns per replace with two binary searches, 57 ns with one counting pass
    over W = 300). Two levels: whole blocks whose last element is smaller are counted from every
    _BLOCK-th element, then one block is counted element by element."""
    if n < 2 * _BLOCK:
        return count_below2(a, 0, n, x, y)
    bx = 0
    by = 0
    for b in range(_BLOCK - 1, n, _BLOCK):
        bx += a[b] < x
        by += a[b] < y
    sx = bx * _BLOCK
    sy = by * _BLOCK
    cx = count_below2(a, sx, min(sx + _BLOCK, n), x, x)[0]
    cy = count_below2(a, sy, min(sy + _BLOCK, n), y, y)[0]
    return sx + cx, sy + cy


@njit(cache=True, _nrt=False, error_model="numpy")
def sorted_replace(a: np.ndarray, n: int, old: float, new: float) -> None:
    """Remove one `old` and insert `new` in the sorted a[:n] (length unchanged), moving only the
    elements between the two positions: a full window's steady state is one of these per step."""
    i, j = rank2(a, n, old, new)
    if j > i:
        _move(a, i, i + 1, j - 1 - i)
        a[j - 1] = new
    else:
        _move(a, j + 1, j, i - j)
        a[j] = new


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def sorted_median(a: np.ndarray, n: int) -> float:
    h = n >> 1
    if n & 1:
        return a[h]
    return (a[h - 1] + a[h]) / 2.0


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _takes_more_left(a: np.ndarray, m: float, lp: int, k: int, i: int) -> bool:
    """R(k-i) > L(i): with i of the k+1 smallest from the left run, the right run's last is too big."""
    return (a[lp + k - i] - m) > (m - a[lp - 1 - i])


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _kth_deviations(a: np.ndarray, n: int, m: float, lp: int, k: int, both: bool,
                    hint: int) -> tuple[float, float, int]:
    """The k-th and (if `both`) (k+1)-th smallest (0-based) of |a[i] - m| over a[:n], a[:lp] < m <= a[lp:n],
    and the split found (a hint for the next call; any hint gives the same values).

    Left run L(t) = m - a[lp-1-t] and right run R(t) = a[lp+t] - m are both ascending. The number i of
    the k+1 smallest taken from L is the first i in [lo, hi] where `_takes_more_left` is false (it is
    true..false as i grows, and false at hi): bracketed around `hint` (a window moves by one sample per
    step, so the split rarely moves by more than one), else counted in one vectorised pass. The k-th is then the
    larger of the two runs' last taken, the next the smaller head.
    """
    nl = lp
    nr = n - lp
    lo = max(0, k + 1 - nr)
    hi = min(k + 1, nl)
    i = hint
    found = False
    if lo <= hint - 2 and hint + 2 < hi and _takes_more_left(a, m, lp, k, hint - 2) \
            and not _takes_more_left(a, m, lp, k, hint + 2):
        # the split is in (hint-2, hint+2]: count the trues between, no branch (it moves by <= 1 in 95 %)
        i = (hint - 1 + _takes_more_left(a, m, lp, k, hint - 1) + _takes_more_left(a, m, lp, k, hint)
             + _takes_more_left(a, m, lp, k, hint + 1))
        found = True
    if not found:
        left = a[lp - hi:lp - lo]  # left[u] = a[q], q = lp-1-t for t = hi-1-u
        right = a[lp - hi + k + 1:lp - lo + k + 1]  # right[u] = a[lp+k-t]
        i = lo
        for u in range(hi - lo):  # count the trues
            i += (right[u] - m) > (m - left[u])
    j = k + 1 - i
    l_prev = (m - a[lp - i]) if i > 0 else -np.inf  # L(i-1)
    r_prev = (a[lp + j - 1] - m) if j > 0 else -np.inf  # R(j-1)
    kth = l_prev if l_prev > r_prev else r_prev
    if not both:
        return kth, kth, i
    l_next = (m - a[lp - 1 - i]) if i < nl else np.inf  # L(i)
    r_next = (a[lp + j] - m) if j < nr else np.inf  # R(j)
    return kth, (l_next if l_next < r_next else r_next), i


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def sorted_mad_at(a: np.ndarray, n: int, m: float, hint: int) -> tuple[float, int]:
    """(median(|a[:n] - m|), split) for sorted a (numpy's definition: mean of the two middles when n is
    even); `hint` is the split of a previous call on a similar window (-1: none)."""
    h = n >> 1
    lp = h if h > 0 and a[h - 1] < m else lower_bound(a, n, m)  # m is the median: usually lp = h
    if n & 1:
        kth, _, split = _kth_deviations(a, n, m, lp, h, False, hint)
        return kth, split
    lo, hi, split = _kth_deviations(a, n, m, lp, h - 1, True, hint)
    return (lo + hi) / 2.0, split


@njit(cache=True, _nrt=False, error_model="numpy")
def sorted_mad(a: np.ndarray, n: int, m: float) -> float:
    """median(|a[:n] - m|) for sorted a (numpy's definition: mean of the two middles when n is even)."""
    return sorted_mad_at(a, n, m, -1)[0]


@njit(cache=True, _nrt=False, error_model="numpy")
def robust_z_at(x: float, a: np.ndarray, n: int, min_periods: int, eps: float, hint: int) -> tuple[float, int]:
    """`robust_z` plus the MAD split found, to pass as `hint` for the same window's next step (a hint
    never changes the value, only how fast the MAD is found)."""
    if math.isnan(x):
        return np.nan, hint
    if n < min_periods or a[0] == a[n - 1]:
        return 0.0, hint  # a constant window has MAD 0 (common: levels with no flow)
    med = sorted_median(a, n)
    mad, split = sorted_mad_at(a, n, med, hint)
    s = MAD_SCALE * mad
    if s > eps:
        return (x - med) / s, split
    return 0.0, split


@njit(cache=True, _nrt=False, error_model="numpy")
def robust_z(x: float, a: np.ndarray, n: int, min_periods: int, eps: float) -> float:
    """(x - median) / (1.4826 * MAD) over the sorted window a[:n]; 0 while n < min_periods or the scale
    is <= eps; NaN when x itself is undefined."""
    return robust_z_at(x, a, n, min_periods, eps, -1)[0]


@njit(cache=True, _nrt=False, error_model="numpy")
def window_push(fifo: np.ndarray, srt: np.ndarray, head: int, length: int, n_sorted: int, x: float):
    """Push x into a FIFO of capacity W = len(fifo) and its sorted copy of defined values.

    Returns (head, length, n_sorted) after evicting the oldest sample when full.
    """
    cap = fifo.shape[0]
    if length == cap:
        old = fifo[head]
        fifo[head] = x
        head += 1  # wrap by compare, not `%`: an integer division per push was ~2 % of the gold cell
        if head == cap:
            head = 0
        if not math.isnan(old):
            if not math.isnan(x):
                sorted_replace(srt, n_sorted, old, x)
                return head, length, n_sorted
            n_sorted = sorted_remove(srt, n_sorted, old)
    else:
        tail = head + length  # < 2 cap
        fifo[tail - cap if tail >= cap else tail] = x
        length += 1
    if not math.isnan(x):
        n_sorted = sorted_insert(srt, n_sorted, x)
    return head, length, n_sorted


@njit(cache=True, _nrt=False, error_model="numpy")
def window_mean(ring: np.ndarray, newest: int, count: int, w: int) -> float:
    """Mean of the last min(w, count) samples of a ring (newest at index `newest`), summed oldest first
    so every implementation adds in the same order."""
    m = w if count > w else count
    cap = ring.shape[0]
    start = newest - m + 1
    s = 0.0
    if start < 0:
        for t in range(start + cap, cap):
            s += ring[t]
        start = 0
    for t in range(start, newest + 1):
        s += ring[t]
    return s / m
