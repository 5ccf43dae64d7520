"""Canonne, Kamath and Steinke's exact samplers (NeurIPS 2020, Algorithms 1-3), vectorized.

Every step works on int64 tensors on the noise's device and draws its randomness from
:class:`~dmhe.privacy.random.RandomBits`.

- :func:`bernoulli_exp`: Bernoulli(exp(-num/den)) for rationals by the alternating-series
  algorithm (Algorithm 1); ``Bernoulli(num/(den*k))`` is ``Bernoulli(1/k) and Bernoulli(num/den)``,
  drawn as one uniform below ``den*k`` while that is at most 2^62 (two draws beyond); at
  gamma = 1 (Bernoulli(1/e), the geometric part of the Laplace sampler) the first 20 steps come
  from one uniform integer below 20!, located by a binary search over the 21 thresholds.
- :func:`discrete_laplace` (Algorithm 2, s = 1) and :func:`discrete_gaussian` (Algorithm 3) are
  rejection samplers. Accepted candidates of a rejection sampler are i.i.d. draws from the target,
  so each pass draws a pool of candidates (about twice what is still missing) and keeps the
  accepted ones in order: exact, with few passes.
- :func:`discrete_gaussian` takes an *integer* variance parameter s. Its acceptance exponent
  ``(|Y| t - s)^2 / (2 s t^2)`` (t = floor(sqrt(s)) + 1) is exact in int64 while
  ``|Y| t - s < 2^31``. Beyond that the exponent is at least ``2^62 / (2 s t^2) >= 64`` (we require
  ``2 s t^2 < 2^56``): such a candidate must first survive that many Bernoulli(1/e) trials, and if
  one ever does (probability < e^-64) the sampler raises instead of approximating.
"""

from __future__ import annotations

import math

import torch

from dmhe.privacy.random import RandomBits

__all__ = [
    "MAX_VARIANCE",
    "bernoulli_exp",
    "discrete_gaussian",
    "discrete_gaussian_pmf",
    "discrete_laplace",
]

_EXACT = 1 << 31
_DEN_LIMIT = 1 << 56
_TWO62 = 1 << 62


def _max_variance() -> int:
    lo, hi = 1, 1 << 30
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if 2 * mid * (math.isqrt(mid) + 1) ** 2 < _DEN_LIMIT:
            lo = mid
        else:
            hi = mid
    return lo


#: the largest integer variance the exact int64 sampler accepts (about 2^27.5)
MAX_VARIANCE = _max_variance()


_FACT = [math.factorial(j) for j in range(21)]
#: P(K >= j) = 1/(j-1)! for Algorithm 1 at gamma = 1: X uniform below 20! gives K >= j iff
#: X < 20!/(j-1)!, exactly, for j <= 21
_INV_E_STEPS = torch.tensor([_FACT[20] // _FACT[j - 1] for j in range(1, 22)], dtype=torch.int64)
_INV_E_ASC = _INV_E_STEPS.flip(0).contiguous()


def _bernoulli_exp_unit(bits: RandomBits, num: torch.Tensor, den: int) -> torch.Tensor:
    """Bernoulli(exp(-num/den)) for ``0 <= num <= den`` (CKS Algorithm 1: K = 1; while
    Bernoulli(gamma/K): K += 1; return K odd). The active set shrinks by a factor k at step k."""
    k_final = torch.ones_like(num)
    active = torch.arange(num.numel(), device=num.device)
    k = 1
    while active.numel():
        m = active.numel()
        if den * k <= _TWO62:  # Bernoulli(num/(den*k)) from one uniform draw below den*k
            a = bits.below(den * k, m) < num[active]
        else:
            a = bits.below(den, m) < num[active]
            a &= bits.below(k, m) == 0
        k_final[active[~a]] = k
        active = active[a]
        k += 1
    return k_final % 2 == 1


def _bernoulli_inv_e(bits: RandomBits, count: int) -> torch.Tensor:
    """``count`` exact Bernoulli(1/e) trials: Algorithm 1 at gamma = 1, its first 20 steps read
    off one uniform integer below 20! (see ``_INV_E_STEPS``)."""
    x = bits.below(_FACT[20], count)
    ascending = _INV_E_ASC.to(x.device)
    # K = #{j : x < steps[j]} (capped at 21), by an exact integer binary search
    k = 21 - torch.searchsorted(ascending, x, right=True)
    rare = torch.nonzero(k == 21).flatten()  # probability 1/20!: continue the chain
    j = 21
    while rare.numel():
        go = bits.below(j, rare.numel()) == 0
        k[rare[go]] += 1
        rare = rare[go]
        j += 1
    return k % 2 == 1


def bernoulli_exp(bits: RandomBits, num: torch.Tensor, den: int) -> torch.Tensor:
    """Exact Bernoulli(exp(-num/den)) per element, ``num >= 0``, ``1 <= den < 2^62``
    (floor(gamma) Bernoulli(1/e) trials that must all succeed, then the fractional part)."""
    q, r = num // den, num % den
    alive = torch.ones(num.shape, dtype=torch.bool, device=num.device)
    idx = torch.nonzero(q > 0).flatten()
    done = 0
    while idx.numel():
        ok = _bernoulli_inv_e(bits, idx.numel())
        alive[idx[~ok]] = False
        done += 1
        idx = idx[ok]
        idx = idx[q[idx] > done]
    live = torch.nonzero(alive).flatten()
    alive[live] = _bernoulli_exp_unit(bits, r[live], den)
    return alive


def _geometric(bits: RandomBits, count: int) -> torch.Tensor:
    """Number of Bernoulli(1/e) successes before the first failure (Geometric(1 - 1/e))."""
    v = torch.zeros(count, dtype=torch.int64, device=bits.device)
    live = torch.arange(count, device=bits.device)
    while live.numel():
        ok = _bernoulli_inv_e(bits, live.numel())
        live = live[ok]
        v[live] += 1
    return v


def _pool(count: int, draw: object, rate: float) -> torch.Tensor:
    """``count`` accepted candidates, drawing pools sized for the acceptance ``rate``."""
    parts: list[torch.Tensor] = []
    have = 0
    while have < count:
        need = count - have
        cands = draw(math.ceil(need / rate) + 16)  # type: ignore[operator]
        parts.append(cands)
        have += cands.numel()
    return torch.cat(parts)[:count]


def discrete_laplace(bits: RandomBits, t: int, count: int) -> torch.Tensor:
    """``count`` samples with P(x) proportional to exp(-|x|/t) (CKS Algorithm 2, s = 1)."""
    if t < 1:
        raise ValueError(f"scale t must be a positive integer, got {t}")

    def draw(m: int) -> torch.Tensor:
        u = bits.below(t, m)
        d = _bernoulli_exp_unit(bits, u, t)
        v = torch.zeros_like(u)
        live = torch.nonzero(d).flatten()
        v[live] = _geometric(bits, live.numel())
        x = u + t * v
        negative = bits.below(2, m) == 1
        ok = d & ~(negative & (x == 0))
        return torch.where(negative, -x, x)[ok]

    return _pool(count, draw, 0.5)


def discrete_gaussian(bits: RandomBits, variance: int, count: int) -> torch.Tensor:
    """``count`` exact samples of N_Z(0, variance) (CKS Algorithm 3), int64 on ``bits.device``.

    ``variance`` (the sigma^2 parameter; the discrete distribution's variance is slightly
    smaller) is an integer in ``[1, MAX_VARIANCE]``.
    """
    s = int(variance)
    if s != variance or not 1 <= s <= MAX_VARIANCE:
        raise ValueError(f"variance must be an integer in [1, {MAX_VARIANCE}], got {variance}")
    t = math.isqrt(s) + 1
    den_value = 2 * s * t * t

    def draw(m: int) -> torch.Tensor:
        y = discrete_laplace(bits, t, m)
        a = (y.abs() * t - s).abs()
        exact = a < _EXACT
        accept = torch.zeros_like(exact)
        ix = torch.nonzero(exact).flatten()
        accept[ix] = bernoulli_exp(bits, a[ix] * a[ix], den_value)
        big = torch.nonzero(~exact).flatten()
        if big.numel():
            floor_lb = torch.full_like(big, (1 << 62) // den_value)
            if bool(bernoulli_exp(bits, floor_lb, 1).any()):
                raise RuntimeError("discrete Gaussian sample outside the exact int64 range")
        return y[accept]

    return _pool(count, draw, 0.5)


def discrete_gaussian_pmf(variance: float, support: int) -> torch.Tensor:
    """The pmf of N_Z(0, variance) on ``[-support, support]`` (float64, normalised over it)."""
    x = torch.arange(-support, support + 1, dtype=torch.float64)
    w = torch.exp(-(x * x) / (2.0 * variance))
    return w / w.sum()
