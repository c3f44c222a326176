"""A deterministic, machine-independent choice of which normal images train the detector.

Rule (exactly): for each file name ``n`` (the base name, e.g. ``"exp1_num_10181.jpg"``) compute
``key(n) = SHA-256(f"{seed}:{n}")`` read as a big-endian integer. Order the *distinct* names by
``(key, name)`` and put the first ``floor(train_fraction * count + 0.5)`` of them in the train split,
the rest in the test split.

Why this rule: the result depends only on the set of names, the fraction and the seed, never on
the order in which the file system lists files, on Python's per-process string-hash salt, on NumPy's
random generator version or on the platform. Adding or removing one image moves at most that image
and the one on the cut, so splits are stable as a dataset grows. The count is exact (rounded half
up), not approximately ``train_fraction``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable


def name_key(name: str, seed: int) -> int:
    """Return the seeded SHA-256 key of a file name that orders names for the split.

    Args:
        name: a file's base name.
        seed: the split seed.

    Returns:
        A non-negative integer.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest, "big")


def select_train_names(names: Iterable[str], train_fraction: float, seed: int = 0) -> set[str]:
    """Choose the names that go to the train split (see the module docstring for the exact rule).

    Args:
        names: file base names; duplicates count once.
        train_fraction: the fraction in ``[0, 1]`` to put in the train split.
        seed: changes which names are chosen.

    Returns:
        The chosen names.

    Raises:
        ValueError: if ``train_fraction`` is outside ``[0, 1]``.
    """
    if not 0.0 <= train_fraction <= 1.0:
        msg = f"train_fraction must be in [0, 1], got {train_fraction}"
        raise ValueError(msg)
    distinct = sorted(set(names))
    n_train = math.floor(train_fraction * len(distinct) + 0.5)
    ranked = sorted(distinct, key=lambda name: (name_key(name, seed), name))
    return set(ranked[:n_train])
