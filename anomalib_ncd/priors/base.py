"""The object prior interface: one boolean object mask per image."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class ObjectPriorError(ValueError):
    """A problem the user has to fix: a missing extra, a missing or invalid weight file or setting.

    The message names the setting or file concerned and how to fix it.
    """


@dataclass(frozen=True)
class PriorMask:
    """One image's object mask and, when the prior could not produce its own, why.

    Attributes:
        mask: ``(H, W)`` boolean object mask.
        fallback: ``None`` when the mask is the prior's own result; otherwise the reason why a
            substitute was used (e.g. ``"no_box"``: the whole image).
    """

    mask: np.ndarray
    fallback: str | None = None


class ObjectPrior(ABC):
    """Gives the object mask of an image: which pixels belong to the inspected object.

    Subclasses implement :meth:`compute` and :meth:`fingerprint`. Every substitute result (the whole
    image instead of a detection ...) is counted in :attr:`fallback_counts` by :meth:`record_fallback`.

    Attributes:
        name: short name of the prior (the settings' ``kind``).
    """

    name: str = "object_prior"
    #: fallback reasons logged as warnings (the others, the designed degradations, at info level)
    warn_reasons: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._fallbacks: Counter[str] = Counter()

    @property
    def fallback_counts(self) -> dict[str, int]:
        """How many images got a substitute mask, by reason (a copy)."""
        return dict(self._fallbacks)

    def mask(self, image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
        """The ``(H, W)`` boolean object mask of one image.

        Args:
            image: ``uint8`` ``(H, W)`` grey or ``(H, W, 3)`` RGB pixels.
            path: the image's file, used in log messages only.

        Returns:
            ``True`` on the object.
        """
        return self.compute(image, path).mask

    @abstractmethod
    def compute(self, image: np.ndarray, path: str | Path | None = None) -> PriorMask:
        """The object mask of one image with the reason for a substitute, if one was used.

        Args:
            image: ``uint8`` ``(H, W)`` grey or ``(H, W, 3)`` RGB pixels.
            path: the image's file, used in log messages only.

        Returns:
            The mask and the fallback reason (``None`` for the prior's own result).
        """

    @abstractmethod
    def fingerprint(self) -> str:
        """Identify the prior and every setting that changes its masks (part of the cache key).

        Returns:
            A short text, stable across runs and machines.
        """

    def record_fallback(self, reason: str, path: str | Path | None = None, detail: str = "") -> None:
        """Count one substitute mask and log it (a warning for :attr:`warn_reasons`).

        Args:
            reason: short reason code, e.g. ``"no_box"``.
            path: the image concerned, if known.
            detail: what was used instead, for the log message.
        """
        self._fallbacks[reason] += 1
        where = f" for {path}" if path is not None else ""
        level = logging.WARNING if reason in self.warn_reasons else logging.INFO
        logger.log(
            level,
            "%s object prior: %s%s; %s (%d image(s) so far)",
            self.name,
            reason,
            where,
            detail or "using the whole image",
            self._fallbacks[reason],
        )


def check_image(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is a ``uint8`` grey or RGB image and return it as ``(H, W)`` or ``(H, W, 3)``.

    ``(H, W, 1)`` is squeezed to grey and an alpha channel ``(H, W, 4)`` is dropped.

    Args:
        image: the pixels.

    Returns:
        The pixels, ``uint8`` with 2 dimensions or 3 with 3 channels.

    Raises:
        ValueError: for another dtype or shape, or an empty image.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        msg = f"object priors take uint8 images, got dtype {array.dtype}"
        raise ValueError(msg)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        msg = f"object priors take (H, W) grey or (H, W, 3) RGB images, got shape {array.shape}"
        raise ValueError(msg)
    if array.shape[0] == 0 or array.shape[1] == 0:
        msg = f"object priors take non-empty images, got shape {array.shape}"
        raise ValueError(msg)
    return array


def as_rgb(image: np.ndarray) -> np.ndarray:
    """The image as contiguous ``(H, W, 3)`` ``uint8`` RGB (grey replicated to three channels).

    Args:
        image: ``uint8`` ``(H, W)`` or ``(H, W, 3)``.

    Returns:
        The RGB pixels.
    """
    array = check_image(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def whole_mask(image: np.ndarray) -> np.ndarray:
    """An all-``True`` mask of the image's size.

    Args:
        image: the pixels (only the first two dimensions are used).

    Returns:
        ``(H, W)`` ``True``.
    """
    return np.ones(np.asarray(image).shape[:2], dtype=bool)


class WholeImagePrior(ObjectPrior):
    """Every pixel is on the object: guidance then treats the whole image as the object."""

    name = "whole_image"

    def compute(self, image: np.ndarray, path: str | Path | None = None) -> PriorMask:
        """All ``True``.

        Args:
            image: ``uint8`` ``(H, W)`` or ``(H, W, 3)``.
            path: unused.

        Returns:
            The whole image, no fallback.
        """
        return PriorMask(whole_mask(check_image(image)))

    def fingerprint(self) -> str:
        """``whole_image``.

        Returns:
            The prior's name (it has no settings).
        """
        return "whole_image:v1"
