"""Each image's random numbers from the run's seed and the image's name, never from its place in a run."""

from __future__ import annotations

import hashlib

SEED_BITS = 63  # torch.Generator.manual_seed takes any int; 63 bits stay positive in every integer type


def image_seed(seed: int, name: str) -> int:
    """The seed of the image called ``name`` (its path relative to the run's input root, '/'-separated)
    in a run seeded with ``seed``: the same in any order, batch composition or number of workers."""
    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)
