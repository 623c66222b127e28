"""Seeded randomness that leaves the caller's global torch RNG state as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["derive_seed", "seeded"]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's global RNG seeded by ``seed``, then restore the state it had.

    Code that draws from the global generator without taking one (``nn.init``, timm's weight
    initialisation, random-init models) becomes reproducible, while the caller's own random
    sequence continues as if the body had never run. CUDA generators are forked and seeded
    only when CUDA is already initialised (seeding it lazily would change its state later).

    Parameters
    ----------
    seed : int
        Seed of the global generator(s) inside the body.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.manual_seed_all(int(seed))
        yield


def derive_seed(seed: int, salt: str) -> int:
    """A seed for one random step, derived from the run's ``seed`` and the step's ``salt``.

    ``int.from_bytes(sha256(f"{seed}:{salt}")[:8], "little") % 2**32``: distinct steps get
    independent seeds, the same step always the same one, and none equals ``seed`` by design
    (so a random-initialised control never shares the seed the model itself was built with).
    """
    import hashlib

    digest = hashlib.sha256(f"{int(seed)}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**32
