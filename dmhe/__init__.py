"""dmhe: decentralized training with exact secure aggregation of model updates.

Layers (imports point down): ``cli`` → ``engine``/``trainer`` → ``aggregation`` (strategies;
``encrypted`` plugs in here) → ``transport``; ``quantize``, ``dp``, ``data`` and ``models`` are
leaves. Importing ``dmhe`` imports neither torch nor the crypto library.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
