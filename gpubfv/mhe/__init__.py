"""Multiparty BFV: collective keys, collective decryption, public-key switching, thresholds.

See `gpubfv/mhe/README.md` for the map from protocol steps to API calls.
"""

from gpubfv.mhe import wire as _wire  # noqa: F401  (registers the share wire types)
from gpubfv.mhe.journal import ShareJournal
from gpubfv.mhe.noise import (
    AggregationPlan,
    NoiseBudgetError,
    NoiseEstimate,
    check_decryptable,
    choose_parameters,
    smudging_sigma,
)
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
from gpubfv.mhe.shares import Share, ShareMismatch, ShareReplay, c1_digest, ciphertext_digest
from gpubfv.mhe.threshold import (
    ShamirShare,
    ThresholdError,
    Thresholdizer,
    ThresholdSecretShare,
)

__all__ = [
    "CRP",
    "AggregationPlan",
    "CollectiveDecrypt",
    "GaloisKeyGen",
    "KeySwitch",
    "NoiseBudgetError",
    "NoiseEstimate",
    "PublicKeyGen",
    "PublicKeySwitch",
    "RKGEphemeral",
    "RelinKeyGen",
    "ShamirShare",
    "Share",
    "ShareJournal",
    "ShareMismatch",
    "ShareReplay",
    "ThresholdError",
    "ThresholdSecretShare",
    "Thresholdizer",
    "check_decryptable",
    "choose_parameters",
    "c1_digest",
    "ciphertext_digest",
    "smudging_sigma",
]
