"""Multiparty BFV: collective keys, collective decryption, public-key switching, thresholds.

A `Party` (key share, CSPRNG, mandatory `ShareJournal`, id) makes every share; protocol objects
(`PublicKeyGen`, `RelinKeyGen`, `GaloisKeyGen`, `CollectiveDecrypt`, `KeySwitch`,
`PublicKeySwitch`) take a `gpubfv.context.Context` and do `sample_crp`, `aggregate` and the
finaliser. See `gpubfv/mhe/README.md` for the map from protocol steps to calls.
"""

from gpubfv.mhe import wire as _wire  # noqa: F401  (registers the share wire types)
from gpubfv.mhe.journal import DecryptionBudgetExceeded, JournalCorrupt, ShareJournal
from gpubfv.mhe.noise import (
    NoiseBudgetError,
    NoiseEstimate,
    check_decryptable,
    smudging_sigma,
)
from gpubfv.mhe.party import Party
from gpubfv.mhe.planner import AggregationPlan, choose_parameters, choose_parameters_for_updates
from gpubfv.mhe.protocols import (
    CRP,
    CollectiveDecrypt,
    GaloisKeyGen,
    KeySwitch,
    PublicKeyGen,
    PublicKeySwitch,
    RelinKeyGen,
    RKGEphemeral,
)
from gpubfv.mhe.shares import (
    DecryptionShare,
    GaloisKeyShare,
    KeySwitchShare,
    ProtocolShare,
    PublicKeyShare,
    PublicKeySwitchShare,
    RelinKeyShareRound1,
    RelinKeyShareRound2,
    ShareMismatch,
    ShareReplay,
    c1_digest,
    c1_row_digests,
)
from gpubfv.mhe.smudging import NOTIONS, Smudging
from gpubfv.mhe.threshold import (
    ShamirShare,
    ThresholdError,
    Thresholdizer,
    ThresholdSecretShare,
)

__all__ = [
    "NOTIONS",
    "Smudging",
    "choose_parameters_for_updates",
    "CRP",
    "AggregationPlan",
    "CollectiveDecrypt",
    "DecryptionBudgetExceeded",
    "DecryptionShare",
    "GaloisKeyGen",
    "GaloisKeyShare",
    "JournalCorrupt",
    "KeySwitch",
    "KeySwitchShare",
    "NoiseBudgetError",
    "NoiseEstimate",
    "Party",
    "ProtocolShare",
    "PublicKeyGen",
    "PublicKeyShare",
    "PublicKeySwitch",
    "PublicKeySwitchShare",
    "RKGEphemeral",
    "RelinKeyGen",
    "RelinKeyShareRound1",
    "RelinKeyShareRound2",
    "ShamirShare",
    "ShareJournal",
    "ShareMismatch",
    "ShareReplay",
    "ThresholdError",
    "ThresholdSecretShare",
    "Thresholdizer",
    "c1_digest",
    "c1_row_digests",
    "check_decryptable",
    "choose_parameters",
    "smudging_sigma",
]
