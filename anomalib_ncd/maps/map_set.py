"""The anomaly-map set: every later stage takes one of these.

A set holds one float anomaly map per image, the image paths, and, when known, the defect types
and ground-truth masks. Maps keep the resolution their detector produced (often a square of the
model's input size); :meth:`AnomalyMapSet.aligned` brings each map back to its image's aspect
ratio at a working resolution, which is what MEBin and the crops use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import read_image_size
from anomalib_ncd.data.samples import validate_sample_table


class MapError(ValueError):
    """Raised when an anomaly map is unusable; the message names the map's image or file."""


def check_map(anomaly_map: np.ndarray, name: str) -> np.ndarray:
    """Validate one anomaly map and return it as a float32 2-D array.

    A ``(1, H, W)`` or ``(H, W, 1)`` map is squeezed; anything else that is not 2-D is an error, as
    are empty maps and NaN or infinite values.

    Args:
        anomaly_map: the map.
        name: what to call the map in error messages (its image or file).

    Returns:
        The map as a C-contiguous float32 ``(H, W)`` array.

    Raises:
        MapError: on a wrong shape, a non-numeric dtype, or non-finite values.
    """
    array = np.asarray(anomaly_map)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim != 2:
        msg = f"anomaly map of {name} has shape {array.shape}; expected (H, W)"
        raise MapError(msg)
    if array.size == 0:
        msg = f"anomaly map of {name} is empty"
        raise MapError(msg)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        msg = f"anomaly map of {name} has non-numeric dtype {array.dtype}"
        raise MapError(msg)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        msg = f"anomaly map of {name} has {bad} NaN or infinite values"
        raise MapError(msg)
    return array


ASPECT_TOLERANCE_PX = 1.0
"""How far (in map pixels, on each side) a map may be off its image's aspect ratio: a resize's rounding."""


def check_aspect(map_shape: tuple[int, int], image_shape: tuple[int, int], name: str) -> None:
    """Check that a map can be a resize of its image: square, or of the image's aspect ratio.

    A detector squashes each image to its (square) input size, so square maps are accepted for any
    image. Any other map must have the image's aspect ratio up to the rounding of a resize: there
    must be one scale ``s`` with ``|h - s * H| <= 1`` and ``|w - s * W| <= 1`` (map ``h x w``,
    image ``H x W``; :data:`ASPECT_TOLERANCE_PX`).

    Args:
        map_shape: ``(h, w)`` of the map.
        image_shape: ``(H, W)`` of the image.
        name: what to call the map in error messages (its image or file).

    Raises:
        MapError: when the map is neither square nor of the image's aspect ratio.

    Example:
        >>> check_aspect((64, 88), (128, 176), "a.png")  # half size
        >>> check_aspect((256, 256), (128, 176), "a.png")  # a detector's square input
        >>> check_aspect((20, 300), (128, 176), "a.png")
        Traceback (most recent call last):
        ...
        anomalib_ncd.maps.map_set.MapError: anomaly map of a.png is 20 x 300 but its image is 128 x 176: ...
    """
    (height, width), (image_height, image_width) = map_shape, image_shape
    if height == width or min(image_height, image_width) <= 0:
        return
    tolerance = ASPECT_TOLERANCE_PX
    low = max((height - tolerance) / image_height, (width - tolerance) / image_width)
    high = min((height + tolerance) / image_height, (width + tolerance) / image_width)
    if low > high + 1e-9:  # the two windows of scales are disjoint (1e-9: float rounding at a shared end)
        msg = (
            f"anomaly map of {name} is {height} x {width} but its image is {image_height} x {image_width}: "
            "a map must be square (the detector's input) or have its image's aspect ratio "
            f"(within {tolerance:g} px); is it the map of another image?"
        )
        raise MapError(msg)


def working_shape(image_shape: tuple[int, int], long_side: int) -> tuple[int, int]:
    """Shape with the image's aspect ratio whose long side is ``long_side`` (never upsampled).

    Args:
        image_shape: ``(height, width)`` of the image.
        long_side: the wanted long side in pixels.

    Returns:
        ``(height, width)``, each at least 1.
    """
    height, width = image_shape
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


MAX_AUTO_LONG_SIDE = 1024  # bounds MEBin's time and memory per map (about 4 MB of labels at 1024 px)


def resolve_long_side(long_side: int | str, anomaly_map: np.ndarray) -> int:
    """The working long side of one map: the number given, or the map's own with ``"auto"``.

    Args:
        long_side: a long side in pixels, or ``"auto"``.
        anomaly_map: the map (its shape is the detector's output resolution).

    Returns:
        The long side in pixels.

    Raises:
        ValueError: for any other string or a side below 1.
    """
    if long_side == "auto":
        return min(max(anomaly_map.shape[-2:]), MAX_AUTO_LONG_SIDE)
    if isinstance(long_side, str) or int(long_side) < 1:
        msg = f"working_long_side must be a positive number of pixels, null or 'auto', got {long_side!r}"
        raise ValueError(msg)
    return int(long_side)


@dataclass
class AnomalyMapSet:
    """Anomaly maps of a set of images, with what is known about the images.

    Attributes:
        maps: one float32 ``(h, w)`` map per image, at any resolution.
        image_paths: the images, in the same order.
        image_shapes: ``(height, width)`` of each image; read from the files when not given.
        defect_types: each image's defect type when known (evaluation only), else ``None``.
        is_normal: whether each image is defect-free, when known.
        mask_paths: ground-truth mask files when known (``None`` entries allowed).
        scores: image-level anomaly scores from the detector, when known.

    Example:
        >>> import numpy as np
        >>> maps = AnomalyMapSet.from_arrays([np.zeros((4, 6))], ["a.png"], image_shapes=[(8, 12)])
        >>> maps.aligned(long_side=6)[0].shape
        (4, 6)
    """

    maps: list[np.ndarray]
    image_paths: list[str]
    image_shapes: list[tuple[int, int]] = field(default_factory=list)
    defect_types: list[str] | None = None
    is_normal: list[bool] | None = None
    mask_paths: list[str | None] | None = None
    scores: list[float] | None = None

    def __post_init__(self) -> None:
        if len(self.maps) != len(self.image_paths):
            msg = f"{len(self.maps)} anomaly maps but {len(self.image_paths)} image paths"
            raise MapError(msg)
        if not self.maps:
            msg = "the anomaly-map set is empty"
            raise MapError(msg)
        self.image_paths = [str(path) for path in self.image_paths]
        self.maps = [check_map(m, path) for m, path in zip(self.maps, self.image_paths, strict=True)]
        if not self.image_shapes:
            self.image_shapes = [read_image_size(path) for path in self.image_paths]
        self.image_shapes = [(int(h), int(w)) for h, w in self.image_shapes]
        for name in ("image_shapes", "defect_types", "is_normal", "mask_paths", "scores"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.maps):
                msg = f"{name} has {len(values)} entries for {len(self.maps)} maps"
                raise MapError(msg)
        for anomaly_map, shape, path in zip(self.maps, self.image_shapes, self.image_paths, strict=True):
            check_aspect(anomaly_map.shape, shape, path)

    @classmethod
    def from_arrays(
        cls,
        maps: np.ndarray | Sequence[np.ndarray],
        image_paths: Sequence[str | Path],
        *,
        image_shapes: Sequence[tuple[int, int]] | None = None,
        samples: pd.DataFrame | None = None,
    ) -> AnomalyMapSet:
        """Build a set from maps in memory.

        Args:
            maps: a ``(N, H, W)`` array or a sequence of 2-D arrays.
            image_paths: the image of each map.
            image_shapes: ``(height, width)`` of each image; read from the files when omitted.
            samples: a sample table to take defect types and masks from (joined on ``image_path``).

        Returns:
            The map set.
        """
        map_list = list(maps) if not isinstance(maps, np.ndarray) or maps.ndim != 2 else [maps]
        result = cls(
            maps=map_list,
            image_paths=[str(path) for path in image_paths],
            image_shapes=list(image_shapes) if image_shapes is not None else [],
        )
        return result.with_samples(samples) if samples is not None else result

    def __len__(self) -> int:
        return len(self.maps)

    def with_samples(self, samples: pd.DataFrame) -> AnomalyMapSet:
        """Return a copy that takes defect types, normal flags and mask paths from a sample table.

        Paths are matched after resolving them, so relative and absolute spellings agree.

        Args:
            samples: a sample table (see :mod:`anomalib_ncd.data.samples`).

        Returns:
            The map set with ``defect_types``, ``is_normal`` and ``mask_paths`` filled in.

        Raises:
            MapError: when an image of the set is not in the table.
        """
        validate_sample_table(samples)
        rows = {
            str(Path(path).resolve()): row
            for path, row in zip(samples["image_path"], samples.itertuples(), strict=True)
        }
        types, normal, masks = [], [], []
        for path in self.image_paths:
            row = rows.get(str(Path(path).resolve()))
            if row is None:
                msg = f"image {path} of the anomaly-map set is not in the sample table"
                raise MapError(msg)
            types.append(str(row.defect_type))
            normal.append(bool(row.is_normal))
            masks.append(row.mask_path if isinstance(row.mask_path, str) else None)
        return AnomalyMapSet(
            maps=self.maps,
            image_paths=self.image_paths,
            image_shapes=self.image_shapes,
            defect_types=types,
            is_normal=normal,
            mask_paths=masks,
            scores=self.scores,
        )

    def subset(self, indices: Sequence[int]) -> AnomalyMapSet:
        """Return the set restricted to ``indices`` (in that order).

        Args:
            indices: positions to keep.

        Returns:
            A new set sharing the map arrays.
        """

        def pick(values: list | None) -> list | None:
            return None if values is None else [values[i] for i in indices]

        return AnomalyMapSet(
            maps=[self.maps[i] for i in indices],
            image_paths=[self.image_paths[i] for i in indices],
            image_shapes=[self.image_shapes[i] for i in indices],
            defect_types=pick(self.defect_types),
            is_normal=pick(self.is_normal),
            mask_paths=pick(self.mask_paths),
            scores=pick(self.scores),
        )

    def aligned(self, long_side: int | str | None = 256) -> list[np.ndarray]:
        """Maps resized to their image's aspect ratio, long side ``long_side`` (bilinear).

        Detectors usually squash every image to a square; this undoes the squash consistently for
        every map. ``None`` gives maps at full image resolution; ``"auto"`` keeps each map's own
        resolution (its long side, at most :data:`MAX_AUTO_LONG_SIDE`): the detail the detector
        really produced, neither invented by upsampling nor thrown away by shrinking.

        Args:
            long_side: long side of the working resolution (never above the image's own), ``None``
                or ``"auto"``.

        Returns:
            One float32 map per image.
        """
        aligned = []
        for anomaly_map, shape in zip(self.maps, self.image_shapes, strict=True):
            target = shape if long_side is None else working_shape(shape, resolve_long_side(long_side, anomaly_map))
            resized = anomaly_map
            if anomaly_map.shape != target:
                # INTER_AREA averages when shrinking (no aliasing of thin defects), linear otherwise
                shrink = math.prod(target) < anomaly_map.size
                interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                resized = cv2.resize(anomaly_map, (target[1], target[0]), interpolation=interpolation)
            aligned.append(resized)
        return aligned
