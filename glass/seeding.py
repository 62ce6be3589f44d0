"""Per-sample seeds.

Every random choice in the pipeline derives from the run's seed (params) and the id of the sample
it concerns, never from batch position, worker count or iteration order, so results do not change
when work is split, batched or resumed differently.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_seed(seed: int, sample_id: str, purpose: str = "") -> int:
    """A 63-bit seed derived from (seed, purpose, sample id) by SHA-256."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{purpose}\x1f{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def sample_rng(seed: int, sample_id: str, purpose: str = "") -> np.random.Generator:
    return np.random.default_rng(sample_seed(seed, sample_id, purpose))
