"""Augmented views of a region: the crop and its anomaly mask, transformed together.

A view is the input of the discovery network: an ImageNet-normalised ``(3, S, S)`` image and the
``(S, S)`` mask that guides attention. Geometric transforms (random resized crop, flips, 90-degree
rotations) move the mask with the pixels; photometric ones (colour jitter, blur, sharpness,
posterize) touch only the pixels. These are AnomalyNCD's augmentations. Every view is a function
of ``(seed, region number, view number)`` only, so a pool of views can be computed once, cached,
and recomputed identically after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewSettings:
    """How regions become network inputs.

    Attributes:
        size: side of a view in pixels (the backbone's input size).
        resize: side the crop is resized to before the random ``size`` crop (AnomalyNCD: 256 -> 224).
        n_views: augmented views computed per region; training draws two of them per step.
        flips: random horizontal and vertical flips.
        rotations: random multiples of 90 degrees (defects have no canonical orientation).
        colour_jitter: strength of brightness/contrast/saturation jitter (hue gets a quarter).
        blur_probability: probability of a Gaussian blur.
        photometric: apply sharpness and posterize changes too.
    """

    size: int = 224
    resize: int = 256
    n_views: int = 6
    flips: bool = True
    rotations: bool = True
    colour_jitter: float = 0.4
    blur_probability: float = 0.2
    photometric: bool = True

    def __post_init__(self) -> None:
        if self.size < 16 or self.resize < self.size:
            msg = f"views need size >= 16 and resize >= size, got size={self.size}, resize={self.resize}"
            raise ValueError(msg)
        if self.n_views < 2:
            msg = f"n_views must be >= 2 (training contrasts two views of a region), got {self.n_views}"
            raise ValueError(msg)


class _RandomRot90(torch.nn.Module):
    """Rotate image and mask together by a random multiple of 90 degrees."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        turns = int(torch.randint(0, 4, (1,)).item())
        return tuple(tv_tensors.wrap(torch.rot90(item, turns, dims=(-2, -1)), like=item) for item in inputs)


def _train_transform(settings: ViewSettings) -> v2.Compose:
    steps: list[torch.nn.Module] = [
        v2.Resize((settings.resize, settings.resize), antialias=True),
        v2.RandomCrop(settings.size),
    ]
    if settings.flips:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if settings.rotations:
        steps.append(_RandomRot90())
    if settings.colour_jitter > 0:
        strength = settings.colour_jitter
        steps.append(v2.RandomApply([v2.ColorJitter(strength, strength, strength, strength / 4)], p=0.8))
    if settings.blur_probability > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(9, sigma=(0.1, 2.0))], p=settings.blur_probability))
    if settings.photometric:
        steps += [v2.RandomAdjustSharpness(2.0, p=0.2), v2.RandomPosterize(5, p=0.2)]
    return v2.Compose(steps)


def _to_tensors(crop: np.ndarray, mask: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    if crop.ndim == 2:  # grey images become three identical channels, as ImageNet backbones expect
        crop = np.repeat(crop[..., None], 3, axis=2)
    image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1))
    # float masks: binary ones stay 0/1, graded anomaly-map guides keep their values; a (k, h, w)
    # stack (anomaly guide and object prior) is transformed as k channels of one mask
    masks = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
    return image, tv_tensors.Mask(masks[None] if masks.ndim == 2 else masks)


def _normalise(image: torch.Tensor) -> torch.Tensor:
    return tvf.normalize(image.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)


class ViewMaker:
    """Turns a region's crop and mask into the evaluation view and deterministic augmented views.

    Args:
        settings: view settings.
        seed: base seed; view ``v`` of region ``r`` depends only on ``(seed, r, v)``.

    Example:
        >>> import numpy as np
        >>> maker = ViewMaker(ViewSettings(size=32, resize=40, n_views=2))
        >>> image, mask = maker.augmented(np.zeros((50, 50, 3), np.uint8), np.ones((50, 50), bool), 0, 0)
        >>> tuple(image.shape), tuple(mask.shape)
        ((3, 32, 32), (32, 32))
    """

    def __init__(self, settings: ViewSettings | None = None, seed: int = 0) -> None:
        self.settings = settings or ViewSettings()
        self.seed = seed
        self._transform = _train_transform(self.settings)

    def plain(self, crop: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation view: the whole crop resized to the view size.

        Args:
            crop: ``(h, w, 3)`` or ``(h, w)`` uint8 pixels.
            mask: ``(h, w)`` bool mask or float guide in ``[0, 1]``, or a ``(k, h, w)`` stack of them.

        Returns:
            ``(3, S, S)`` normalised float image and ``(S, S)`` (or ``(k, S, S)``) float mask in ``[0, 1]``.
        """
        image, mask_tensor = _to_tensors(crop, mask)
        size = [self.settings.size, self.settings.size]
        image = tvf.resize(image, size, antialias=True)
        # area interpolation keeps thin defects visible as fractional mask values
        mask_float = torch.nn.functional.interpolate(mask_tensor[None].float(), size=size, mode="area")[0]
        return _normalise(image), mask_float[0] if np.ndim(mask) == 2 else mask_float

    def augmented(
        self,
        crop: np.ndarray,
        mask: np.ndarray,
        region_number: int,
        view_number: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented view, reproducible from its numbers.

        Args:
            crop: ``(h, w, 3)`` or ``(h, w)`` uint8 pixels.
            mask: ``(h, w)`` bool mask or float guide in ``[0, 1]``, or a ``(k, h, w)`` stack of them
                (all transformed alike).
            region_number: the region's position in its set.
            view_number: which view of the region.

        Returns:
            ``(3, S, S)`` normalised float image and ``(S, S)`` (or ``(k, S, S)``) float mask in ``[0, 1]``.
        """
        image, mask_tensor = _to_tensors(crop, mask)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_view_seed(self.seed, region_number, view_number))
            image, mask_tensor = self._transform(image, mask_tensor)
        return _normalise(image), mask_tensor[0].float() if np.ndim(mask) == 2 else mask_tensor.float()


def _view_seed(seed: int, region_number: int, view_number: int) -> int:
    return (seed * 1_000_003 + region_number * 1_009 + view_number) % (2**63 - 1)
