"""Exact discrete Gaussian N_Z(0, s) from ChaCha20 (Canonne, Kamath, Steinke 2020), numba, CPU.

The algorithm (CKS Algorithms 1-3), every decision an integer comparison:

- Bernoulli(n/M) for integers 0 <= n <= M <= 2^62: a word x (32 bits if M <= 2^32, else 64),
  c = floor(2^w / M) (2^64 - 1 in place of 2^64), redraw while x >= c*M, answer x < n*c. x is
  uniform on [0, c*M), so P(x < n*c) = n/M exactly; n*c <= c*M < 2^w: nothing overflows. A
  64-bit x is read high word first and its low word drawn only when the high word does not
  settle both comparisons (the answer is the full x's; 11.0 words per sample instead of 12.6).
- Bernoulli(exp(-n/d)), 0 <= n <= d (Algorithm 1): K = 1; while Bernoulli(n/(d*K)): K += 1;
  accept iff K is odd. The tables hold c and c*M for M = d*K, K <= 64 (d*K < 2^62 since every d
  here is < 2^56); beyond K = 64 (probability < 1/64!) the step is Bernoulli(n/d) and
  Bernoulli(1/K), two draws.
- Bernoulli(1/e) (Algorithm 1 at gamma = 1): the first 12 steps from one 32-bit word x uniform
  below 8 * 12!: K >= j iff x < 8 * 12!/(j-1)! for j <= 13, then (probability 1/12!) further
  Bernoulli(1/j) steps. Bernoulli(exp(-gamma)) for gamma > 1: floor(gamma) Bernoulli(1/e) that
  must all succeed, then the fractional part.
- Discrete Laplace(t) (Algorithm 2, s = 1): U uniform below t (Lemire's multiply-shift with its
  exact rejection), accept with Bernoulli(exp(-U/t)), V ~ Geometric(1 - 1/e) from Bernoulli(1/e),
  X = U + t V, a sign bit, reject (-, 0).
- Discrete Gaussian (Algorithm 3): t = isqrt(s) + 1, Y ~ Laplace(t), accept with
  Bernoulli(exp(-(|Y| t - s)^2 / (2 s t^2))). Integer ranges: s <= MAX_VARIANCE means
  d = 2 s t^2 < 2^56; V <= 2^31 (else the lane flags an error: probability e^-(2^31)) bounds
  |Y| < 2^46 and |Y| t < 2^60. While a = ||Y| t - s| < 2^31, a^2 < 2^62 is exact; beyond, the
  exponent is >= floor(2^62 / d) >= 64: the candidate must first pass that many Bernoulli(1/e),
  and if one ever does (probability < e^-64) the lane flags an error (the caller raises; never
  an approximation).

Layout (the same in ``kernels.cuda.dgauss``, so CPU and GPU agree bit for bit): ``lanes(count)``
= min(4096, ceil(count / 128)) lanes, a function of the count only (not of the machine); lane l
reads the keystream of (key, nonce) from block counter l * 2^20 on (its own 2^20 blocks: lanes
never share a word) and writes samples l, l + P, l + 2P, ...; each lane consumes its words in
order, one at a time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kernels.cpu.prng import _chacha_lanes

__all__ = [
    "LANE_BLOCKS",
    "MAX_COUNT",
    "MAX_LANES",
    "MAX_VARIANCE",
    "PARALLEL_MIN_COUNT",
    "check_args",
    "check_lanes",
    "check_variance",
    "dgauss_tables",
    "gauss_params",
    "lane_template",
    "lanes_for",
    "raise_on",
    "sample_bernoulli_exp",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
]

#: keystream blocks per lane (its counter range), and the most lanes: 4096 * 2^20 = 2^32
LANE_BLOCKS = 1 << 20
MAX_LANES = 4096
_PER_LANE = 128
#: the most samples per call (a lane then draws <= 2^16 samples, ~2^21 of its 2^24 words)
MAX_COUNT = 1 << 28
#: below this count the lanes run on the calling thread: a few ms of work, where waking numba's
#: threads next to torch's spinning OpenMP workers cost 4x (8192 samples: 4 ms serial, 15-19 ms
#: parallel right after a torch op, on the 2-core machine). The output is the same either way.
PARALLEL_MIN_COUNT = 1 << 15
_DEN_LIMIT = 1 << 56
_KMAX = 64
_F12 = math.factorial(12)
_U64 = np.uint64


def _max_variance() -> int:
    """The largest integer s with 2 s (isqrt(s) + 1)^2 < 2^56 (about 2^27.5)."""
    lo, hi = 1, 1 << 30
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if 2 * mid * (math.isqrt(mid) + 1) ** 2 < _DEN_LIMIT:
            lo = mid
        else:
            hi = mid
    return lo


#: the largest variance the exact integer sampler accepts
MAX_VARIANCE = _max_variance()


def lanes_for(count: int) -> int:
    """Lanes used for ``count`` samples: min(4096, ceil(count / 128)), at least 1."""
    return max(1, min(MAX_LANES, -(-int(count) // _PER_LANE)))


def _bern_consts(m: int) -> tuple[int, int, int]:
    """(c, c*M, wide) for Bernoulli(n/M) (see the module docstring)."""
    if not 1 <= m <= 1 << 62:
        raise ValueError(f"Bernoulli denominator {m} outside [1, 2^62]")
    if m <= 1 << 32:
        c = (1 << 32) // m
        return c, c * m, 0
    c = ((1 << 64) - 1) // m
    return c, c * m, 1


def dgauss_tables(den: int) -> np.ndarray:
    """uint64 (3, 65): row 0 c, row 1 c*M, row 2 wide, for M = den*K at column K (1..64)."""
    tab = np.zeros((3, _KMAX + 1), dtype=np.uint64)
    for k in range(1, _KMAX + 1):
        tab[:, k] = _bern_consts(den * k)
    return tab


def _inv_e_table() -> np.ndarray:
    """T[j] = 8 * 12!/(j-1)! for j = 1..13 (T[0] unused): K >= j iff x < T[j]."""
    c = (1 << 32) // _F12
    return np.array([0] + [c * _F12 // math.factorial(j - 1) for j in range(1, 14)], np.uint64)


_INV_E = _inv_e_table()


# ------------------------------------------------------------------ one lane's state
# One uint64 array per lane holds everything its samplers read (key, nonce, counters, the
# keystream buffer, the tables): helpers take that one array and scalars, because every array
# argument of a numba call that is not inlined costs an atomic incref/decref pair, per word.
_POS, _BASE, _USED, _ERR = 11, 12, 13, 14
_BUF = 16  # 16 keystream blocks, 256 words
_INV = _BUF + 256  # Bernoulli(1/e) thresholds, _INV + j for j = 1..13
_TT = _INV + 14  # tables for den = t: c at _TT + k, c*M at _TT + 65 + k, wide at _TT + 130 + k
_TD = _TT + 3 * (_KMAX + 1)  # the same for den = 2 s t^2
_LANE_WORDS = _TD + 3 * (_KMAX + 1)


def lane_template(key: np.ndarray, nonce: np.ndarray, den_t: int, den_d: int) -> np.ndarray:
    """A lane's state before its first word (its base block counter still 0)."""
    ln = np.zeros(_LANE_WORDS, dtype=np.uint64)
    ln[0:8] = key
    ln[8:11] = nonce
    ln[_POS] = 256
    ln[_INV : _INV + 14] = _INV_E
    ln[_TT : _TT + 195] = dgauss_tables(den_t).reshape(-1)
    ln[_TD : _TD + 195] = dgauss_tables(den_d).reshape(-1)
    return ln


@njit(cache=True, nogil=True)
def _refill(ln):
    used = ln[_USED]
    if used + _U64(16) > _U64(LANE_BLOCKS):
        ln[_ERR] = _U64(2)  # the lane's counter range is spent; its output is not used
        used = _U64(0)
    ctr = np.int64(ln[_BASE] + used)
    _chacha_lanes(ln[0:8], ln[8:11], ctr, 0, 16, ln[_BUF : _BUF + 256].reshape((16, 16)))
    ln[_USED] = used + _U64(16)


@njit(inline="always")
def _word(ln):
    p = ln[_POS]
    if p == _U64(256):
        _refill(ln)
        p = _U64(0)
    ln[_POS] = p + _U64(1)
    return ln[_BUF + np.int64(p)]


@njit(inline="always")
def _bern(ln, n, c, lim, wide):
    """Bernoulli(n/M) given c and lim = c*M (uint64); wide: 64-bit words x = hi 2^32 + lo, lo
    drawn only when hi does not decide x < n*c and x < lim (the same answer as the full x)."""
    cut = n * c
    while True:
        x = _word(ln)
        if wide:
            hi_cut = cut >> _U64(32)
            hi_lim = lim >> _U64(32)
            if x < hi_cut:
                return True  # x < (hi + 1) 2^32 <= cut <= lim
            if x > hi_lim:
                continue  # x >= (hi_lim + 1) 2^32 > lim: redraw
            if x < hi_lim and x > hi_cut:
                return False  # cut < x < hi_lim 2^32 <= lim
            x = (x << _U64(32)) | _word(ln)
        if x < lim:
            return x < cut


@njit(cache=True, nogil=True)
def _bern_inv_k(ln, k):
    """Bernoulli(1/k), 2 <= k < 2^32 (rare steps: one division)."""
    c = (_U64(1) << _U64(32)) // k
    return _bern(ln, _U64(1), c, c * k, False)


@njit(cache=True, nogil=True)
def _bexp_unit(ln, n, tab):
    """Bernoulli(exp(-n/d)) for 0 <= n <= d, d the denominator of the table at ``tab``."""
    k = 1
    while True:
        if k <= _KMAX:
            a = _bern(ln, n, ln[tab + k], ln[tab + 65 + k], ln[tab + 130 + k] != _U64(0))
        else:
            a = _bern(ln, n, ln[tab + 1], ln[tab + 66], ln[tab + 131] != _U64(0))
            a = a and _bern_inv_k(ln, _U64(k))
        if not a:
            return (k & 1) == 1
        k += 1


@njit(cache=True, nogil=True)
def _bern_inv_e(ln):
    """Bernoulli(1/e): Algorithm 1 at gamma = 1, its first 12 steps from one word."""
    lim = ln[_INV + 1]
    while True:
        x = _word(ln)
        if x < lim:
            break
    k = 2  # x < T[2] = lim: the step Bernoulli(1/1) always succeeds
    while k < 13 and x < ln[_INV + k + 1]:
        k += 1
    if k == 13:  # x < 8: K >= 13 (probability 1/12!), continue the chain
        while _bern_inv_k(ln, _U64(k)):
            k += 1
    return (k & 1) == 1


@njit(cache=True, nogil=True)
def _laplace(ln, t, thr):
    """Discrete Laplace(t) (Algorithm 2, s = 1); t < 2^32, thr = 2^32 mod t."""
    tu = _U64(t)
    while True:
        while True:  # Lemire: U uniform below t from one word, exactly
            m = _word(ln) * tu
            if (m & _U64(0xFFFFFFFF)) >= thr:
                break
        u = m >> _U64(32)
        if not _bexp_unit(ln, u, _TT):
            continue
        v = 0
        while _bern_inv_e(ln):
            v += 1
            if v > 1 << 31:
                ln[_ERR] = _U64(1)
                v = 0
        x = np.int64(u) + t * v
        neg = (_word(ln) & _U64(1)) == _U64(1)
        if neg and x == 0:
            continue
        return -x if neg else x


@njit(cache=True, nogil=True)
def _gauss(ln, s, t, thr, den, qlb):
    """Discrete Gaussian N_Z(0, s) (Algorithm 3); den = 2 s t^2, qlb = floor(2^62 / den)."""
    while True:
        y = _laplace(ln, t, thr)
        a = abs(abs(y) * t - s)
        if a >= 1 << 31:  # exponent >= qlb >= 64: reject unless qlb Bernoulli(1/e) all pass
            i = 0
            while i < qlb and _bern_inv_e(ln):
                i += 1
            if i == qlb:
                ln[_ERR] = _U64(1)
            continue
        num = _U64(a * a)
        q = num // den
        r = num - q * den
        i = _U64(0)
        while i < q and _bern_inv_e(ln):
            i += _U64(1)
        if i == q and _bexp_unit(ln, r, _TD):
            return y


# ------------------------------------------------------------------ kernels over lanes


@njit(cache=True, nogil=True)
def _lane(template, lane):
    ln = template.copy()
    ln[_BASE] = _U64(lane) * _U64(LANE_BLOCKS)
    return ln


@njit(cache=True, nogil=True, parallel=True)
def _gauss_kernel(template, s, t, thr, den, qlb, lanes, out, err):
    n = out.shape[0]
    for lane in prange(lanes):
        ln = _lane(template, lane)
        for i in range(lane, n, lanes):
            out[i] = _gauss(ln, s, t, thr, den, qlb)
        err[lane] = ln[_ERR]


@njit(cache=True, nogil=True)
def _gauss_serial(template, s, t, thr, den, qlb, lanes, out, err):
    # the same lanes one after the other: the same output as _gauss_kernel
    n = out.shape[0]
    for lane in range(lanes):
        ln = _lane(template, lane)
        for i in range(lane, n, lanes):
            out[i] = _gauss(ln, s, t, thr, den, qlb)
        err[lane] = ln[_ERR]


@njit(cache=True, nogil=True)  # test entry point: serial, cheap to compile
def _laplace_kernel(template, t, thr, lanes, out, err):
    n = out.shape[0]
    for lane in range(lanes):
        ln = _lane(template, lane)
        for i in range(lane, n, lanes):
            out[i] = _laplace(ln, t, thr)
        err[lane] = ln[_ERR]


@njit(cache=True, nogil=True)  # test entry point: serial, cheap to compile
def _bexp_kernel(template, num, den, lanes, out, err):
    n = out.shape[0]
    q = num // den
    r = num - q * den
    for lane in range(lanes):
        ln = _lane(template, lane)
        for i in range(lane, n, lanes):
            j = _U64(0)
            while j < q and _bern_inv_e(ln):
                j += _U64(1)
            out[i] = j == q and _bexp_unit(ln, r, _TD)
        err[lane] = ln[_ERR]


# ------------------------------------------------------------------ wrappers


def _as_words(x, n: int, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint32 or x.shape != (n,):
        raise ValueError(f"{name} must be a numpy uint32 array of shape ({n},)")
    return np.ascontiguousarray(x)


def check_args(key, nonce, count) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated (key, nonce, count); shared with ``kernels.cuda.dgauss``."""
    count = int(count)
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in [0, {MAX_COUNT}], got {count}")
    return _as_words(key, 8, "key"), _as_words(nonce, 3, "nonce"), count


def check_variance(variance) -> int:
    """``variance`` as an int in [1, MAX_VARIANCE], else ValueError."""
    s = int(variance)
    if s != variance or not 1 <= s <= MAX_VARIANCE:
        raise ValueError(f"variance must be an integer in [1, {MAX_VARIANCE}], got {variance}")
    return s


def gauss_params(s: int) -> tuple[int, int, int, int]:
    """(t, 2^32 mod t, den = 2 s t^2, floor(2^62 / den)) for variance s."""
    t = math.isqrt(s) + 1
    den = 2 * s * t * t
    return t, (1 << 32) % t, den, (1 << 62) // den


def raise_on(err: np.ndarray) -> None:
    """Raise if a lane flagged an error (1: outside the exact range, 2: keystream spent)."""
    e = int(err.max()) if err.size else 0
    if e == 1:
        raise RuntimeError("discrete Gaussian sample outside the exact int64 range")
    if e == 2:
        raise RuntimeError("a lane ran past its keystream range (count too large)")


def check_lanes(lanes, count: int) -> int:
    """``lanes`` (None: ``lanes_for(count)``) checked against [1, MAX_LANES]."""
    lanes = lanes_for(count) if lanes is None else int(lanes)
    if not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be in [1, {MAX_LANES}], got {lanes}")
    return lanes


def sample_discrete_gaussian(key, nonce, variance: int, count: int, lanes=None) -> np.ndarray:
    """``count`` exact samples of N_Z(0, variance), int64; ``variance`` an integer in
    [1, MAX_VARIANCE] (the sigma^2 parameter; the discrete variance is slightly smaller).
    ``lanes`` overrides ``lanes_for(count)`` (tests of the layout at small counts)."""
    key, nonce, count = check_args(key, nonce, count)
    s = check_variance(variance)
    t, thr, den, qlb = gauss_params(s)
    lanes = check_lanes(lanes, count)
    out = np.empty(count, dtype=np.int64)
    err = np.zeros(lanes, dtype=np.int64)
    if count:
        tpl = lane_template(key, nonce, t, den)
        kernel = _gauss_kernel if count >= PARALLEL_MIN_COUNT else _gauss_serial
        kernel(tpl, np.int64(s), np.int64(t), _U64(thr), _U64(den), np.int64(qlb), lanes, out, err)
    raise_on(err)
    return out


def sample_discrete_laplace(key, nonce, t: int, count: int) -> np.ndarray:
    """``count`` samples with P(x) proportional to exp(-|x|/t), int64 (the proposal of the
    Gaussian sampler, the same lane layout); 1 <= t < 2^26."""
    key, nonce, count = check_args(key, nonce, count)
    t = int(t)
    if not 1 <= t < 1 << 26:
        raise ValueError(f"scale t must be an integer in [1, 2^26), got {t}")
    lanes = lanes_for(count)
    out = np.empty(count, dtype=np.int64)
    err = np.zeros(lanes, dtype=np.int64)
    if count:
        tpl = lane_template(key, nonce, t, 1)
        _laplace_kernel(tpl, np.int64(t), _U64((1 << 32) % t), lanes, out, err)
    raise_on(err)
    return out


def sample_bernoulli_exp(key, nonce, num: int, den: int, count: int) -> np.ndarray:
    """``count`` Bernoulli(exp(-num/den)) trials (bool), 0 <= num < 2^63, 1 <= den < 2^56."""
    key, nonce, count = check_args(key, nonce, count)
    num, den = int(num), int(den)
    if not 0 <= num < 1 << 63 or not 1 <= den < _DEN_LIMIT:
        raise ValueError("need 0 <= num < 2^63 and 1 <= den < 2^56")
    lanes = lanes_for(count)
    out = np.empty(count, dtype=np.bool_)
    err = np.zeros(lanes, dtype=np.int64)
    if count:
        tpl = lane_template(key, nonce, 1, den)
        _bexp_kernel(tpl, _U64(num), _U64(den), lanes, out, err)
    raise_on(err)
    return out
