"""Training anomalies for PRN: simulated unseen ones and extended seen ones.

* **Simulated** (DRAEM style): a Perlin-noise mask (anomalib's generator), thresholded and
  filled with a texture (scikit-image's CC0 ``brick``, ``grass``, ``gravel``, randomly cropped,
  turned and re-coloured), blended into the image with a random opacity.
* **Extended** (PRN's seen anomalies): a real defect cut with its mask from one of the few real
  anomalous images, flipped, turned and scaled, and pasted onto the normal image at a place inside
  the object (:class:`~anomalib_ncd.priors.ForegroundPrior`: the whole image for surfaces).
* **Real**: the real anomalous image itself with its mask.

Every sample returns the image and the exact mask of the pixels that were changed, so the
decoder learns where the paste is, not where the generator meant it to be. A generator draws
from its own seeded ``numpy`` generator (and a forked torch generator for the Perlin noise), so
a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from anomalib.data.utils.generators.perlin import generate_perlin_noise

if TYPE_CHECKING:
    from anomalib_ncd.priors import ForegroundPrior

KINDS = ("normal", "real", "extended", "simulated")


@dataclass
class RealAnomaly:
    """A real anomalous image with its defect mask (float ``(H, W, 3)`` in ``[0, 1]``, bool ``(H, W)``)."""

    image: np.ndarray
    mask: np.ndarray
    defect_type: str = ""


def default_textures() -> list[np.ndarray]:
    """scikit-image's CC0 textures as float RGB in ``[0, 1]`` (no download: they ship with it).

    Returns:
        The textures.
    """
    from skimage import data

    textures = []
    for name in ("brick", "grass", "gravel"):
        texture = getattr(data, name)().astype(np.float32) / 255.0
        textures.append(np.repeat(texture[..., None], 3, axis=2) if texture.ndim == 2 else texture[..., :3])
    return textures


class AnomalyGenerator:
    """Turns normal training images into (image, mask) pairs: normal, real, extended or simulated.

    Args:
        real: the few real anomalous images (empty: unsupervised, simulated anomalies only).
        ratio: relative frequency of ``(normal, real + extended, simulated)`` samples (PRN: 2 : 1 : 1);
            without real anomalies their share goes to simulated ones. Real samples are half real
            images and half extended pastes.
        textures: fill textures of the simulated anomalies (default: scikit-image's).
        seed: the generator's seed.
        perlin_threshold: Perlin noise above this is anomalous.
    """

    def __init__(
        self,
        real: Sequence[RealAnomaly] = (),
        ratio: Sequence[float] = (2.0, 1.0, 1.0),
        textures: Sequence[np.ndarray] | None = None,
        seed: int = 0,
        perlin_threshold: float = 0.5,
    ) -> None:
        if len(ratio) != 3 or min(ratio) < 0 or sum(ratio) <= 0:
            msg = f"ratio must be three non-negative weights (normal, real, simulated), got {ratio}"
            raise ValueError(msg)
        self.real = list(real)
        normal, seen, simulated = (float(r) for r in ratio)
        if not self.real:
            simulated, seen = simulated + seen, 0.0
        weights = np.array([normal, seen / 2, seen / 2, simulated])
        self.probabilities = weights / weights.sum()
        self.textures = list(textures) if textures is not None else default_textures()
        self.rng = np.random.default_rng(seed)
        self.perlin_threshold = perlin_threshold
        self._foreground: ForegroundPrior | None = None

    def choose(self) -> str:
        """Draw the kind of the next sample.

        Returns:
            One of :data:`KINDS`.
        """
        return KINDS[int(self.rng.choice(len(KINDS), p=self.probabilities))]

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
        """One training sample from a normal image.

        Args:
            image: ``(3, H, W)`` in ``[0, 1]``.

        Returns:
            The (possibly changed) image, its ``(1, H, W)`` mask in ``{0, 1}`` and the kind drawn.
        """
        kind = self.choose()
        pixels = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)
        if kind == "normal":
            out, mask = pixels, np.zeros(pixels.shape[:2], bool)
        elif kind == "real":
            out, mask = self.real_sample(pixels.shape[:2])
        elif kind == "extended":
            out, mask = self.extended(pixels)
        else:
            out, mask = self.simulated(pixels)
        result = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).to(image)
        return result, torch.from_numpy(mask.astype(np.float32))[None].to(image), kind

    def real_sample(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """A real anomalous image and its mask at the training size.

        Args:
            shape: ``(H, W)`` of the training images.

        Returns:
            Image and bool mask.
        """
        sample = self.real[int(self.rng.integers(len(self.real)))]
        size = (shape[1], shape[0])
        image = cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(sample.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        return image, mask

    def simulated(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A Perlin-shaped patch of texture blended into the image.

        Args:
            image: ``(H, W, 3)`` float in ``[0, 1]``.

        Returns:
            Image and the bool mask of the changed pixels.
        """
        height, width = image.shape[:2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.rng.integers(2**31)))
            noise = generate_perlin_noise(height, width).numpy()
        mask = noise > self.perlin_threshold
        texture = self._texture(height, width)
        opacity = float(self.rng.uniform(0.3, 1.0))
        blended = (1 - opacity) * image + opacity * texture
        out = np.where(mask[..., None], blended, image)
        return out.astype(np.float32), _changed(image, out)

    def extended(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A real defect, augmented, pasted inside the object of the normal image.

        Args:
            image: ``(H, W, 3)`` float in ``[0, 1]``.

        Returns:
            Image and the bool mask of the changed pixels.
        """
        height, width = image.shape[:2]
        defect, defect_mask = self._defect_patch(height, width)
        patch_h, patch_w = defect_mask.shape
        top, left = self._place(image, patch_h, patch_w)
        out = image.copy()
        window = out[top : top + patch_h, left : left + patch_w]
        window[defect_mask] = defect[defect_mask]
        return out, _changed(image, out)

    def _defect_patch(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """A real defect's bounding box (pixels and mask), flipped, turned and scaled to fit."""
        sample = self.real[int(self.rng.integers(len(self.real)))]
        image = cv2.resize(sample.image, (width, height), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(sample.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        count, labels = cv2.connectedComponents(mask, connectivity=8)
        if count <= 1:  # an empty mask: nothing to cut, a small square of the image instead
            labels = np.zeros_like(mask, dtype=np.int32)
            labels[height // 2 - 4 : height // 2 + 4, width // 2 - 4 : width // 2 + 4] = 1
            count = 2
        component = labels == int(self.rng.integers(1, count))
        rows, cols = np.nonzero(component)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        patch, patch_mask = image[box], component[box]
        turns = int(self.rng.integers(4))
        patch, patch_mask = np.rot90(patch, turns), np.rot90(patch_mask, turns)
        if self.rng.random() < 0.5:
            patch, patch_mask = patch[:, ::-1], patch_mask[:, ::-1]
        scale = float(self.rng.uniform(0.75, 1.25))
        limit = min(height / patch.shape[0], width / patch.shape[1], 1 / scale) * scale
        new_size = (max(1, int(patch.shape[1] * limit)), max(1, int(patch.shape[0] * limit)))
        patch = cv2.resize(np.ascontiguousarray(patch), new_size, interpolation=cv2.INTER_LINEAR)
        patch_mask = cv2.resize(np.ascontiguousarray(patch_mask, np.uint8), new_size, interpolation=cv2.INTER_NEAREST)
        brightness = float(self.rng.uniform(0.85, 1.15))
        return np.clip(patch * brightness, 0, 1).astype(np.float32), patch_mask.astype(bool)

    def _place(self, image: np.ndarray, patch_h: int, patch_w: int) -> tuple[int, int]:
        """Top-left corner of a paste whose centre lies on the object (random place otherwise)."""
        height, width = image.shape[:2]
        if self._foreground is None:
            from anomalib_ncd.priors import ForegroundPrior

            self._foreground = ForegroundPrior()
        on_object = self._foreground.mask((image * 255).astype(np.uint8))
        rows, cols = np.nonzero(on_object)
        pick = int(self.rng.integers(len(rows)))
        top = int(np.clip(rows[pick] - patch_h // 2, 0, height - patch_h))
        left = int(np.clip(cols[pick] - patch_w // 2, 0, width - patch_w))
        return top, left

    def _texture(self, height: int, width: int) -> np.ndarray:
        texture = self.textures[int(self.rng.integers(len(self.textures)))]
        side = int(self.rng.integers(min(texture.shape[:2]) // 4, min(texture.shape[:2]) + 1))
        top = int(self.rng.integers(texture.shape[0] - side + 1))
        left = int(self.rng.integers(texture.shape[1] - side + 1))
        crop = np.rot90(texture[top : top + side, left : left + side], int(self.rng.integers(4)))
        crop = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)
        gain = self.rng.uniform(0.6, 1.4, size=3).astype(np.float32)  # a colour the product never has
        return np.clip(crop * gain, 0, 1).astype(np.float32)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Pixels whose value changed in any channel (the exact mask of a paste)."""
    return np.any(np.abs(after - before) > 1e-6, axis=2)
