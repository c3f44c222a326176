"""The region stage: anomaly-map set -> MEBin -> anomaly-centred regions with crops and masks.

Maps are first brought to their image's aspect ratio at a working resolution
(:meth:`~anomalib_ncd.maps.map_set.AnomalyMapSet.aligned`, long side 256 by default: the scale the
reference's 6x6 erosion was designed for, whatever the camera's resolution). MEBin's search range
is fitted on the whole set, each mask is resized (nearest) to its image, and
:func:`~anomalib_ncd.regions.crops.crop_boxes` turns it into square regions. Full-resolution masks
live only while their image is cropped, so memory stays flat for thousands of large images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import read_image, read_image_size
from anomalib_ncd.data.masks import read_row_mask, require_annotations
from anomalib_ncd.io import atomic_write_path, atomic_write_text
from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.progress import progress_bar
from anomalib_ncd.regions.crops import Box, CropSettings, Region, crop_boxes
from anomalib_ncd.regions.mebin import MEBin, MEBinResult
from anomalib_ncd.regions.soft import NOTHING_FOUND, PeakCalibration, peak_blob

if TYPE_CHECKING:
    from anomalib_ncd.priors import ObjectPrior


class NothingToDiscoverError(ValueError):
    """The set gives the discovery model nothing to learn from (no anomaly, too few regions)."""


@dataclass
class RegionSet:
    """Regions of every image of a map set, with the binarisation they came from.

    Attributes:
        regions: all regions, grouped by image in image order (largest region first).
        map_set: the anomaly maps the regions were extracted from.
        binarization: MEBin's result per image (masks at the working resolution).
        mebin: the fitted MEBin (its range applies to new maps of the same detector); ``None`` for
            ground-truth regions.
        calibration: the detector's peak calibration fitted on the set (the soft path's normal
            decision, :class:`~anomalib_ncd.regions.soft.PeakCalibration`); ``None`` without soft path.
    """

    regions: list[Region]
    map_set: AnomalyMapSet
    binarization: list[MEBinResult]
    mebin: MEBin | None
    calibration: PeakCalibration | None = None

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def of_image(self, image_index: int) -> list[Region]:
        """Regions of one image.

        Args:
            image_index: position of the image in :attr:`map_set`.

        Returns:
            Its regions, largest first.
        """
        return [region for region in self.regions if region.image_index == image_index]

    def table(self) -> pd.DataFrame:
        """One row per region: image, box, area, score, whole-image flag and known defect type.

        Returns:
            The region table.
        """
        rows = []
        for number, region in enumerate(self.regions):
            rows.append(
                {
                    "region": number,
                    "image_index": region.image_index,
                    "image_path": self.map_set.image_paths[region.image_index],
                    "x0": region.box[0],
                    "y0": region.box[1],
                    "x1": region.box[2],
                    "y1": region.box[3],
                    "area": region.area,
                    "score": region.score,
                    "whole_image": region.whole_image,
                    "defect_type": (
                        self.map_set.defect_types[region.image_index] if self.map_set.defect_types else None
                    ),
                },
            )
        return pd.DataFrame(rows)

    def save(self, folder: str | Path) -> Path:
        """Write each region's crop and mask as PNG, and ``regions.csv``, for inspection.

        Args:
            folder: output folder (created).

        Returns:
            The path of ``regions.csv``.
        """
        root = Path(folder)
        table = self.table()
        crop_files, mask_files = [], []
        for number, region in enumerate(self.regions):
            stem = f"{number:06d}_{Path(self.map_set.image_paths[region.image_index]).stem}"
            crop = region.crop if region.crop is not None else self._read_crop(region)
            crop_file, mask_file = Path("crops") / f"{stem}.png", Path("masks") / f"{stem}.png"
            write_png(root / crop_file, crop)
            mask = region.mask if region.mask is not None else np.zeros(crop.shape[:2], bool)
            write_png(root / mask_file, mask.astype(np.uint8) * 255)
            crop_files.append(crop_file.as_posix())
            mask_files.append(mask_file.as_posix())
        table["crop_file"], table["mask_file"] = crop_files, mask_files
        csv_path = root / "regions.csv"
        atomic_write_text(csv_path, table.to_csv(index=False))
        return csv_path

    def _read_crop(self, region: Region) -> np.ndarray:
        x0, y0, x1, y1 = region.box
        return read_image(self.map_set.image_paths[region.image_index])[y0:y1, x0:x1]


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB or grey ``uint8`` image as PNG, atomically.

    Args:
        path: the file.
        image: the pixels.

    Raises:
        ValueError: when OpenCV cannot encode the image.
    """
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        msg = f"cannot encode {path}"
        raise ValueError(msg)
    with atomic_write_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _normalised(anomaly_map: np.ndarray, min_th: float, max_th: float) -> np.ndarray:
    """The map on MEBin's scale as a fraction: 0 below ``min_th``, 1 at ``max_th``."""
    span = max(max_th - min_th, float(np.finfo(np.float32).tiny))
    return np.where(anomaly_map < min_th, 0.0, np.clip((anomaly_map - min_th) / span, 0.0, 1.0))


def _box_on_map(box: Box, image_shape: tuple[int, int], map_shape: tuple[int, int]) -> Box:
    """The map pixels that cover an image box (at least one)."""
    scale_y, scale_x = map_shape[0] / image_shape[0], map_shape[1] / image_shape[1]
    x0, y0 = math.floor(box[0] * scale_x), math.floor(box[1] * scale_y)
    x1, y1 = math.ceil(box[2] * scale_x), math.ceil(box[3] * scale_y)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def extract_regions(
    map_set: AnomalyMapSet,
    mebin: MEBin | None = None,
    crop_settings: CropSettings | None = None,
    working_long_side: int | str | None = "auto",
    load_crops: bool = True,
    progress: Callable[[int], None] | None = None,
    object_prior: ObjectPrior | None = None,
    min_inside: float | None = None,
    nothing_found: str = "soft",
) -> RegionSet:
    """Binarise every map with MEBin and cut anomaly-centred regions.

    Args:
        map_set: the anomaly maps (and images) of the set.
        mebin: a MEBin to use; fitted on this set when it has no range yet (the reference
            semantics: the range is a property of the whole set, not of a batch).
        crop_settings: crop parameters (AnomalyNCD's by default).
        working_long_side: long side at which maps are binarised (``None``: full image size;
            ``"auto"``: each map's own resolution, see
            :meth:`~anomalib_ncd.maps.map_set.AnomalyMapSet.aligned`).
        load_crops: read the images and keep each region's pixels and mask in memory.
        progress: called with 1 after each image (default: a progress bar).
        object_prior: gives each image's object mask; its crop is attached to every region
            (:attr:`~anomalib_ncd.regions.crops.Region.object_mask`) for the region guidance factor.
        min_inside: drop a region when less than this fraction of its anomalous pixels lies on the
            object (``None``: keep every region; needs ``object_prior``). An image whose regions are
            all dropped gets the whole-image region, like an image where nothing was found.
        nothing_found: what an image without a MEBin region gets: ``soft`` (a region centred on
            its map's strongest evidence, :mod:`~anomalib_ncd.regions.soft`) or ``normal`` (the
            whole image with an empty mask, the papers' behaviour).

    Returns:
        The regions, in image order.
    """
    check_nothing_found(nothing_found)
    if min_inside is not None and object_prior is None:
        msg = "min_inside (dropping regions outside the object) needs an object prior"
        raise ValueError(msg)
    crop_settings = crop_settings or CropSettings()
    mebin = mebin if mebin is not None else MEBin()
    aligned = map_set.aligned(working_long_side)
    if not mebin.is_fitted:
        mebin.fit(aligned)
    results = mebin.transform(aligned)
    calibration = None
    if nothing_found == "soft":
        calibration = PeakCalibration.fit(np.array([image_peak(anomaly_map) for anomaly_map in aligned]))
    regions: list[Region] = []
    with progress_bar("MEBin + regions", len(aligned), progress) as advance:
        for index, (result, anomaly_map, shape) in enumerate(zip(results, aligned, map_set.image_shapes, strict=True)):
            image = read_set_image(map_set, index) if load_crops or object_prior is not None else None
            on_object = None
            if object_prior is not None and image is not None:  # the image is read whenever there is a prior
                on_object = object_prior.mask(image, map_set.image_paths[index])
            regions += _binarised_regions(
                result,
                anomaly_map,
                shape,
                mebin,
                crop_settings,
                index,
                image if load_crops else None,
                on_object,
                min_inside,
                nothing_found,
                calibration,
            )
            advance(1)
    return RegionSet(regions=regions, map_set=map_set, binarization=results, mebin=mebin, calibration=calibration)


def image_peak(anomaly_map: np.ndarray) -> float:
    """An image's peak anomaly score: the maximum of its finite map values (NaN when there is none).

    Args:
        anomaly_map: the map.

    Returns:
        The peak.
    """
    finite = np.asarray(anomaly_map)[np.isfinite(anomaly_map)]
    return float(finite.max()) if finite.size else float("nan")


def check_nothing_found(nothing_found: str) -> None:
    """Refuse an unknown ``nothing_found`` setting.

    Args:
        nothing_found: the setting.

    Raises:
        ValueError: when it is not one of :data:`~anomalib_ncd.regions.soft.NOTHING_FOUND`.
    """
    if nothing_found not in NOTHING_FOUND:
        msg = f"nothing_found must be one of {NOTHING_FOUND}, got {nothing_found!r}"
        raise ValueError(msg)


def read_set_image(map_set: AnomalyMapSet, index: int) -> np.ndarray:
    """The pixels of one image of a map set, checked against the size the set records.

    Args:
        map_set: the set.
        index: the image's position.

    Returns:
        Its ``uint8`` pixels.

    Raises:
        ValueError: when the file's size is not the one the set records (maps of other images).
    """
    path, shape = map_set.image_paths[index], map_set.image_shapes[index]
    image = read_image(path)
    if image.shape[:2] != shape:
        msg = f"image {path} is {image.shape[:2]}, but its map set says {shape}"
        raise ValueError(msg)
    return image


class SetImages(Sequence[np.ndarray]):
    """The images of a map set, each read from its file when asked for: never all in memory.

    Classifying a folder of 10,000 high-resolution images holds one image at a time (regions keep
    copies of their crops only), where a list of every image's pixels would hold them all.

    Args:
        map_set: the set whose images to read (:func:`read_set_image`: checked against its sizes).
    """

    def __init__(self, map_set: AnomalyMapSet) -> None:
        self.map_set = map_set

    def __len__(self) -> int:
        return len(self.map_set)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [read_set_image(self.map_set, i) for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            msg = f"image {index} of a set of {len(self)}"
            raise IndexError(msg)
        return read_set_image(self.map_set, index % len(self))


def _binarised_regions(
    result: MEBinResult,
    anomaly_map: np.ndarray,
    shape: tuple[int, int],
    mebin: MEBin,
    crop_settings: CropSettings,
    image_index: int,
    image: np.ndarray | None,
    object_mask: np.ndarray | None = None,
    min_inside: float | None = None,
    nothing_found: str = "soft",
    calibration: PeakCalibration | None = None,
) -> list[Region]:
    """Regions of one image from its MEBin result (mask at working size) and its aligned map."""
    full_mask = _to_image(result.mask, shape)
    boxes = crop_boxes(full_mask, result.anomaly_count, crop_settings)
    normalised = _normalised(anomaly_map, *mebin.fitted_range())
    source = "region"
    if not boxes and nothing_found == "soft":
        full_mask = _to_image(peak_blob(anomaly_map), shape)
        boxes, source = crop_boxes(full_mask, 1, crop_settings), "soft"
    regions = cut_regions(image_index, shape, full_mask, boxes, normalised, image, object_mask, min_inside, source)
    if source == "soft" and calibration is not None:
        probability = float(calibration.anomalous_probability(image_peak(anomaly_map)))
        for region in regions:
            region.anomalous_probability = probability
    return regions


def _to_image(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A working-resolution binary mask resized (nearest) to its image."""
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _check_object_mask(object_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    object_mask = np.asarray(object_mask)
    if object_mask.shape != shape:
        msg = f"object mask is {object_mask.shape}, but its image is {shape}"
        raise ValueError(msg)
    return object_mask.astype(bool)


def boxes_on_object(boxes: list[Box], full_mask: np.ndarray, object_mask: np.ndarray, min_inside: float) -> list[Box]:
    """The boxes whose anomalous pixels lie on the object for at least ``min_inside`` of them.

    Args:
        boxes: region boxes of one image.
        full_mask: binary anomaly mask at image resolution.
        object_mask: binary object mask at image resolution.
        min_inside: required fraction in ``[0, 1]``.

    Returns:
        The kept boxes, in their order.

    Example:
        >>> anomaly = np.zeros((4, 8), bool); anomaly[1:3, 1:3] = anomaly[1:3, 5:7] = True
        >>> on_object = np.zeros((4, 8), bool); on_object[:, :4] = True
        >>> boxes_on_object([(0, 0, 4, 4), (4, 0, 8, 4)], anomaly, on_object, 0.5)
        [(0, 0, 4, 4)]
    """
    kept = []
    for x0, y0, x1, y1 in boxes:
        anomalous = full_mask[y0:y1, x0:x1].astype(bool)
        inside = np.logical_and(anomalous, object_mask[y0:y1, x0:x1]).sum()
        if inside >= min_inside * max(int(anomalous.sum()), 1):
            kept.append((x0, y0, x1, y1))
    return kept


def cut_regions(
    image_index: int,
    shape: tuple[int, int],
    full_mask: np.ndarray,
    boxes: list[Box],
    score_map: np.ndarray,
    image: np.ndarray | None = None,
    object_mask: np.ndarray | None = None,
    min_inside: float | None = None,
    source: str = "region",
) -> list[Region]:
    """Regions of one image from its boxes; one whole-image region when there is no box.

    Args:
        image_index: the image's position in its set.
        shape: ``(height, width)`` of the image.
        full_mask: binary anomaly mask at image resolution.
        boxes: region boxes (from :func:`~anomalib_ncd.regions.crops.crop_boxes`).
        score_map: the map whose maximum inside a box is the region's score (any resolution).
        image: the image's pixels, to attach each region's crop and mask; ``None`` to skip.
        object_mask: the image's object mask (bool, image resolution), attached to each region
            with its crop; ``None`` for none.
        min_inside: drop boxes with less than this fraction of their anomalous pixels on the
            object (:func:`boxes_on_object`); ``None`` keeps every box.
        source: how the boxes were found (:attr:`~anomalib_ncd.regions.crops.Region.source`);
            the whole-image region of an image without boxes is ``none``.

    Returns:
        The regions.
    """
    if object_mask is not None:
        object_mask = _check_object_mask(object_mask, shape)
        if min_inside is not None:
            boxes = boxes_on_object(boxes, full_mask, object_mask, min_inside)
    whole_image = not boxes
    if whole_image:
        boxes = [(0, 0, shape[1], shape[0])]
    regions = []
    for box in boxes:
        x0, y0, x1, y1 = box
        mask = full_mask[y0:y1, x0:x1].astype(bool)
        mx0, my0, mx1, my1 = _box_on_map(box, shape, score_map.shape)
        region = Region(
            image_index=image_index,
            box=box,
            area=0 if whole_image else int(mask.sum()),
            score=float(score_map[my0:my1, mx0:mx1].max()),
            whole_image=whole_image,
            source="none" if whole_image else source,
        )
        if image is not None:
            region.crop = image[y0:y1, x0:x1].copy()
            region.mask = np.zeros_like(mask) if whole_image else mask
            soft = np.ascontiguousarray(score_map[my0:my1, mx0:mx1], dtype=np.float32)
            region.soft_mask = cv2.resize(soft, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            if object_mask is not None:
                region.object_mask = object_mask[y0:y1, x0:x1].copy()
        regions.append(region)
    return regions


def regions_of_image(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mebin: MEBin,
    crop_settings: CropSettings | None = None,
    image_index: int = 0,
    working_long_side: int | str | None = "auto",
    object_mask: np.ndarray | None = None,
    min_inside: float | None = None,
    nothing_found: str = "soft",
    calibration: PeakCalibration | None = None,
) -> list[Region]:
    """Regions of one image in memory, with a MEBin already fitted on its detector's maps.

    This is the inference path (new images, one at a time or in a batch); :func:`extract_regions`
    is the set path that also fits MEBin's range.

    Args:
        image: ``(H, W, 3)`` or ``(H, W)`` uint8 pixels.
        anomaly_map: the detector's raw map for the image, at any resolution.
        mebin: a fitted MEBin (its range comes from the discovery set).
        crop_settings: crop parameters.
        image_index: index stored in the regions.
        working_long_side: long side at which the map is binarised (``None``: full size,
            ``"auto"``: the map's own).
        object_mask: the image's object mask (see :func:`cut_regions`), or ``None``.
        min_inside: drop regions mostly off the object (see :func:`cut_regions`), or ``None``.
        nothing_found: ``soft`` or ``normal`` (see :func:`extract_regions`).
        calibration: the peak calibration of the discovery set (the soft path's normal decision);
            ``None``: soft regions fall back to PLC's rule.

    Returns:
        The regions, crops and masks attached.
    """
    if not mebin.is_fitted:
        msg = "MEBin has no range yet: fit it on a set of maps first"
        raise ValueError(msg)
    shape = image.shape[:2]
    aligned = AnomalyMapSet.from_arrays([anomaly_map], ["<memory>"], image_shapes=[shape]).aligned(working_long_side)[0]
    result = mebin.transform([aligned])[0]
    check_nothing_found(nothing_found)
    return _binarised_regions(
        result,
        aligned,
        shape,
        mebin,
        crop_settings or CropSettings(),
        image_index,
        image,
        object_mask,
        min_inside,
        nothing_found,
        calibration,
    )


def ground_truth_regions(
    samples: pd.DataFrame,
    crop_settings: CropSettings | None = None,
    load_crops: bool = True,
) -> RegionSet:
    """Regions cut around the ground-truth defects instead of a detector's maps.

    The upper bound of the pipeline: it measures discovery when localisation is perfect (the
    papers' "ground-truth mask" setting). Every connected defect component becomes a region (close
    ones merged as usual) with score 1; an image without a defect gets one whole-image region
    with score 0, as a detector that finds nothing would give.

    Args:
        samples: a sample table (see :mod:`anomalib_ncd.data.samples`) with masks or boxes.
        crop_settings: crop parameters (AnomalyNCD's by default).
        load_crops: read the images and keep each region's pixels and mask in memory.

    Returns:
        The regions; ``map_set`` holds the ground-truth masks as 0/1 maps and ``binarization``
        is empty (no MEBin ran).

    Raises:
        ValueError: when a defect image has neither a mask nor boxes.
    """
    require_annotations(samples, "ground-truth regions")
    crop_settings = crop_settings or CropSettings()
    rows = [row for _, row in samples.iterrows()]
    shapes = [read_image_size(row["image_path"]) for row in rows]
    masks = [read_row_mask(row, shape) for row, shape in zip(rows, shapes, strict=True)]
    map_set = AnomalyMapSet.from_arrays(
        [mask.astype(np.float32) for mask in masks],
        [row["image_path"] for row in rows],
        image_shapes=shapes,
        samples=samples,
    )
    regions: list[Region] = []
    for index, mask in enumerate(masks):
        boxes = crop_boxes(mask, n_anomalies=mask.size, settings=crop_settings)
        image = read_set_image(map_set, index) if load_crops else None
        regions += cut_regions(index, shapes[index], mask, boxes, map_set.maps[index], image)
    return RegionSet(regions=regions, map_set=map_set, binarization=[], mebin=None)


def check_discoverable(regions: RegionSet, n_novel: int) -> None:
    """Refuse sets that give the discovery model nothing to learn.

    Args:
        regions: the regions of the set.
        n_novel: classes to discover (the normal class included).

    Raises:
        NothingToDiscoverError: when no image has an anomalous region, or there are fewer
            anomalous regions than anomalous classes to discover.
    """
    n_images = len(regions.map_set)
    anomalous = sum(getattr(region, "source", "region") == "region" for region in regions)
    if anomalous == 0:
        msg = (
            f"no anomaly was found in any of the {n_images} images: nothing to discover "
            "(are the maps flat, or is this a set of normal images only?)"
        )
        raise NothingToDiscoverError(msg)
    if anomalous < n_novel:
        msg = f"{n_novel} classes to discover but only {anomalous} anomalous regions in {n_images} images"
        raise NothingToDiscoverError(msg)
