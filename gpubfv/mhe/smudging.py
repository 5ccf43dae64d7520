"""Smudging (noise flooding) of decryption shares, with a stated security notion.

A decryption share of peer h is h_h = s_h*c1 + E_h. The other peers know their own shares and
noise, so what the honest peer must hide is the ciphertext's own noise x = e_ct (it depends on
every secret key): the coalition sees x + E_h, and the smudging noise E_h must make that
indistinguishable from E_h alone. Every quantity below is per coefficient; one decryption is one
ciphertext row of N coefficients, and the declared budget D counts rows.

Notion "statistical" (the default): the smudging lemma, made exact for the sampler we run.

1. Ciphertext noise tail. The tracked noise is modelled as a centered Gaussian (sub-Gaussian) of
   standard deviation sigma_ct, so Pr[|x| > B] <= 2 exp(-B^2 / (2 sigma_ct^2)). With
   delta_ct = 2^-(lam+1) / (N*D) and B_ct = sigma_ct * sqrt(2 ln(2/delta_ct)) the probability that
   any of the N*D coefficients exceeds B_ct is <= N*D*delta_ct = 2^-(lam+1).
2. One coefficient. For a Gaussian, SD(N(0,s^2), N(x,s^2)) = 2 Phi(|x|/(2s)) - 1
   = erf(|x|/(2 sqrt(2) s)) <= |x| / (s sqrt(2 pi)) (erf(u) <= 2u/sqrt(pi)). We do not sample a
   continuous Gaussian, so the bound is proved for the sampler itself (`sample`):
   - kernels/cpu/prng.py draws z = sqrt(-2 ln u1) cos(2 pi u2) with u1 in [2^-53, 1]: the
     Box-Muller radius is truncated at T = sqrt(106 ln 2) = 8.57, so z is the x-marginal of a
     2-D standard normal conditioned on the disc of radius T (mass 1 - 2^-53). Its density
     f(z) = phi(z) (2 Phi(sqrt(T^2 - z^2)) - 1) / (1 - 2^-53) is symmetric, non-increasing in |z|,
     and f(0) <= phi(0) / (1 - 2^-53). The output is G = rint(sigma_g z), whose pmf p_g is
     symmetric and non-increasing in |g| (as f is), with p_0 <= f(0) / sigma_g.
   - For sigma above 2^20 the sampler draws E = W*G + U, W = 2^k, U uniform on the W integers
     [-W/2, W/2) (exactly: digits floor(v 2^b / 2^128) = the top b bits, b <= 31, of 128-bit
     ChaCha20 values; 2^b divides 2^128, so no bias), independent of G. E has a piecewise
     constant pmf h(y) = p_g / W on the cell [gW - W/2, gW + W/2) of g, so for an integer shift x
     SD(E + x, E) <= |x| SD(E + 1, E) = |x|/2 sum_y |h(y) - h(y-1)| = |x|/(2W) sum_g |p_g - p_g-1|
     = |x| p_0 / W (unimodal p: the total variation is 2 p_0). With sigma := W sigma_g:
         SD(E + x, E) <= |x| / (sigma sqrt(2 pi) (1 - 2^-53)),
     the continuous Gaussian's bound up to the factor 1/(1 - 2^-53). W = 1 is the plain rounded
     Gaussian (the rounding is a function commuting with integer shifts: data processing).
     Truncation does not cost a separate term: it is inside p_0.
3. All coefficients and decryptions. Fresh smudging noise per coefficient and per share (never a
   second share), so SD over N*D coefficients <= sum of the per-coefficient distances.
   Choosing sigma >= 2^(lam+1) * N * D * B_ct / (sqrt(2 pi) (1 - 2^-53)) makes the distance
   term <= 2^-(lam+1); with step 1 the total is <= 2^-lam.
   (The smudging-lemma form B_sm >= 2^lam N D B_ct for a uniform B_sm-bounded noise is the same
   statement; the Gaussian costs a tail factor on the magnitude, see `sum_bound`.)
   Modelling assumption, not proved here: u1, u2 are treated as continuous uniforms; the sampler
   uses 53-bit grids and float64 libm (the CUDA kernel may differ from the CPU one by 1 on rare
   elements, libm). sigma_g is kept in [2^20, 2^21) so each of the ~2^25 output values of G has
   ~2^81 grid points of preimage, far from the grid scale, and sigma_g*z stays below 2^25 where
   float64 rounding to integers is exact; the wide part W of the noise is exact integer
   arithmetic, assembled in RNS form (it exceeds int64: PRNG.gaussian alone refuses sigma >=
   2^59, and above 2^53 float64 sigma*z is no longer integer-exact).

Notion "renyi" (opt-in, Mouchet et al. PETS'21 Sec. IV.E): sigma = 2^(lam/2) sigma_ct. The
order-2 Renyi divergence between N(x, s^2) and N(0, s^2) is exp(x^2/s^2), so over N*D
coefficients ln R_2 <= N*D*B_ct^2/s^2 = N*D*(B_ct/sigma_ct)^2 * 2^-lam; for a search problem
(key recovery) Pr_real[win] <= sqrt(Pr_ideal[win] * R_2). `log2_distance` reports log2(ln R_2)
for this mode; it is not a statistical-distance guarantee (about 2^-18 per coefficient for the
K=4, 16-bit plan). R_2 is finite only for the untruncated Gaussian; the sampler is within
N*D*2^-53 of it (couple u1 with a continuous uniform: they differ only when u1 < 2^-53), an
additive term on the search advantage. `log2_statistical_distance` gives the SD bound of step 2,
valid in either mode (renyi samples the W = 1 case).

Decryption correctness (both notions): each E_i is sub-Gaussian with variance proxy
v = W^2 ((sigma_g + 1/2)^2 + 1/4) about its mean (z is strongly log-concave, proxy 1; rounding
adds at most 1/2 to the square root; U + 1/2 by Hoeffding), |E[E]| <= 1/2; the K shares and e_ct
are independent, so the phase error of all N*D coefficients stays below
tau = sqrt(2 V ln(2 N D 2^fail_bits)) + K/2, V = sigma_ct^2 + K v, except with probability
2^-fail_bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubfv.ring.basis import RNSBasis
from gpubfv.ring.sampling import PRNG

NOTIONS = ("statistical", "renyi")
LAM_RANGE = (32, 256)
FAIL_BITS_RANGE = (1, 256)
SAMPLER_EPS = 2.0**-53  # radial truncation mass of the Box-Muller sampler (u1 >= 2^-53)
SAMPLER_T = math.sqrt(106.0 * math.log(2.0))  # |z| <= sqrt(-2 ln 2^-53)
CELL_SIGMA = 2.0**20  # sigma_g of the Gaussian envelope; the width above it is exact uniform
DIGIT_BITS = 31  # exact uniform digits of the fill: the top 31 bits of a 128-bit ChaCha20 value
RENYI_SIGMA_MAX = 2.0**48  # plain rounded Gaussian: sigma * T < 2^52, rint exact in float64


def _check_int(name: str, value: Any, lo: int, hi: float) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


@dataclass(frozen=True)
class _PowerOfTwoModulus:
    """A one-limb stand-in basis for `PRNG.uniform`: the sampler maps a 128-bit ChaCha20 value
    v to floor(v * 2^bits / 2^128), its top `bits` bits, so the digit is exactly uniform."""

    bits: int
    n: int

    @property
    def q_host(self) -> np.ndarray:
        """The single modulus 2^bits, as the kernels take it."""
        return np.array([1 << self.bits], dtype=np.uint32)

    def __len__(self) -> int:
        return 1


@dataclass(frozen=True)
class CellShape:
    """How the sampler realises width sigma: E = W*rint(sigma_g z) + U, W = 2^bits."""

    bits: int
    sigma_g: float

    @property
    def width(self) -> int:
        """W, the number of integers each Gaussian step is spread over."""
        return 1 << self.bits

    @classmethod
    def for_sigma(cls, sigma: float) -> CellShape:
        """W = 2^bits with sigma/W in [2^20, 2^21) (W = 1 when sigma < 2^20)."""
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"smudging sigma must be finite and positive, got {sigma}")
        if sigma < CELL_SIGMA:
            return cls(0, sigma)
        bits = max(0, math.floor(math.log2(sigma / CELL_SIGMA)))
        while math.ldexp(sigma, -bits) >= 2 * CELL_SIGMA:  # ldexp is exact: no log rounding
            bits += 1
        while bits > 0 and math.ldexp(sigma, -bits) < CELL_SIGMA:
            bits -= 1
        return cls(bits, math.ldexp(sigma, -bits))

    def digits(self) -> list[int]:
        """Bit sizes of the uniform digits of U, least significant first."""
        full, low = divmod(self.bits, DIGIT_BITS)
        return ([low] if low else []) + [DIGIT_BITS] * full

    def proxy_variance(self) -> float:
        """Sub-Gaussian variance proxy of one centred sample (see the module docstring)."""
        w = float(self.width)
        return w * w * ((self.sigma_g + 0.5) ** 2 + 0.25)

    @property
    def mean(self) -> float:
        """E[E]: U is uniform on [-W/2, W/2), so -1/2 once W > 1."""
        return -0.5 if self.bits else 0.0


@dataclass(frozen=True)
class Smudging:
    """A validated smudging specification: notion, lam, decryption budget D, failure bits.

    `budget` is the declared number of decryptions, counted in ciphertext rows (one row is one
    decryption of N coefficients); the statistical bound holds for at most that many.
    `fail_bits`: all N*D decrypted coefficients are correct except with probability
    2^-fail_bits.
    """

    budget: int
    notion: str = "statistical"
    lam: int = 40
    fail_bits: int = 40

    def __post_init__(self) -> None:
        if not isinstance(self.notion, str) or self.notion not in NOTIONS:
            valid = ", ".join(NOTIONS)
            raise ValueError(f"smudging notion {self.notion!r} unknown; valid: {valid}")
        _check_int("lam", self.lam, *LAM_RANGE)
        _check_int("budget (decryptions D)", self.budget, 1, 2**62)
        _check_int("fail_bits", self.fail_bits, *FAIL_BITS_RANGE)

    def tag(self) -> bytes:
        """Canonical bytes of the spec, for share-request digests (a retry must match them)."""
        return f"smudging/v1/{self.notion}/{self.lam}/{self.budget}/{self.fail_bits}".encode()

    @property
    def argument(self) -> str:
        """The argument the bound rests on."""
        if self.notion == "statistical":
            return "statistical distance (smudging lemma)"
        return "Renyi divergence of order 2 (search problems only)"

    def ct_bound(self, noise_std: float, n: int) -> float:
        """B_ct: |e_ct| <= B_ct on all N*D coefficients except with prob 2^-(lam+1)."""
        _check_std(noise_std)
        ln_inv_delta = math.log(2.0) * (self.lam + 1 + math.log2(n) + math.log2(self.budget))
        return noise_std * math.sqrt(2.0 * (math.log(2.0) + ln_inv_delta))

    def sigma(self, noise_std: float, n: int) -> float:
        """Standard deviation (envelope width) of each peer's smudging noise."""
        _check_std(noise_std)
        if self.notion == "renyi":
            return 2.0 ** (self.lam / 2.0) * noise_std
        b_ct = self.ct_bound(noise_std, n)
        scale = 2.0 ** (self.lam + 1) * n * self.budget
        return scale * b_ct / (math.sqrt(2.0 * math.pi) * (1.0 - SAMPLER_EPS))

    def log2_statistical_distance(self, sigma: float, noise_std: float, n: int) -> float:
        """log2 of the total statistical distance bound over N*D coefficients at this sigma.

        Valid for both notions (the renyi sampler is the W = 1 case of the same argument).
        """
        b_ct = self.ct_bound(noise_std, n)
        rows = n * self.budget
        dist = rows * b_ct / (sigma * math.sqrt(2.0 * math.pi) * (1.0 - SAMPLER_EPS))
        return math.log2(min(1.0, dist + 2.0 ** -(self.lam + 1)))

    def log2_distance(self, sigma: float, noise_std: float, n: int) -> float:
        """The notion's own bound: log2 SD (statistical) or log2 ln R_2 (renyi), total."""
        if self.notion == "statistical":
            return self.log2_statistical_distance(sigma, noise_std, n)
        b_ct = self.ct_bound(noise_std, n)
        return math.log2(n * self.budget * (b_ct / sigma) ** 2)

    def sum_bound(self, sigma: float, noise_std: float, peers: int, n: int) -> float:
        """tau: |e_ct + sum of K smudging noises| <= tau on all N*D coefficients (2^-fail_bits)."""
        _check_int("peers", peers, 1, 2**62)
        v = self.cell(sigma).proxy_variance()  # of E - E[E]; the means are added below
        var = noise_std * noise_std + peers * v
        ln_terms = math.log(2.0) * (1 + math.log2(n) + math.log2(self.budget) + self.fail_bits)
        cell = self.cell(sigma)
        return math.sqrt(2.0 * var * ln_terms) + peers * abs(cell.mean)

    def cell(self, sigma: float) -> CellShape:
        """The sampler's realisation of sigma (renyi: always the plain rounded Gaussian)."""
        if self.notion == "renyi":
            if not 0 < sigma < RENYI_SIGMA_MAX:
                raise ValueError(f"renyi smudging sigma {sigma:.3g} outside (0, 2^48)")
            return CellShape(0, sigma)
        return CellShape.for_sigma(sigma)

    def sample(self, prng: PRNG, basis: RNSBasis, batch: tuple[int, ...], sigma: float) -> Any:
        """Smudging noise for `batch` polynomials as residues over `basis`: (*batch, L, N)."""
        cell = self.cell(sigma)
        batch = tuple(batch)
        out = basis.from_signed(prng.gaussian(batch + (basis.n,), cell.sigma_g))
        if cell.width == 1:
            return out
        basis.mul_scalar(out, [cell.width] * len(basis), out=out)
        sizes = cell.digits()
        weight = 1
        for i, bits in enumerate(sizes):
            limb = _PowerOfTwoModulus(bits, basis.n)
            digit = prng.uniform(limb, batch)[..., 0, :].astype(np.int64)  # type: ignore[arg-type]
            if i == len(sizes) - 1:
                digit -= 1 << (bits - 1)  # centre: U = sum - W/2, uniform on [-W/2, W/2)
            digit = basis.from_signed(digit)
            if weight != 1:
                basis.mul_scalar(digit, [weight] * len(basis), out=digit)
            basis.add(out, digit, out=out)
            weight <<= bits
        return out

    def describe(self, sigma: float, noise_std: float, n: int) -> str:
        """One line: notion, lam, D, sigma and the achieved bound."""
        name = "log2 SD" if self.notion == "statistical" else "log2 ln R_2"
        line = (
            f"smudging {self.notion} ({self.argument}): lambda={self.lam}, D={self.budget} "
            f"decryptions of N={n}, sigma=2^{math.log2(sigma):.1f}, "
            f"{name} <= {self.log2_distance(sigma, noise_std, n):.1f}"
        )
        if self.notion == "renyi":
            sd = self.log2_statistical_distance(sigma, noise_std, n)
            trunc = math.log2(n * self.budget * SAMPLER_EPS)
            line += (
                f" plus truncation 2^{trunc:.1f} (statistical distance bound only "
                f"2^{sd:.1f}: not claimed)"
            )
        return line


def _check_std(noise_std: float) -> None:
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std > 0):
        raise ValueError(f"ciphertext noise std must be finite and positive, got {noise_std!r}")
