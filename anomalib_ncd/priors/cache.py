"""A disk cache of object masks, for priors that are costly to run (Grounded-SAM)."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np

from anomalib_ncd.backbones.offline_weights import cache_dir as package_cache_dir
from anomalib_ncd.io import atomic_write_path, atomic_write_text
from anomalib_ncd.priors.base import ObjectPrior, PriorMask, check_image

logger = logging.getLogger(__name__)

CACHE_SUBFOLDER = "object_priors"


def default_cache_dir() -> Path:
    """``<cache root>/object_priors``, the cache root being ``$ANOMALIB_NCD_CACHE`` or ``~/.cache/anomalib_ncd``.

    Returns:
        The folder (not necessarily existing yet).
    """
    return package_cache_dir() / CACHE_SUBFOLDER


def image_key(image: np.ndarray, fingerprint: str) -> str:
    """The cache key of one image under one prior: sha256 of the prior, the shape, dtype and pixels.

    Args:
        image: the pixels.
        fingerprint: the prior's :meth:`~anomalib_ncd.priors.ObjectPrior.fingerprint`.

    Returns:
        64 hexadecimal digits.
    """
    pixels = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(fingerprint.encode("utf-8"))
    digest.update(f"|{pixels.shape}|{pixels.dtype.str}|".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


class CachedObjectPrior(ObjectPrior):
    """Keeps another prior's masks on disk, keyed by the image's pixels and the prior's fingerprint.

    Layout: ``<cache_dir>/<sha256(fingerprint)[:16]>/<key[:2]>/<key>.npz``, each file holding the
    bit-packed mask, its shape and the fallback reason (so a cached substitute is still logged and
    counted). ``prior.txt`` in the fingerprint folder names the prior. Files are written atomically; an
    unreadable or inconsistent file is logged, recomputed and replaced.

    Args:
        prior: the prior whose masks are cached.
        cache_dir: the cache folder (``None``: :func:`default_cache_dir`).

    Attributes:
        hits: masks read from the cache.
        misses: masks computed (and written).
    """

    def __init__(self, prior: ObjectPrior, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        self.prior = prior
        self.name = prior.name
        self.warn_reasons = prior.warn_reasons
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._fingerprint = prior.fingerprint()
        self.folder = self.cache_dir / hashlib.sha256(self._fingerprint.encode("utf-8")).hexdigest()[:16]
        self.hits = 0
        self.misses = 0

    @property
    def fallback_counts(self) -> dict[str, int]:
        """Substitute masks by reason, cached or computed (those of the wrapped prior)."""
        return self.prior.fallback_counts

    def __getattr__(self, name: str) -> object:
        """Other attributes (e.g. ``no_box_count``) come from the wrapped prior."""
        if name == "prior":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.prior, name)

    def fingerprint(self) -> str:
        """The wrapped prior's fingerprint (caching does not change the masks).

        Returns:
            The fingerprint.
        """
        return self._fingerprint

    def path_of(self, image: np.ndarray) -> Path:
        """The cache file of an image.

        Args:
            image: the pixels.

        Returns:
            The ``.npz`` path (existing or not).
        """
        key = image_key(image, self._fingerprint)
        return self.folder / key[:2] / f"{key}.npz"

    def compute(self, image: np.ndarray, path: str | Path | None = None) -> PriorMask:
        """The cached mask, or the wrapped prior's (then written to the cache).

        Args:
            image: ``uint8`` ``(H, W)`` or ``(H, W, 3)``.
            path: the image's file, for log messages.

        Returns:
            The mask and its fallback reason.
        """
        pixels = check_image(image)
        file = self.path_of(pixels)
        if file.is_file():
            cached = self._read(file, pixels.shape[:2])
            if cached is not None:
                self.hits += 1
                if cached.fallback is not None:
                    self.prior.record_fallback(cached.fallback, path, "cached substitute mask")
                return cached
        result = self.prior.compute(pixels, path)
        self.misses += 1
        self._write(file, result)
        return result

    def _read(self, file: Path, shape: tuple[int, int]) -> PriorMask | None:
        """A cache file's content, or ``None`` (with a warning) when it is unreadable or inconsistent."""
        try:
            with np.load(file, allow_pickle=False) as content:
                stored_shape = tuple(int(v) for v in content["shape"])
                bits = content["bits"]
                fallback = str(content["fallback"]) or None
            if stored_shape != shape:
                msg = f"shape {stored_shape} instead of {shape}"
                raise ValueError(msg)
            mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("object prior cache file %s is unreadable (%s): recomputing it", file, error)
            return None
        return PriorMask(mask, fallback)

    def _write(self, file: Path, result: PriorMask) -> None:
        """Write one mask atomically; a failure only loses the cache entry (logged)."""
        try:
            note = self.folder / "prior.txt"
            if not note.is_file():
                atomic_write_text(note, self._fingerprint + "\n")
            mask = np.asarray(result.mask, dtype=bool)
            with atomic_write_path(file) as temporary, temporary.open("wb") as handle:
                np.savez_compressed(
                    handle,
                    bits=np.packbits(mask.ravel()),
                    shape=np.asarray(mask.shape, dtype=np.int64),
                    fallback=np.asarray(result.fallback or ""),
                )
        except OSError as error:
            logger.warning("cannot write object prior cache file %s: %s", file, error)
