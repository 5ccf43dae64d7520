"""Encrypted aggregation: multiparty BFV under a collective key, summed along a ring.

One round, per peer (DESIGN §5):
  1. offset the quantized update to non-negative sub-values and pack `pack` of them per
     coefficient (each with room for the K-fold sum), batch-encrypt under the collective public
     key and modulus-switch to the wire level Q' derived from the noise bound;
  2. ring reduce-scatter of ciphertext chunks (homomorphic addition);
  3. ring all-gather of the aggregated c1 parts (a decryption share depends on c1 only);
  4. every peer computes its smudged decryption share of every chunk; ring reduce-scatter of the
     shares, so that each chunk's owner holds the sum of all K shares;
  5. the owner decrypts its chunk; ring all-gather of the plaintext chunks; un-offset.
Per-peer traffic is about (K-1)/K * (|ct| + |c1| + |share| + |plain|): linear in the model size
and flat in K. Set-up (once): a common CRP seed from all peers' contributions, then the
collective public key (CKG) summed with a ring all-reduce over coefficient chunks.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from typing import Any

import numpy as np

from dmhe.aggregation import ring_all_gather, ring_reduce_scatter
from dmhe.transport import Transport
from gpubfv import (
    PRNG,
    Backend,
    Ciphertext,
    CoefficientEncoder,
    Encryptor,
    Evaluator,
    KeyGenerator,
    Parameters,
    get_backend,
)
from gpubfv.context import get_context
from gpubfv.mhe import (
    CollectiveDecrypt,
    NoiseEstimate,
    PublicKeyGen,
    Share,
    ShareJournal,
    choose_parameters,
)
from gpubfv.serialization import from_bytes, pack_residues, to_bytes, unpack_residues


def _ring_allreduce_residues(transport: Transport, a: np.ndarray, moduli: tuple[int, ...]) -> Any:
    """Sum a (L, N) residue array over all peers (mod each prime) with a ring all-reduce."""
    k = transport.world_size
    if k == 1:
        return a.copy()
    q = np.array(moduli, dtype=np.uint64)[:, None]
    cols = np.array_split(np.arange(a.shape[-1]), k)
    chunks = [np.ascontiguousarray(a[:, c]) for c in cols]
    widths = [len(c) for c in cols]

    def decode(buf: bytes, idx: int) -> np.ndarray:
        return np.frombuffer(buf, dtype="<u4").reshape(len(moduli), widths[idx]).astype(np.uint32)

    def combine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return ((x.astype(np.uint64) + y) % q).astype(np.uint32)

    def encode(x: np.ndarray) -> bytes:
        return np.ascontiguousarray(x).astype("<u4").tobytes()

    idx, red = ring_reduce_scatter(transport, chunks, encode=encode, decode=decode, combine=combine)
    parts = ring_all_gather(transport, idx, red, encode=encode, decode=decode)
    return np.concatenate(parts, axis=-1)


class EncryptedAggregator:
    """`Aggregator` over multiparty BFV: exact sums, no peer or coalition of K-1 learns more.

    Options: `value_bits` (bits of the offset per-peer value range; default 18, enough for the
    trainer's default clip 1 at 16 fractional bits), `lam` (smudging statistical parameter,
    default 40), `backend` ("cpu" | "cuda" | "auto"), `threshold` (accepted for the CLI; t-of-K
    decryption is available in gpubfv.mhe, the trainer round uses all K peers).
    """

    name = "encrypted"

    def __init__(
        self,
        world_size: int,
        *,
        value_bits: int = 18,
        lam: int = 40,
        threshold: int | None = None,
        device: str = "cpu",
        backend: str | None = None,
        **_options: Any,
    ) -> None:
        if world_size < 1:
            raise ValueError("world_size must be positive")
        self.k = world_size
        self.plan = choose_parameters(world_size, value_bits, lam=lam)
        self.params = Parameters(self.plan.literal)
        name = backend or ("cuda" if str(device).startswith("cuda") else "cpu")
        self.backend: Backend = get_backend(name)
        self.ctx = get_context(self.params, self.backend)
        self.width = self.plan.width
        self.modulus = 1 << self.width  # the sum of K offset values must stay below 2^width
        # offset so that K offset values sum to at most 2^width - 1 (no carry between sub-slots)
        self.offset = (self.modulus - 1) // (2 * world_size)
        self.encoder = CoefficientEncoder(
            self.params, self.backend, pack=self.plan.pack, width=self.width
        )
        self.level = self.plan.level
        self.lam = lam
        self.threshold = threshold
        noise = NoiseEstimate.fresh(self.params, world_size).mod_switch(
            self.params, self.level, world_size
        )
        self.decryptor = CollectiveDecrypt(
            self.params, noise.summed(world_size), world_size, lam, self.backend
        )
        self.evaluator = Evaluator(self.params, backend=self.backend)
        self.timings: dict[str, float] = {}
        self.bytes_per_value = self.plan.bytes_per_value
        self._sk = None
        self._pk = None
        self._prng: PRNG | None = None
        self._journal: ShareJournal | None = None

    # -- validation -------------------------------------------------------------------------------
    def check(self, *, num_values: int, sum_bound: int, value_bound: int | None = None) -> None:
        """Refuse, before training, what would not fit: the K-fold sum and each peer's value."""
        if 2 * sum_bound >= self.modulus:
            raise ValueError(
                f"a sum bounded by {sum_bound} does not fit {self.width}-bit sub-slots; raise "
                "value_bits or lower clip/scale_bits"
            )
        if value_bound is not None and value_bound > self.offset:
            raise ValueError(
                f"one peer's value may reach {value_bound} but {self.width}-bit sub-slots for "
                f"{self.k} peers hold |value| <= {self.offset}; raise value_bits (aggregator "
                "option) or lower clip/scale_bits/noise"
            )
        if num_values < 1:
            raise ValueError("nothing to aggregate")

    def describe(self) -> str:
        return f"{self.plan.describe()}; {self.params.describe()}"

    # -- set-up: collective public key ----------------------------------------------------------
    def setup(self, transport: Transport) -> None:
        if transport.world_size != self.k:
            raise ValueError(
                f"aggregator built for {self.k} peers, transport has {transport.world_size}"
            )
        self._prng = PRNG(backend=self.backend)
        self._journal = ShareJournal(transport.rank)
        self._sk = KeyGenerator(self.params, self.backend, self._prng).gen_secret_key()
        # common CRP seed: hash of every peer's random contribution (all-gathered)
        mine = os.urandom(32)
        contributions = (
            ring_all_gather(
                transport,
                (transport.rank + 1) % self.k,
                mine,
                encode=lambda b: b,
                decode=lambda b, _i: b,
            )
            if self.k > 1
            else [mine]
        )
        seed = hashlib.sha256(b"dmhe-crp" + b"".join(contributions)).digest()
        ckg = PublicKeyGen(self.params, self.backend)
        crp = ckg.sample_crp(seed)
        share = ckg.gen_share(self._sk, crp, transport.rank, self._prng, self._journal)
        total = _ring_allreduce_residues(
            transport, self.backend.to_numpy(share.data), self.params.q
        )
        agg = Share(
            share.protocol,
            self.params,
            share.digest,
            frozenset(range(self.k)),
            self.backend.asarray(total),
            share.level,
        )
        self._pk = ckg.finalize(agg, crp, expected_peers=self.k)

    # -- one round --------------------------------------------------------------------------------
    def _chunk_sizes(self, n_values: int) -> list[int]:
        """Ciphertexts per ring chunk: as even as possible, empty chunks when K > count."""
        count = max(1, math.ceil(n_values / self.encoder.slots))
        return [len(c) for c in np.array_split(np.arange(count), self.k)]

    def allreduce_sum(self, transport: Transport, values: np.ndarray) -> np.ndarray:
        if self._pk is None:
            raise RuntimeError("setup() must run before allreduce_sum()")
        values = np.asarray(values)
        if values.dtype != np.int64 or values.ndim != 1:
            raise TypeError(f"values must be 1-D int64, got {values.dtype} {values.shape}")
        if values.size and int(np.abs(values).max()) > self.offset:
            raise ValueError(
                f"|value| {int(np.abs(values).max())} exceeds the offset {self.offset} "
                f"of {self.width}-bit sub-slots for {self.k} peers"
            )
        self.timings.clear()
        xp = self.backend.xp
        k, rank = self.k, transport.rank
        sizes = self._chunk_sizes(values.size)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        n_ct = int(starts[-1])
        slots = self.encoder.slots
        t0 = time.perf_counter()
        padded = np.full(n_ct * slots, 0, dtype=np.int64)
        padded[: values.size] = values
        padded += self.offset
        pts = self.encoder.encode(xp.asarray(padded.reshape(n_ct, slots)))
        enc = Encryptor(self.params, self._pk, backend=self.backend, prng=self._prng)
        ct = self.evaluator.mod_switch_to(enc.encrypt(pts), self.level)
        t_enc = time.perf_counter() - t0

        chunks = [Ciphertext(self.params, ct.data[starts[i] : starts[i + 1]]) for i in range(k)]
        t_comm = 0.0
        t_dec = 0.0
        if k == 1:
            own_idx, own_ct = 0, chunks[0]
        else:
            t1 = time.perf_counter()
            own_idx, own_ct = ring_reduce_scatter(
                transport,
                chunks,
                encode=to_bytes,
                decode=lambda b, _i: from_bytes(self.params, b, Ciphertext, self.backend),
                combine=self.evaluator.add,
            )
            t_comm += time.perf_counter() - t1
        # every peer needs every aggregated c1 to make its decryption shares
        moduli = self.params.q[: self.level]

        def enc_c1(c: Ciphertext) -> bytes:
            return pack_residues(self.backend.to_numpy(c.data[:, 1]), moduli)

        def dec_c1(b: bytes, i: int) -> Ciphertext:
            c1 = unpack_residues(b, moduli, self.params.n, (sizes[i],))
            data = np.zeros((sizes[i], 2, self.level, self.params.n), dtype=np.uint32)
            data[:, 1] = c1
            return Ciphertext(self.params, self.backend.asarray(data))

        t1 = time.perf_counter()
        if k > 1:
            c1s = ring_all_gather(transport, own_idx, own_ct, encode=enc_c1, decode=dec_c1)
        else:
            c1s = [own_ct]
        t_comm += time.perf_counter() - t1
        t1 = time.perf_counter()
        shares = [
            self.decryptor.gen_share(self._sk, c, rank, self._prng, self._journal) for c in c1s
        ]
        t_dec += time.perf_counter() - t1

        def dec_share(b: bytes, _i: int) -> Share:
            return from_bytes(self.params, b, Share, self.backend)

        t1 = time.perf_counter()
        if k > 1:
            share_idx, agg = ring_reduce_scatter(
                transport,
                shares,
                encode=to_bytes,
                decode=dec_share,
                combine=lambda a, b: self.decryptor.aggregate([a, b]),
            )
            if share_idx != own_idx:
                raise RuntimeError("ring ownership of shares and ciphertexts differs")
        else:
            agg = shares[0]
        t_comm += time.perf_counter() - t1
        t1 = time.perf_counter()
        pt = self.decryptor.decrypt(own_ct, agg, expected_peers=k)
        sums = self.backend.to_numpy(self.encoder.decode(pt)).reshape(1, -1).astype(np.uint64)
        t_dec += time.perf_counter() - t1
        # plaintext chunks travel at the sub-slot width, not as int64
        wmod = (self.modulus,)

        def enc_sums(a: np.ndarray) -> bytes:
            return pack_residues(a, wmod, dtype=np.uint64) if a.size else b""

        def dec_sums(b: bytes, i: int) -> np.ndarray:
            width = sizes[i] * self.encoder.slots
            if not width:
                return np.zeros((1, 0), dtype=np.uint64)
            return unpack_residues(b, wmod, width, (), np.uint64)

        t1 = time.perf_counter()
        parts = (
            ring_all_gather(transport, own_idx, sums, encode=enc_sums, decode=dec_sums)
            if k > 1
            else [sums]
        )
        t_comm += time.perf_counter() - t1
        total = np.concatenate(parts, axis=-1).reshape(-1)[: values.size].astype(np.int64)
        total -= np.int64(k * self.offset)
        self.timings.update(encrypt=t_enc, communicate=t_comm, decrypt=t_dec)
        return total
