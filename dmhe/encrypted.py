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

import functools
import hashlib
import math
import os
import time
from typing import Any

import numpy as np

from dmhe.aggregation import ring_all_gather, ring_reduce_scatter
from dmhe.transport import PeerDropped, Transport
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
    ShamirShare,
    Share,
    ShareJournal,
    Thresholdizer,
    choose_parameters,
)
from gpubfv.serialization import from_bytes, pack_residues, to_bytes, unpack_residues


@functools.cache
def _plan(peers: int, value_bits: int, lam: int) -> tuple[Any, Parameters]:
    """One plan and one Parameters object per setting, shared by the peers of a process (so
    that an in-process simulation of K peers builds the tables once, not K times)."""
    plan = choose_parameters(peers, value_bits, lam=lam)
    return plan, Parameters(plan.literal)


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
    default 40), `backend` ("cpu" | "cuda" | "auto"), `threshold` t < K (Shamir-shared keys: the
    first t live peers decrypt, so peers lost before decryption do not stop the round),
    `drop_before_decrypt` (simulation: ranks lost after the ciphertext phase of every round).
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
        drop_before_decrypt: Any = (),
        **_options: Any,
    ) -> None:
        if world_size < 1:
            raise ValueError("world_size must be positive")
        if threshold is not None and not 1 <= threshold <= world_size:
            raise ValueError(f"threshold {threshold} outside 1..{world_size}")
        self.k = world_size
        self.plan, self.params = _plan(world_size, value_bits, lam)
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
        # simulation knob: these ranks are lost after the ciphertext phase of every round
        self.drop_before_decrypt = frozenset(int(r) for r in drop_before_decrypt)
        self.contributors = world_size
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
        self._thresholdizer: Thresholdizer | None = None
        self._tsk: Any = None

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
        if self.threshold is not None and self.threshold < self.k:
            self._share_threshold_keys(transport)

    def _share_threshold_keys(self, transport: Transport) -> None:
        """Shamir-share s_i to every peer (point = rank + 1); keep F(x_rank) = sum_i f_i(x_rank).

        Point-to-point, once per run: (K-1) ring elements over QP per peer. The shares are
        secret: a deployment sends them over authenticated, encrypted channels (TLS).
        """
        k, rank = self.k, transport.rank
        th = Thresholdizer(self.params, self.threshold, [p + 1 for p in range(k)], self.backend)
        mine = th.gen_shares(self._sk, rank, self._prng)
        for p in range(k):
            if p != rank:
                transport.send(p, to_bytes(mine[p]))
        received = [mine[rank]]
        for p in range(k):
            if p != rank:
                sh = from_bytes(self.params, transport.recv(p), ShamirShare, self.backend)
                if sh.sender != p or sh.point != rank + 1:
                    raise ValueError(f"peer {p} sent a Shamir share for the wrong point")
                received.append(sh)
        self._thresholdizer = th
        self._tsk = th.aggregate(received, rank + 1)

    # -- one round --------------------------------------------------------------------------------
    def _chunk_sizes(self, n_values: int) -> list[int]:
        """Ciphertexts per ring chunk: as even as possible, empty chunks when K > count."""
        count = max(1, math.ceil(n_values / self.encoder.slots))
        return [len(c) for c in np.array_split(np.arange(count), self.k)]

    def _encrypt(self, values: Any, n_ct: int) -> Ciphertext:
        xp = self.backend.xp
        slots = self.encoder.slots
        padded = xp.zeros(n_ct * slots, dtype=np.int64)
        padded[: values.size] = values
        padded += np.int64(self.offset)
        pts = self.encoder.encode(padded.reshape(n_ct, slots))
        enc = Encryptor(self.params, self._pk, backend=self.backend, prng=self._prng)
        return self.evaluator.mod_switch_to(enc.encrypt(pts), self.level)

    def _ct_codec(self, sizes: list[int], c1_only: bool) -> tuple[Any, Any]:
        moduli = self.params.q[: self.level]
        n, level = self.params.n, self.level
        comps = (1,) if c1_only else (0, 1)

        def encode(c: Ciphertext) -> bytes:
            host = self.backend.to_numpy(c.data)
            return pack_residues(np.ascontiguousarray(host[:, list(comps)]), moduli)

        def decode(b: bytes, i: int) -> Ciphertext:
            part = unpack_residues(b, moduli, n, (sizes[i], len(comps)))
            data = np.zeros((sizes[i], 2, level, n), dtype=np.uint32)
            data[:, list(comps)] = part
            return Ciphertext(self.params, self.backend.asarray(data))

        return encode, decode

    def _sums_codec(self, sizes: list[int]) -> tuple[Any, Any]:
        """Decrypted packed chunks travel at the sub-slot width, not as int64."""
        wmod = (self.modulus,)

        def encode(a: np.ndarray) -> bytes:
            return pack_residues(a, wmod, dtype=np.uint64) if a.size else b""

        def decode(b: bytes, i: int) -> np.ndarray:
            width = sizes[i] * self.encoder.slots
            if not width:
                return np.zeros((1, 0), dtype=np.uint64)
            return unpack_residues(b, wmod, width, (), np.uint64)

        return encode, decode

    def _open(self, ct: Ciphertext, agg: Share, peers: int) -> np.ndarray:
        pt = self.decryptor.decrypt(ct, agg, expected_peers=peers)
        return self.backend.to_numpy(self.encoder.decode(pt)).reshape(1, -1).astype(np.uint64)

    def _decode_share(self, b: bytes, _i: int) -> Share:
        return from_bytes(self.params, b, Share, self.backend)

    accepts_tensors = True  # torch tensors are taken by DLPack, on their device

    def _as_backend_array(self, values: Any) -> Any:
        """numpy/CuPy array of the backend from an array or a torch tensor, without host copies
        where the device matches (a CUDA tensor goes to CuPy by DLPack)."""
        if hasattr(values, "__dlpack__") and not isinstance(values, np.ndarray):
            on_gpu = getattr(values, "is_cuda", False)
            if on_gpu != self.backend.is_gpu:
                values = values.cpu() if on_gpu else values
                if self.backend.is_gpu:
                    return self.backend.asarray(values.numpy())
            return self.backend.from_dlpack(values.detach().contiguous())
        return self.backend.xp.asarray(values)

    def allreduce_sum(self, transport: Transport, values: Any) -> np.ndarray:
        if self._pk is None:
            raise RuntimeError("setup() must run before allreduce_sum()")
        values = self._as_backend_array(values)
        if values.dtype != np.int64 or values.ndim != 1:
            raise TypeError(f"values must be 1-D int64, got {values.dtype} {values.shape}")
        if values.size and int(np.abs(values).max()) > self.offset:
            raise ValueError(
                f"|value| {int(np.abs(values).max())} exceeds the offset {self.offset} "
                f"of {self.width}-bit sub-slots for {self.k} peers"
            )
        self.timings.clear()
        self.contributors = self.k
        k, rank = self.k, transport.rank
        sizes = self._chunk_sizes(values.size)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        t0 = time.perf_counter()
        ct = self._encrypt(values, int(starts[-1]))
        chunks = [Ciphertext(self.params, ct.data[starts[i] : starts[i + 1]]) for i in range(k)]
        t_enc = time.perf_counter() - t0
        t_comm = t_dec = 0.0

        # 1. reduce-scatter of ciphertext chunks (every peer's update is in the sum)
        t1 = time.perf_counter()
        if k > 1:
            own_idx, own_ct = ring_reduce_scatter(
                transport,
                chunks,
                encode=self._ct_codec(sizes, c1_only=False)[0],
                decode=self._ct_codec(sizes, c1_only=False)[1],
                combine=self.evaluator.add,
            )
        else:
            own_idx, own_ct = 0, chunks[0]
        # 2. all-gather of the aggregates: c1 suffices for the shares; a threshold round sends
        #    c0 too, so that any surviving peer can finish any chunk
        threshold = self.threshold is not None and self.threshold < k
        enc, dec = self._ct_codec(sizes, c1_only=not threshold)
        aggs = (
            ring_all_gather(transport, own_idx, own_ct, encode=enc, decode=dec)
            if k > 1
            else [own_ct]
        )
        t_comm += time.perf_counter() - t1

        if threshold:
            sums, idx_order, dt = self._threshold_decrypt(transport, aggs, sizes)
            t_comm += dt["communicate"]
            t_dec += dt["decrypt"]
        else:
            # 3. every peer's smudged share of every chunk; reduce-scatter to the owners
            t1 = time.perf_counter()
            shares = [
                self.decryptor.gen_share(self._sk, c, rank, self._prng, self._journal) for c in aggs
            ]
            t_dec += time.perf_counter() - t1
            t1 = time.perf_counter()
            if k > 1:
                share_idx, agg = ring_reduce_scatter(
                    transport,
                    shares,
                    encode=to_bytes,
                    decode=self._decode_share,
                    combine=lambda a, b: self.decryptor.aggregate([a, b]),
                )
                if share_idx != own_idx:
                    raise RuntimeError("ring ownership of shares and ciphertexts differs")
            else:
                agg = shares[0]
            t_comm += time.perf_counter() - t1
            # 4. the owner decrypts its chunk; 5. all-gather of the plaintext chunks
            t1 = time.perf_counter()
            mine = self._open(own_ct, agg, k)
            t_dec += time.perf_counter() - t1
            t1 = time.perf_counter()
            s_enc, s_dec = self._sums_codec(sizes)
            sums = (
                ring_all_gather(transport, own_idx, mine, encode=s_enc, decode=s_dec)
                if k > 1
                else [mine]
            )
            t_comm += time.perf_counter() - t1
        total = np.concatenate(sums, axis=-1).reshape(-1)[: values.size].astype(np.int64)
        total -= np.int64(k * self.offset)
        self._journal.release()  # the round is done: keep only what the shares were for
        self.timings.update(encrypt=t_enc, communicate=t_comm, decrypt=t_dec)
        return total

    # -- threshold decryption with dropouts ----------------------------------------------------
    def _threshold_decrypt(
        self, transport: Transport, aggs: list[Ciphertext], sizes: list[int]
    ) -> tuple[list[np.ndarray], list[int], dict[str, float]]:
        """Decrypt the aggregated chunks with the first `threshold` live peers.

        The live set is agreed by a liveness exchange after the ciphertext phase (a peer lost
        before decryption is noticed by all alike), the active set A is fixed before any share,
        members of A make one share per chunk with their Lagrange-weighted key share, the shares
        are summed along a ring over A, each member decrypts its chunks, and the plaintexts are
        all-gathered over A and forwarded to the live peers outside A. A member of A lost after
        that point aborts the round (`PeerDropped`): the trainer retries with fresh ciphertexts,
        so no peer ever makes a second share for the same c1.
        """
        rank, k = transport.rank, self.k
        dt = {"communicate": 0.0, "decrypt": 0.0}
        if rank in self.drop_before_decrypt:
            transport.leave()  # simulated loss of this peer before decryption
        t1 = time.perf_counter()
        live = transport.live_peers()
        dt["communicate"] += time.perf_counter() - t1
        t = self.threshold
        assert t is not None
        if len(live) < t:
            raise PeerDropped(
                min(set(range(k)) - set(live)),
                f"only {len(live)} live peers, threshold {t}: round discarded",
            )
        active = live[:t]
        points = [p + 1 for p in active]
        groups = [list(g) for g in np.array_split(np.arange(k), t)]
        sums: list[np.ndarray] = [np.zeros((1, 0), dtype=np.uint64)] * k
        if rank in active:
            pos = active.index(rank)
            t1 = time.perf_counter()
            key = self._thresholdizer.additive_share(self._tsk, points)
            shares = [
                self.decryptor.gen_share(
                    key, c, rank, self._prng, self._journal, active_set=frozenset(points)
                )
                for c in aggs
            ]
            dt["decrypt"] += time.perf_counter() - t1

            sub = _SubRing(transport, active)
            t1 = time.perf_counter()
            group_shares = [[shares[i] for i in g] for g in groups]

            def enc_group(items: list[Share]) -> bytes:
                blobs = [to_bytes(x) for x in items]
                return b"".join(len(b).to_bytes(8, "little") + b for b in blobs)

            def dec_group(buf: bytes, _g: int) -> list[Share]:
                out, off = [], 0
                while off < len(buf):
                    n = int.from_bytes(buf[off : off + 8], "little")
                    out.append(self._decode_share(buf[off + 8 : off + 8 + n], 0))
                    off += 8 + n
                return out

            def combine(a: list[Share], b: list[Share]) -> list[Share]:
                return [self.decryptor.aggregate([x, y]) for x, y in zip(a, b, strict=True)]

            if t > 1:
                g_idx, g_agg = ring_reduce_scatter(
                    sub, group_shares, encode=enc_group, decode=dec_group, combine=combine
                )
            else:
                g_idx, g_agg = 0, group_shares[0]
            dt["communicate"] += time.perf_counter() - t1
            t1 = time.perf_counter()
            opened = [self._open(aggs[i], a, t) for i, a in zip(groups[g_idx], g_agg, strict=True)]
            dt["decrypt"] += time.perf_counter() - t1
            t1 = time.perf_counter()
            s_enc, s_dec = self._sums_codec(sizes)

            def enc_opened(items: list[np.ndarray]) -> bytes:
                return b"".join(len(e).to_bytes(8, "little") + e for e in map(s_enc, items))

            def dec_opened(buf: bytes, g: int) -> list[np.ndarray]:
                out, off = [], 0
                for i in groups[g]:
                    n = int.from_bytes(buf[off : off + 8], "little")
                    out.append(s_dec(buf[off + 8 : off + 8 + n], i))
                    off += 8 + n
                return out

            gathered = (
                ring_all_gather(sub, g_idx, opened, encode=enc_opened, decode=dec_opened)
                if t > 1
                else [opened]
            )
            for g, items in zip(groups, gathered, strict=True):
                for i, arr in zip(g, items, strict=True):
                    sums[i] = arr
            # forward the result to the live peers outside A (each member serves a share of them)
            outside = [p for p in live if p not in active]
            payload = enc_opened(sums)
            for j, p in enumerate(outside):
                if j % t == pos:
                    transport.send(p, payload)
            dt["communicate"] += time.perf_counter() - t1
        else:
            outside = [p for p in live if p not in active]
            server = active[outside.index(rank) % t]
            t1 = time.perf_counter()
            buf = transport.recv(server)
            dt["communicate"] += time.perf_counter() - t1
            off = 0
            s_dec = self._sums_codec(sizes)[1]
            for i in range(k):
                n = int.from_bytes(buf[off : off + 8], "little")
                sums[i] = s_dec(buf[off + 8 : off + 8 + n], i)
                off += 8 + n
        return sums, list(range(k)), dt


class _SubRing(Transport):
    """A ring over a subset of peers, relabelled 0..len(members)-1, on top of a transport."""

    def __init__(self, base: Transport, members: list[int]) -> None:
        super().__init__(members.index(base.rank), len(members))
        self.base, self.members = base, members

    def send(self, dst: int, payload: bytes) -> None:
        self.base.send(self.members[dst], payload)

    def recv(self, src: int) -> bytes:
        return self.base.recv(self.members[src])

    def barrier(self) -> None:
        self.base.barrier()
