"""Letterboxing: a square detector input that keeps the image's aspect ratio, and its inverse for maps.

Detectors batch square images, and squashing an image into a square stretches its defects: a thin
scratch along the long side of a 3:1 strip becomes three times thinner for the detector. A
letterbox scales the image so its long side is the input size, keeps its aspect ratio and pads the
rest (bottom and right, with zeros), so every defect keeps its shape. The detector's map of a
letterboxed image is cropped back to the image's content (:func:`unletterbox_map`) before anything
else reads it, so the maps the region stage sees have the image's own aspect ratio, as always.

The working resolution is chosen from the images (:func:`choose_input_size`): the median long side
of the detector's training images, rounded up to a multiple of 32 (the detector's coarsest stride),
at most what keeps the detector's memory bank within a budget, and kept in ``[256, 512]``. The
budget: Patchcore stores one feature per stride-8 patch of every training image and its greedy
coreset costs time in proportion to that count squared over a hundred, so the side is capped at
``8 * sqrt(PATCH_BUDGET / n_images)`` (``PATCH_BUDGET = 2**20`` patches: about 0.5 GB of features
and a few minutes of coreset selection on 2 CPU cores). Few images get their full resolution (10
images of 1024 px: 512); many share the budget (762 MTD strips: 288). Below 256 the features lose
their context; above 512 a single image's map no longer fits the batch sizes of a small GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F  # noqa: N812

MIN_INPUT_SIZE = 256
MAX_INPUT_SIZE = 512
SIZE_MULTIPLE = 32
PATCH_BUDGET = 2**20  # stride-8 patches of all training images together (the detector's memory bank)
PATCH_STRIDE = 8


def content_shape(image_shape: tuple[int, int], size: int) -> tuple[int, int]:
    """The ``(height, width)`` an image takes inside a ``size`` x ``size`` letterbox.

    Args:
        image_shape: ``(height, width)`` of the image.
        size: the square's side.

    Returns:
        The scaled shape, each side at least 1 and at most ``size``.

    Example:
        >>> content_shape((100, 300), 256)
        (85, 256)
    """
    height, width = image_shape
    scale = size / max(height, width)
    return min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale)))


def choose_input_size(image_shapes: Sequence[tuple[int, int]]) -> int:
    """The detector's input side for a set of images (see the module docstring for the rule).

    Args:
        image_shapes: ``(height, width)`` of the detector's training images.

    Returns:
        The side: the median long side rounded up to a multiple of 32, at most the memory-bank
        budget's side, clamped to ``[256, 512]``.

    Example:
        >>> choose_input_size([(768, 1024)] * 3), choose_input_size([(120, 290), (260, 370)])
        (512, 352)
        >>> choose_input_size([(260, 370)] * 762)  # many images share the budget
        288
    """
    if not image_shapes:
        return MIN_INPUT_SIZE
    median = float(np.median([max(shape) for shape in image_shapes]))
    rounded = SIZE_MULTIPLE * math.ceil(median / SIZE_MULTIPLE)
    budget_side = PATCH_STRIDE * math.sqrt(PATCH_BUDGET / len(image_shapes))
    affordable = SIZE_MULTIPLE * math.floor(budget_side / SIZE_MULTIPLE)
    return int(min(MAX_INPUT_SIZE, max(MIN_INPUT_SIZE, min(rounded, affordable))))


class Letterbox(v2.Transform):
    """Scale to a long side of ``size`` keeping the aspect ratio, then pad to ``size`` x ``size``.

    Images are resized with antialiasing, masks with nearest neighbours (torchvision's dispatch on
    ``tv_tensors``); the padding is zero (bottom and right), so the content starts at ``(0, 0)``.

    Args:
        size: the square's side.

    Example:
        >>> from torchvision import tv_tensors
        >>> out = Letterbox(64)(tv_tensors.Image(torch.ones(3, 20, 40)))
        >>> tuple(out.shape), float(out[:, :32].mean()), float(out[:, 32:].sum())
        ((3, 64, 64), 1.0, 0.0)
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            msg = f"letterbox size must be >= 1, got {size}"
            raise ValueError(msg)
        self.size = int(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Letterbox one image or mask.

        Args:
            inpt: an image or mask tensor ``(..., H, W)``.
            params: unused.

        Returns:
            The letterboxed tensor.
        """
        if not isinstance(inpt, torch.Tensor) or inpt.ndim < 2:
            return inpt
        height, width = F.get_size(inpt)
        content = content_shape((height, width), self.size)
        resized = F.resize(inpt, list(content), antialias=True)
        return F.pad(resized, [0, 0, self.size - content[1], self.size - content[0]], fill=0)

    def extra_repr(self) -> str:
        """The size, in the module's repr."""
        return f"size={self.size}"


def unletterbox_map(anomaly_map: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """The part of a letterboxed input's map that covers the image (the padding cut away).

    Args:
        anomaly_map: ``(S, S)`` map of the letterboxed input (at the input's size or any square size).
        image_shape: ``(height, width)`` of the original image.

    Returns:
        The map of the image's content, with the image's aspect ratio (float32).

    Raises:
        ValueError: when the map is not square.
    """
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.ndim != 2 or anomaly_map.shape[0] != anomaly_map.shape[1]:
        msg = f"a letterboxed input's map must be square, got {anomaly_map.shape}"
        raise ValueError(msg)
    height, width = content_shape(image_shape, anomaly_map.shape[0])
    return np.ascontiguousarray(anomaly_map[:height, :width])


__all__ = [
    "Letterbox",
    "choose_input_size",
    "content_shape",
    "unletterbox_map",
]
