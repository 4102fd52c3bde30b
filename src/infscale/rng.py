"""Randomness is an argument.

Every sample's seed derives from ``(seed, problem id, sample index)`` through a hash, so that a
sample's random draws do not depend on what else shares its batch, and two problems never share a
stream. (Whether the logits do is the generator's business: see ``LlamaEngine(reproducible=...)``.)
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["derive_seed", "make_rng"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends on every part (order matters); stable across runs and machines."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little") >> 1


def make_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by :func:`derive_seed` of the parts."""
    return np.random.default_rng(derive_seed(*parts))
