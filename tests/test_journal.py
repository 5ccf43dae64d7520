"""The share journal: every way around the never-a-second-share rule is refused or answered with
the recorded rows (eprint 2024/194, 2025/409).

Covered: re-batched, reordered and sliced requests; a PCKS or CKS-to-key share after a CKS share of
the same c1 (one namespace); other smudging/active set; release; restart (reopen the file);
truncated, bit-flipped and foreign journal files; the decryption budget; empty batches; CRP
protocols per seed and digit; the mandatory journal.
"""

from __future__ import annotations

import os
import stat
from functools import cache

import numpy as np
import pytest

from gpubfv import PRNG, BatchEncoder, Encryptor, KeyGenerator, preset
from gpubfv.ciphertext import Ciphertext
from gpubfv.context import Context
from gpubfv.mhe import (
    CollectiveDecrypt,
    DecryptionBudgetExceeded,
    GaloisKeyGen,
    JournalCorrupt,
    KeySwitch,
    NoiseEstimate,
    Party,
    PublicKeyGen,
    PublicKeySwitch,
    RelinKeyGen,
    ShareJournal,
    ShareReplay,
    Smudging,
)
from gpubfv.serialization import to_bytes

K = 2
LAM = 40


def spec(budget: int = 100, notion: str = "renyi", lam: int = LAM) -> Smudging:
    # TOY6 is a tiny insecure set: the opt-in renyi notion, stated; the journal only sees its tag
    return Smudging(budget, notion=notion, lam=lam)


@cache
def setup():
    p = preset("TOY6")
    ctx = Context(p, "cpu")
    sks = [KeyGenerator(ctx, prng=PRNG(bytes([i + 1]) * 32)).gen_secret_key() for i in range(K)]
    kg = KeyGenerator(ctx, prng=PRNG(b"\x55" * 32))
    pk = kg.gen_public_key(kg.gen_secret_key())  # any key: the journal only sees c1
    enc = BatchEncoder(ctx)
    x = np.arange(4 * p.n).reshape(4, p.n) % 50
    ct = Encryptor(ctx, pk, prng=PRNG(b"\x56" * 32)).encrypt(enc.encode(x))  # batch of 4 rows
    noise = NoiseEstimate.fresh(p, K).summed(K)
    return p, ctx, sks, ct, noise


def rows(ct: Ciphertext, idx) -> Ciphertext:
    return Ciphertext(ct.params, ct.data[list(idx)] if not isinstance(idx, int) else ct.data[idx])


def mem() -> ShareJournal:
    return ShareJournal.in_memory(unsafe_not_persistent=True)


def party(journal: ShareJournal, i: int = 0) -> Party:
    _, ctx, sks, _, _ = setup()
    return Party(ctx, sks[i], peer_id=i, journal=journal, prng=PRNG(bytes([i + 9]) * 32))


def cd(budget: int = 100, notion: str = "renyi", lam: int = LAM) -> CollectiveDecrypt:
    _, ctx, _, _, noise = setup()
    return CollectiveDecrypt(ctx, noise, peers=K, smudging=spec(budget, notion, lam))


def test_rebatched_reordered_and_sliced_requests_return_the_recorded_rows():
    _, _, _, ct, _ = setup()
    pa, dec = party(mem()), cd()
    ab = pa.decryption_share(dec, rows(ct, [0, 1])).data
    ba = pa.decryption_share(dec, rows(ct, [1, 0])).data
    a = pa.decryption_share(dec, rows(ct, [0])).data
    a_single = pa.decryption_share(dec, rows(ct, 0)).data  # no batch axis at all
    assert np.array_equal(ba, ab[::-1]) and np.array_equal(a[0], ab[0])
    assert np.array_equal(a_single, ab[0])
    # a batch mixing a recorded row with a new one: the recorded row back, one fresh row
    mixed = pa.decryption_share(dec, rows(ct, [2, 0])).data
    assert np.array_equal(mixed[1], ab[0])
    assert pa.journal.key_switch_rows == 3
    assert np.array_equal(pa.decryption_share(dec, rows(ct, [2])).data[0], mixed[0])
    # a row repeated inside one request gets one share
    twice = pa.decryption_share(dec, rows(ct, [3, 3])).data
    assert np.array_equal(twice[0], twice[1]) and pa.journal.key_switch_rows == 4


def test_one_namespace_for_cks_cks_to_a_key_and_pcks():
    p, ctx, sks, ct, noise = setup()
    pa = party(mem())
    pa.decryption_share(cd(), rows(ct, [0, 1]))
    kg = KeyGenerator(ctx, prng=PRNG(b"\x57" * 32))
    pk_r = kg.gen_public_key(kg.gen_secret_key())
    pcks = PublicKeySwitch(ctx, noise, peers=K, smudging=spec())
    ks = KeySwitch(ctx, noise, peers=K, smudging=spec())
    with pytest.raises(ShareReplay, match="second share"):  # PCKS after CKS of the same c1
        pa.public_key_switch_share(pcks, rows(ct, [1]), pk_r)
    with pytest.raises(ShareReplay):  # CKS to another key, sliced out of a re-batch
        pa.key_switch_share(ks, rows(ct, [2, 0]), sks[1])
    with pytest.raises(ShareReplay):  # other smudging lambda
        pa.decryption_share(cd(lam=32), rows(ct, [0]))
    with pytest.raises(ShareReplay):  # other smudging notion (the default one fits TOY6 at D=100)
        pa.decryption_share(cd(notion="statistical"), rows(ct, [0]))
    with pytest.raises(ShareReplay):  # other declared budget D (part of the spec's tag)
        pa.decryption_share(cd(budget=101), rows(ct, [0]))
    with pytest.raises(ShareReplay):  # other peer set
        pa.decryption_share(
            CollectiveDecrypt(ctx, noise, peers=[0, 1, 2], smudging=spec()), rows(ct, [0])
        )
    # the refused requests recorded nothing: row 2 is still fresh for any protocol
    assert pa.journal.key_switch_rows == 2
    pa.public_key_switch_share(pcks, rows(ct, [2]), pk_r)
    kg2 = KeyGenerator(ctx, prng=PRNG(b"\x58" * 32))
    with pytest.raises(ShareReplay):  # PCKS of the same row to another receiver
        pa.public_key_switch_share(pcks, rows(ct, [2]), kg2.gen_public_key(kg2.gen_secret_key()))


def test_release_refuses_every_recorded_row():
    _, _, _, ct, _ = setup()
    pa, dec = party(mem()), cd()
    pa.decryption_share(dec, rows(ct, [0, 1]))
    assert pa.journal.release() == 2
    for idx in ([0, 1], [1, 0], [1], 0):
        with pytest.raises(ShareReplay, match="released or before a restart"):
            pa.decryption_share(dec, rows(ct, idx))
    pa.decryption_share(dec, rows(ct, [2]))  # a new row is fine


def test_restart_refuses_and_the_file_is_owner_only(tmp_path):
    p, ctx, sks, ct, _ = setup()
    path = tmp_path / "peer0.journal"
    j = ShareJournal.open(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pa = party(j)
    ckg = PublicKeyGen(ctx, peers=K)
    crp = ckg.sample_crp(b"\x01" * 32)
    first = pa.public_key_share(ckg, crp)
    assert pa.public_key_share(ckg, crp) is first  # retry before a restart: the same share
    pa.decryption_share(cd(), rows(ct, [0, 1]))
    with pytest.raises(RuntimeError, match="in use"):
        ShareJournal.open(path)  # one process per journal
    j.close()
    j2 = ShareJournal.open(path)
    assert len(j2) == 3 and j2.key_switch_rows == 2
    pa2 = party(j2)
    with pytest.raises(ShareReplay, match="before a restart"):
        pa2.decryption_share(cd(), rows(ct, [1]))
    with pytest.raises(ShareReplay):
        pa2.public_key_share(ckg, crp)
    with pytest.raises(ValueError, match="another key"):
        party(j2, 1)  # the journal is bound to key share 0
    # the budget counts across restarts
    with pytest.raises(DecryptionBudgetExceeded):
        pa2.decryption_share(cd(budget=2), rows(ct, [2]))
    pa2.decryption_share(cd(budget=3), rows(ct, [2]))
    j2.close()
    assert ShareJournal.open(path).key_switch_rows == 3


def _written_journal(tmp_path):
    _, _, _, ct, _ = setup()
    path = tmp_path / "j"
    j = ShareJournal.open(path)
    party(j).decryption_share(cd(), rows(ct, [0, 1]))
    j.close()
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_truncated_journal_refuses_to_open(tmp_path, cut):
    path, raw = _written_journal(tmp_path)
    path.write_bytes(raw[:-cut])
    with pytest.raises(JournalCorrupt, match=rf"{path}: offset \d+: truncated"):
        ShareJournal.open(path)


def test_bit_flipped_or_foreign_journal_refuses_to_open(tmp_path):
    path, raw = _written_journal(tmp_path)
    for pos in (8, 20, len(raw) // 2, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x10
        path.write_bytes(bytes(flipped))
        with pytest.raises(JournalCorrupt, match=rf"{path}: offset \d+"):
            ShareJournal.open(path)
    path.write_bytes(b"")
    with pytest.raises(JournalCorrupt, match="offset 0"):
        ShareJournal.open(path)
    path.write_bytes(b"NOTAJRNL" + raw[8:])
    with pytest.raises(JournalCorrupt, match="not a share journal"):
        ShareJournal.open(path)


def test_decryption_budget():
    _, _, _, ct, _ = setup()
    pa, dec = party(mem()), cd(budget=2)
    assert dec.budget == dec.smudging.budget == 2  # the journal counts against the spec's D
    with pytest.raises(DecryptionBudgetExceeded, match="budget of 2"):
        pa.decryption_share(dec, rows(ct, [0, 1, 2]))
    assert pa.journal.key_switch_rows == 0  # refused before anything was made
    pa.decryption_share(dec, rows(ct, [0, 1]))
    pa.decryption_share(dec, rows(ct, [1, 0]))  # recorded rows do not count again
    with pytest.raises(DecryptionBudgetExceeded):
        pa.decryption_share(dec, rows(ct, [3]))


def test_empty_batch_records_nothing():
    _, ctx, _, ct, _ = setup()
    pa = party(mem())
    empty = Ciphertext(ct.params, ct.data[:0])
    share = pa.decryption_share(cd(budget=1), empty)
    assert share.data.shape == (0, ct.level, ctx.n)
    assert len(pa.journal) == 0 and pa.journal.key_switch_rows == 0
    assert to_bytes(share)


def test_crp_protocols_per_seed_and_digit():
    _, ctx, _, _, _ = setup()
    pa = party(mem())
    gkg = GaloisKeyGen(ctx, peers=K)
    crp3 = gkg.sample_crp(b"\x02" * 32, 3)
    s3 = pa.galois_key_share(gkg, crp3, 3)
    assert pa.galois_key_share(gkg, crp3, 3) is s3
    assert len(pa.journal) == len(ctx.digits)  # one entry per gadget digit
    pa.galois_key_share(gkg, gkg.sample_crp(b"\x02" * 32, 5), 5)  # another CRP: fine
    rkg = RelinKeyGen(ctx, peers=K)
    crp = rkg.sample_crp(b"\x03" * 32)
    eph, r1 = pa.relin_key_share_round1(rkg, crp)
    assert pa.relin_key_share_round1(rkg, crp) == (eph, r1)  # the ephemeral stays with it
    other = party(mem(), 1).relin_key_share_round1(rkg, crp)[1]
    agg_a, agg_b = rkg.aggregate([r1]), rkg.aggregate([r1, other])
    r2 = pa.relin_key_share_round2(rkg, eph, agg_a)
    assert pa.relin_key_share_round2(rkg, eph, agg_a) is r2
    with pytest.raises(ShareReplay):  # round 2 again for another round-1 aggregate
        pa.relin_key_share_round2(rkg, eph, agg_b)
    pa.journal.release()
    with pytest.raises(ShareReplay, match="released"):
        pa.galois_key_share(gkg, crp3, 3)


def test_the_journal_is_mandatory():
    _, ctx, sks, _, _ = setup()
    with pytest.raises(TypeError, match="needs a ShareJournal"):
        Party(ctx, sks[0], peer_id=0, journal=None)
    with pytest.raises(ValueError, match="unsafe_not_persistent=True"):
        ShareJournal.in_memory()
    with pytest.raises(TypeError, match="ShareJournal.open"):
        ShareJournal(_fd=None, _path=None, _token=None)


def test_key_switch_to_a_second_target_key_is_refused():
    p, ctx, sks, ct, noise = setup()
    pa = party(mem())
    ks = KeySwitch(ctx, noise, peers=K, smudging=spec())
    t1, t2 = (KeyGenerator(ctx, prng=PRNG(bytes([b]) * 32)).gen_secret_key() for b in (0x61, 0x62))
    first = pa.key_switch_share(ks, rows(ct, [0]), t1)
    assert np.array_equal(pa.key_switch_share(ks, rows(ct, [0]), t1).data, first.data)
    with pytest.raises(ShareReplay):
        pa.key_switch_share(ks, rows(ct, [0]), t2)


def test_one_fsync_per_share_request(tmp_path, monkeypatch):
    _, ctx, _, ct, _ = setup()
    j = ShareJournal.open(tmp_path / "j")
    pa = party(j)  # binding record written here
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    pa.decryption_share(cd(), rows(ct, [0, 1, 2]))
    assert len(calls) == 1
    pa.decryption_share(cd(), rows(ct, [2, 1]))  # answered from the record: nothing written
    assert len(calls) == 1
    ckg = PublicKeyGen(ctx, peers=K)
    pa.public_key_share(ckg, ckg.sample_crp(b"\x04" * 32))
    assert len(calls) == 2
    j.close()
