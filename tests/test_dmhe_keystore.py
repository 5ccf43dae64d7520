"""Persisted key material (dmhe.aggregators.encrypted_keystore): round trip, owner-only files,
refusal of a truncated,
tampered, foreign or loosened key file (ConfigError: exit 2), and a reopened journal of a
reloaded key share refusing every row it recorded before the restart (the budget D counts on)."""

from __future__ import annotations

import os
import stat
from functools import cache

import numpy as np
import pytest

from dmhe.aggregators.encrypted_keystore import (
    KEYS,
    KeyMaterial,
    journal_path,
    load_keys,
    save_keys,
)
from dmhe.config import ConfigError
from gpubfv import PRNG, BatchEncoder, Encryptor, KeyGenerator, preset
from gpubfv.context import Context
from gpubfv.mhe import (
    CollectiveDecrypt,
    DecryptionBudgetExceeded,
    NoiseEstimate,
    Party,
    PublicKeyGen,
    ShareJournal,
    ShareReplay,
    Smudging,
    Thresholdizer,
)
from gpubfv.serialization import to_bytes

K = 3


@cache
def material():
    ctx = Context(preset("TOY6"), "cpu")
    rng = [PRNG(bytes([i + 1]) * 32) for i in range(K)]
    sks = [KeyGenerator(ctx, prng=rng[i]).gen_secret_key() for i in range(K)]
    ckg = PublicKeyGen(ctx, peers=K)
    crp = ckg.sample_crp(b"\x01" * 32)
    parties = [
        Party(ctx, sk, peer_id=i, journal=ShareJournal.in_memory(unsafe_not_persistent=True))
        for i, sk in enumerate(sks)
    ]
    pk = ckg.finalize(ckg.aggregate([p.public_key_share(ckg, crp) for p in parties]), crp)
    th = Thresholdizer(ctx, 2, [1, 2, 3])
    sent = [th.gen_shares(sks[i], i, rng[i]) for i in range(K)]
    tsk = th.aggregate([sent[i][0] for i in range(K)], 1)
    return ctx, sks, pk, tsk


def keys(threshold: bool = True) -> KeyMaterial:
    ctx, sks, pk, tsk = material()
    return KeyMaterial(
        rank=0,
        setup_id="ab" * 16,
        secret_key=sks[0],
        public_key=pk,
        threshold_share=tsk if threshold else None,
        threshold=2 if threshold else None,
        points=(1, 2, 3) if threshold else None,
    )


@pytest.mark.parametrize("threshold", [True, False])
def test_round_trip_owner_only(tmp_path, threshold):
    ctx = material()[0]
    folder = tmp_path / "rank-0"
    path = save_keys(folder, keys(threshold))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in folder.iterdir() if p.name != KEYS]  # no temporary file left
    back = load_keys(folder, ctx, 0)
    want = keys(threshold)
    assert to_bytes(back.secret_key) == to_bytes(want.secret_key)
    assert back.public_key_fingerprint == want.public_key_fingerprint
    assert back.header() == want.header()
    if threshold:
        assert to_bytes(back.threshold_share) == to_bytes(want.threshold_share)
    else:
        assert back.threshold_share is None


def test_truncated_tampered_foreign_or_loose_files_are_refused(tmp_path):
    ctx = material()[0]
    path = save_keys(tmp_path, keys())
    raw = path.read_bytes()
    with pytest.raises(ConfigError, match="peer 0, not 1"):
        load_keys(tmp_path, ctx, 1)
    for bad in (raw[:-1], raw[:40], raw[: len(raw) // 2], b""):
        path.write_bytes(bad)
        with pytest.raises(ConfigError, match="truncated|digest|not a dmhe"):
            load_keys(tmp_path, ctx, 0)
    for at in (9, len(raw) // 2, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[at] ^= 0x04
        path.write_bytes(bytes(flipped))
        with pytest.raises(ConfigError, match="digest"):
            load_keys(tmp_path, ctx, 0)
    path.write_bytes(raw)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="0600"):
        load_keys(tmp_path, ctx, 0)
    os.chmod(path, 0o600)
    other = Context(preset("TOY4"), "cpu")
    with pytest.raises(ConfigError, match="other parameters"):
        load_keys(tmp_path, other, 0)
    (tmp_path / KEYS).unlink()
    with pytest.raises(ConfigError, match="no key file"):
        load_keys(tmp_path, ctx, 0)


def test_journal_path_is_fixed_by_the_setup(tmp_path):
    r = tmp_path / "r"
    assert journal_path(r, "additive", "ab" * 16) == journal_path(r, "additive", "ab" * 16)
    assert journal_path(r, "additive", "ab" * 16) != journal_path(r, "threshold", "ab" * 16)
    assert stat.S_IMODE(r.stat().st_mode) == 0o700  # made owner-only
    with pytest.raises(ValueError):
        journal_path(r, "additive", "../x")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a folder"):  # exit 2, not a traceback
        journal_path(tmp_path / "file", "additive", "ab" * 16)


def test_reopened_journal_of_a_reloaded_key_refuses_recorded_rows(tmp_path):
    ctx, _, pk, _ = material()
    save_keys(tmp_path, keys())
    noise = NoiseEstimate.fresh(ctx.params, K).summed(K)

    def cd(budget: int) -> CollectiveDecrypt:
        return CollectiveDecrypt(
            ctx, noise, peers=K, smudging=Smudging(budget, notion="renyi", lam=40)
        )

    x = np.arange(2 * ctx.params.n).reshape(2, ctx.params.n) % 50
    ct = Encryptor(ctx, pk, prng=PRNG(b"\x56" * 32)).encrypt(BatchEncoder(ctx).encode(x))
    jpath = journal_path(tmp_path, "additive", keys().setup_id)
    j = ShareJournal.open(jpath)
    Party(ctx, keys().secret_key, peer_id=0, journal=j).decryption_share(cd(3), ct)
    j.close()  # the process dies here; it restarts and reloads its key share
    back = load_keys(tmp_path, ctx, 0)
    j2 = ShareJournal.open(journal_path(tmp_path, "additive", back.setup_id))
    assert j2.key_switch_rows == 2  # the decryption budget keeps counting
    again = Party(ctx, back.secret_key, peer_id=0, journal=j2)
    with pytest.raises(ShareReplay):
        again.decryption_share(cd(3), ct)
    fresh = Encryptor(ctx, pk, prng=PRNG(b"\x57" * 32)).encrypt(BatchEncoder(ctx).encode(x))
    with pytest.raises(DecryptionBudgetExceeded):
        again.decryption_share(cd(3), fresh)
    j2.close()
