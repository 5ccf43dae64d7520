"""Encrypted aggregation: multiparty BFV under a collective key, summed with the collectives.

One round, per peer (DESIGN §5), in K chunks of the batch's coefficient positions (every chunk
P/K of the P = ciphertexts x N positions, whatever the number of ciphertexts:
:mod:`dmhe.aggregators.encrypted_slices`, which runs the steps below on bit-packed rows):

1. encrypt: offset the quantized update to non-negative sub-values, pack ``pack`` of them
   per coefficient (each with room for the K-fold sum), batch-encrypt under the collective
   public key, modulus-switch to the wire level Q' derived from the noise bound and round c0 to
   the plan's ``compressed_bits`` (gpubfv.mhe.compressed: a public function of the ciphertext);
2. reduce-scatter of the ciphertext positions by homomorphic addition along the topology
   (compressed c0 sums in Z_2^k, so each peer's c0 is rounded once whatever the topology; c1
   full);
3. all-gather of the aggregated c1 positions (a decryption share depends on c1 only);
4. every peer's smudged share of the whole batch, rounded to ``compressed_bits``, and its
   reduce-scatter, so that each chunk's owner holds the sum of all K shares of its positions;
5. the owner lifts c0 and the share sum back to Q', decrypts its positions
   (``open_positions``), the sub-values are all-gathered at the sub-slot width, and the offset
   is removed.

With t < K Shamir-shared keys (:mod:`dmhe.aggregators.encrypted_threshold`) the chunks are
whole ciphertexts instead (``_chunk_sizes``; the methods ``encrypt`` ...
``open_chunk`` below): the c1 all-gather carries c0 too, so that any surviving peer can
finish any chunk.

Per-peer traffic is about (K-1)/K * (|ct| + |c1| + |share| + |plain|) (the planner's
``round_split``, which it minimises): linear in the model size and flat in K. Set-up (once):
a common CRP seed from all peers' contributions, then the collective public key (CKG) summed
with an all-reduce over coefficient chunks.

This file and ``encrypted_{setup,slices,threshold,codecs,journals,keys,keystore}.py`` are the only
places in dmhe that call gpubfv.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from dmhe.aggregators import encrypted_codecs
from dmhe.aggregators.base import TOPOLOGY_OPTIONS, AggregatorBase, Option
from dmhe.aggregators.encrypted_journals import open_journal
from dmhe.aggregators.encrypted_keys import restore_keys
from dmhe.aggregators.encrypted_setup import collective_key_setup
from dmhe.aggregators.encrypted_slices import slice_round
from dmhe.collectives import (
    RING,
    Codec,
    Topology,
    all_gather,
    reduce_scatter,
)
from dmhe.transport import Transport
from gpubfv import (
    PRNG,
    Backend,
    CoefficientEncoder,
    Context,
    Encryptor,
    Evaluator,
    get_backend,
)
from gpubfv.mhe import (
    NOTIONS,
    AggregationPlan,
    CollectiveDecrypt,
    NoiseEstimate,
    Party,
    ShareJournal,
    choose_parameters_for_updates,
)
from gpubfv.mhe.compressed import CompressedCiphertext, CompressedDecryptionShare

__all__ = ["EncryptedAggregator"]

#: update size assumed when the aggregator is used before ``check(num_values=...)``
DEFAULT_VALUES = 1 << 20


@functools.cache
def _plan(
    peers: int, value_bits: int, notion: str, lam: int, rounds: int, values: int, backend: str
) -> tuple[AggregationPlan, Context]:
    """One plan and one Context per setting, shared by the peers of a process (so that an
    in-process simulation of K peers builds the tables once, not K times). The decryption budget
    D of the smudging is ``rounds`` x the plan's ciphertexts for ``values`` values."""
    plan = choose_parameters_for_updates(
        peers, value_bits, values_per_round=values, rounds=rounds, notion=notion, lam=lam
    )
    return plan, Context(plan.params, get_backend(backend))


class EncryptedAggregator(AggregatorBase):
    """`Aggregator` over multiparty BFV: exact sums, no peer or coalition of K-1 learns more.

    Options (see ``OPTIONS``): ``value_bits`` (bits of the offset per-peer value range; 18 is
    enough for the trainer's default clip 1 at 16 fractional bits), ``lam`` (smudging
    statistical parameter), ``device``/``backend`` (the gpubfv backend: by default the kind of
    ``device``), ``threshold`` t < K (Shamir-shared keys: the first t live peers decrypt, so
    peers lost before decryption do not stop the round), ``drop_before_decrypt`` (simulation:
    ranks lost after the ciphertext phase of every round).
    """

    name = "encrypted"
    accepts_tensors = True  # torch tensors are taken by DLPack, on their device
    OPTIONS = (
        Option("value_bits", (int,), 18, "bits of one peer's offset value range", 1, 52),
        Option("smudging", (str,), "statistical", "smudging notion", choices=tuple(NOTIONS)),
        Option("lam", (int,), 40, "smudging security parameter lambda", 32, 256),
        Option("rounds", (int,), 1000, "rounds the keys may decrypt (budget D)", 1, 10**7),
        Option("values", (int,), DEFAULT_VALUES, "values per update (sizes D)", 1, 2**40),
        Option("journal_dir", (str, type(None)), None, "where the share journals are kept"),
        Option("key_dir", (str, type(None)), None, "persist keys+journals here (rank-N/)"),
        Option("threshold", (int, type(None)), None, "t-out-of-K keys (None: all K)", 1),
        Option("device", (str,), "cpu", "torch device of the updates: picks the backend"),
        Option("backend", (str, type(None)), None, "gpubfv backend name, overrides device"),
        Option("drop_before_decrypt", (list, tuple), (), "simulated losses (ranks)", item=int),
        *TOPOLOGY_OPTIONS,
    )

    def __init__(self, world_size: int, **options: Any) -> None:
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError("world_size must be positive")
        super().__init__(world_size, **options)
        self.k: int = world_size
        opts = self.options
        threshold = opts["threshold"]
        if threshold is not None and not 1 <= threshold <= world_size:
            raise ValueError(f"threshold {threshold} outside 1..{world_size}")
        self.backend: Backend = get_backend(opts["backend"] or Backend.device_kind(opts["device"]))
        self.threshold = threshold
        self.drop_before_decrypt = frozenset(opts["drop_before_decrypt"])
        self.rounds, self.values = opts["rounds"], opts["values"]
        self.plan, self.ctx = _plan(
            world_size,
            opts["value_bits"],
            opts["smudging"],
            opts["lam"],
            self.rounds,
            self.values,
            self.backend.name,
        )
        self.params = self.plan.params
        # bits per packed sub-value (the planner's: one value plus room for the K-fold sum)
        self.width = self.plan.width
        self.modulus = 1 << self.width  # the sum of K offset values must stay below 2^width
        # offset so that K offset values sum to at most 2^width - 1 (no carry between sub-slots)
        self.offset = (self.modulus - 1) // (2 * world_size)
        self.encoder = CoefficientEncoder(self.ctx, pack=self.plan.pack, width=self.width)
        self.level = self.plan.level
        k = self.k
        noise = NoiseEstimate.fresh(self.params, k).mod_switch(self.params, self.level, k)
        self.decryptor = CollectiveDecrypt(
            self.ctx, noise.summed(k), peers=k, smudging=self.plan.smudging
        )
        self.evaluator = Evaluator(self.ctx)
        self.bytes_per_value = self.plan.bytes_per_value
        self.bits = self.plan.compressed_bits  # c0 and shares on the wire
        self._party: Party | None = None
        self._pk: Any = None
        self._prng: PRNG | None = None
        self._journal: ShareJournal | None = None
        self._threshold: Any = None  # ThresholdDecryption when t < K
        self.setup_id: str | None = None  # hex, the same on every peer of one set-up
        self.topology: Topology = RING
        self.slice_layouts: dict[tuple[int, int], Any] = {}  # (ciphertexts, K) -> SliceLayout

    @property
    def uses_threshold(self) -> bool:
        """Whether rounds decrypt with t < K Shamir-shared keys."""
        return self.threshold is not None and self.threshold < self.k

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
        rows = self.rounds * sum(self._chunk_sizes(num_values))
        if rows > self.plan.smudging.budget:
            raise ValueError(
                f"{self.rounds} rounds of {num_values} values need {rows} decryptions, the "
                f"smudging was planned for D={self.plan.smudging.budget} (values="
                f"{self.values}); pass the aggregator option values={num_values}"
            )
        super().check(num_values=num_values, sum_bound=sum_bound, value_bound=value_bound)

    def describe(self) -> str:
        """The parameter plan, its smudging and the parameters."""
        plan = self.plan
        smudging = plan.smudging.describe(plan.sigma, plan.wire_noise.std, self.params.n)
        return f"{plan.describe()}; {smudging}; {self.params.describe()}"

    def security(self) -> dict[str, Any]:
        """The smudging notion, lambda, the decryption budget D and the achieved bound."""
        plan = self.plan
        return {
            "smudging": plan.smudging.notion,
            "argument": plan.smudging.argument,
            "lambda": plan.smudging.lam,
            "decryption_budget": plan.smudging.budget,
            "log2_distance": plan.log2_distance,
            "log2_sigma": math.log2(plan.sigma),
            "parameters": self.params.describe(),
            "threshold": self.threshold,
        }

    # -- set-up: collective public key ----------------------------------------------------------
    def setup(self, transport: Transport) -> None:
        """Secret key share, common CRP seed, collective public key; Shamir shares if t < K."""
        if transport.world_size != self.k:
            raise ValueError(
                f"aggregator built for {self.k} peers, transport has {transport.world_size}"
            )
        self._prng = PRNG(backend=self.backend)
        # the schedule of every collective of this run (auto: from K, the link and the payload)
        self.topology = self.topology_for(self.k, int(self.values * self.bytes_per_value), passes=4)
        if restore_keys(self, transport):  # a restarted peer: its persisted keys, no set-up
            return
        collective_key_setup(self, transport)

    def open_journal(self, rank: int, key: str) -> ShareJournal:
        """A fresh persistent share journal for one new key share of peer ``rank`` (see
        :func:`dmhe.aggregators.encrypted_journals.open_journal`)."""
        return open_journal(
            self.options["journal_dir"], rank, key, self.options["key_dir"], self.setup_id
        )

    # -- codecs -----------------------------------------------------------------------------------
    def ciphertexts(self, n_values: int) -> int:
        """Ciphertexts that carry ``n_values`` (at least one: an empty update still takes part)."""
        return max(1, math.ceil(n_values / self.encoder.slots))

    def _chunk_sizes(self, n_values: int, k: int | None = None) -> list[int]:
        """Ciphertexts per chunk: as even as possible, and the non-empty chunks spread over the
        indices when K > count (log-depth schedules move chunks in blocks of neighbouring
        indices; front-loading them would put every ciphertext in one block)."""
        count, k = self.ciphertexts(n_values), k or self.k
        return [(i + 1) * count // k - i * count // k for i in range(k)]

    def ct_codec(self, sizes: list[int]) -> Codec[Any]:
        """Compressed whole-ciphertext chunks (see :mod:`dmhe.aggregators.encrypted_codecs`)."""
        return encrypted_codecs.ct_codec(self, sizes)

    def share_codec(self) -> Codec[CompressedDecryptionShare]:
        """Compressed decryption shares (see :mod:`dmhe.aggregators.encrypted_codecs`)."""
        return encrypted_codecs.share_codec(self)

    def sums_codec(self, sizes: list[int]) -> Codec[np.ndarray]:
        """Opened chunks at the sub-slot width (see :mod:`dmhe.aggregators.encrypted_codecs`)."""
        return encrypted_codecs.sums_codec(self, sizes)

    # -- one round --------------------------------------------------------------------------------
    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def _as_backend_array(self, values: Any) -> Any:
        """numpy/CuPy array of the backend from an array or a torch tensor, without host copies
        where the device matches (a CUDA tensor goes to CuPy by DLPack)."""
        if hasattr(values, "__dlpack__") and not isinstance(values, np.ndarray):
            values = values.detach()
            if not self.backend.holds(values):
                if self.backend.is_gpu:
                    return self.backend.asarray(values.cpu().numpy())
                values = values.cpu()
            return self.backend.from_dlpack(values.contiguous())
        return self.backend.xp.asarray(values)

    def _validated(self, values: Any) -> Any:
        values = self._as_backend_array(values)
        if values.dtype != np.int64 or values.ndim != 1:
            raise TypeError(f"values must be 1-D int64, got {values.dtype} {values.shape}")
        if values.size and int(np.abs(values).max()) > self.offset:
            raise ValueError(
                f"|value| {int(np.abs(values).max())} exceeds the offset {self.offset} "
                f"of {self.width}-bit sub-slots for {self.k} peers"
            )
        return values

    def allreduce_sum(self, transport: Transport, values: Any) -> np.ndarray:
        """The exact int64 sum of every peer's ``values`` (see the module docstring)."""
        if self._pk is None:
            raise RuntimeError("setup() must run before allreduce_sum()")
        values = self._validated(values)
        self.timings = {"encrypt": 0.0, "communicate": 0.0, "decrypt": 0.0}
        # fewer than K: the live peers of a threshold round (a SubRing), each contributing once
        m = transport.world_size
        if m != self.k and not self.uses_threshold:
            raise ValueError(f"{m} of {self.k} peers: only t-of-K keys decrypt without all")
        self.contributors = m
        sizes = self._chunk_sizes(values.size, m)
        full_topology = self.topology
        if m != self.k:
            self.topology = self.topology_for(m, int(self.values * self.bytes_per_value), 4)
        try:
            total = self._round(transport, values, sizes)
        finally:
            self.topology = full_topology
        total -= np.int64(m * self.offset)
        # the round is done: keep only what the shares were for
        assert self._journal is not None
        self._journal.release()
        if self._threshold is not None:
            self._threshold.journal.release()
        return total

    def _round(self, transport: Transport, values: Any, sizes: list[int]) -> np.ndarray:
        """Steps 1-5 of the module docstring: the packed sum, offsets not yet removed. Without
        threshold keys the chunks are coefficient slices (:mod:`.encrypted_slices`)."""
        if self._threshold is None:
            return slice_round(self, transport, values)[: values.size]
        with self._phase("encrypt"):
            chunks = self.encrypt(values, sizes)
        with self._phase("communicate"):
            own_idx, own_ct = self.reduce_scatter_ciphertexts(transport, chunks, sizes)
            aggs = self.gather_chunks(transport, own_idx, own_ct, sizes)
        sums = self._threshold.decrypt(transport, aggs, sizes)
        return np.concatenate(sums, axis=-1).reshape(-1)[: values.size].astype(np.int64)

    def encrypt(self, values: Any, sizes: list[int]) -> list[CompressedCiphertext]:
        """Offset, pack and batch-encrypt ``values``; one ciphertext batch per chunk, c0
        rounded to the plan's ``compressed_bits``."""
        n_ct = sum(sizes)
        slots = self.encoder.slots
        padded = self.backend.xp.zeros(n_ct * slots, dtype=np.int64)
        padded[: values.size] = values
        padded += np.int64(self.offset)
        pts = self.encoder.encode(padded.reshape(n_ct, slots))
        enc = Encryptor(self.ctx, self._pk, prng=self._prng)
        ct = self.evaluator.mod_switch_to(enc.encrypt(pts), self.level)
        small = CompressedCiphertext.compress(ct, self.bits)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return [
            CompressedCiphertext(self.params, self.level, self.bits, small.c0[a:b], small.c1[a:b])
            for a, b in zip(starts[:-1], starts[1:], strict=True)
        ]

    def reduce_scatter_ciphertexts(
        self, transport: Transport, chunks: list[CompressedCiphertext], sizes: list[int]
    ) -> tuple[int, CompressedCiphertext]:
        """``(index, chunk summed over all peers)``: every peer's update is in the sum."""
        return reduce_scatter(transport, chunks, self.ct_codec(sizes), self.topology)

    def gather_chunks(
        self, transport: Transport, index: int, chunk: CompressedCiphertext, sizes: list[int]
    ) -> list[CompressedCiphertext]:
        """Every aggregated whole-ciphertext chunk, c0 included (a threshold round's decryptors
        may have to finish any chunk)."""
        return all_gather(transport, index, chunk, self.ct_codec(sizes), self.topology)

    def decryption_shares(
        self, aggs: list[Any], party: Party | None = None
    ) -> list[CompressedDecryptionShare]:
        """``party``'s (default: this peer's) smudged decryption share of every chunk (a
        ``Ciphertext`` or ``CompressedCiphertext``: only c1 counts), rounded to ``bits``; the
        party's journal makes sure no c1 row ever gets a second share."""
        party = self._party if party is None else party
        assert party is not None
        out, none = [], encrypted_codecs.empty_share(self)
        for c in aggs:
            if c.batch_shape == (0,):  # an empty chunk (K > ciphertexts): no row to share
                out.append(none)
                continue
            ct = c.c1_ciphertext() if isinstance(c, CompressedCiphertext) else c
            share = party.decryption_share(self.decryptor, ct)
            out.append(CompressedDecryptionShare.compress(share, self.bits))
        return out

    def open_chunk(self, ct: CompressedCiphertext, agg: CompressedDecryptionShare) -> np.ndarray:
        """Decrypt one aggregated chunk with the sum of every expected peer's share (all K, or
        the active set carried by threshold shares), both lifted back to Q' (the rounding the
        plan's decryption margin holds): packed sub-slots. An empty chunk opens to nothing."""
        if ct.c1.shape[0] == 0:
            return np.zeros((1, 0), dtype=np.uint64)
        pt = self.decryptor.decrypt(ct.lift(), agg.lift())
        return self.backend.to_numpy(self.encoder.decode(pt)).reshape(1, -1).astype(np.uint64)
