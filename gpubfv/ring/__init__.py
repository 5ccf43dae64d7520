"""RNS polynomial ring: moduli, NTT, basis conversion, sampling."""

from gpubfv.ring.basis import RNSBasis
from gpubfv.ring.modmath import generate_ntt_primes, invmod, is_prime

__all__ = ["RNSBasis", "generate_ntt_primes", "invmod", "is_prime"]
