"""Loader for NEU-DET (NEU steel surface defects, box annotations, no defect-free images).

Layout::

    <root>/IMAGES/<type>_<n>.jpg        200x200 grey image
    <root>/ANNOTATIONS/<type>_<n>.xml   Pascal VOC boxes

``defect_type`` is the image file name without the trailing ``_<n>``: "crazing", "inclusion",
"patches", "pitted_surface", "rolled-in_scale", "scratches". The XML's ``<filename>`` and
``<name>`` tags are not used (they are abbreviated in places, e.g. "pitted").

Box convention: Pascal VOC stores 1-based pixel indices with *inclusive* ends, so a box covering
columns ``xmin..xmax`` (1-based) covers 0-based columns ``xmin - 1 .. xmax - 1``. We store
``(x0, y0, x1, y1) = (xmin - 1, ymin - 1, xmax, ymax)``: 0-based inclusive start, exclusive end,
the same width ``xmax - xmin + 1``. Boxes are clipped to the ``<size>`` of the annotation when it
is given.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from anomalib_ncd.data.image_io import list_images
from anomalib_ncd.data.masks import Box
from anomalib_ncd.data.samples import SPLITS, make_sample_table

NEU_IMAGE_FOLDER = "IMAGES"
NEU_ANNOTATION_FOLDER = "ANNOTATIONS"


def parse_voc_boxes(xml_path: str | Path) -> list[Box]:
    """Read the boxes of a Pascal VOC annotation, converted to 0-based ``(x0, y0, x1, y1)`` exclusive-end.

    Args:
        xml_path: the ``.xml`` annotation.

    Returns:
        One box per ``<object>``, in file order (empty list when there is none).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if the XML is malformed or a box lacks a numeric coordinate
            or is empty (``xmax < xmin``).
    """
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        msg = f"annotation not found: {xml_path}"
        raise FileNotFoundError(msg)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        msg = f"malformed XML in {xml_path}: {error}"
        raise ValueError(msg) from error
    width, height = _size_of(root, xml_path)
    boxes: list[Box] = []
    for index, box_node in enumerate(root.iter("bndbox")):
        xmin, ymin, xmax, ymax = (_integer(box_node, tag, xml_path, index) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            msg = f"empty box #{index} ({xmin}, {ymin}, {xmax}, {ymax}) in {xml_path}"
            raise ValueError(msg)
        x0, y0, x1, y1 = max(xmin - 1, 0), max(ymin - 1, 0), xmax, ymax
        if width is not None and height is not None:
            x1, y1 = min(x1, width), min(y1, height)
        boxes.append((x0, y0, x1, y1))
    return boxes


def load_neu_det(root: str | Path, *, split: str = "test") -> pd.DataFrame:
    """Build the sample table of NEU-DET: every image is a defect with boxes, none has a mask.

    Args:
        root: the folder holding ``IMAGES`` and ``ANNOTATIONS``.
        split: the split of every row (there are no normal images to train a detector on).

    Returns:
        The sample table, rows by file name; ``boxes`` holds lists of ``(x0, y0, x1, y1)``.

    Raises:
        FileNotFoundError: if ``root``, a folder, or the annotation of an image is missing.
        ValueError: if ``split`` is unknown, there is no image, or an annotation is malformed.
    """
    if split not in SPLITS:
        msg = f"unknown split {split!r}; allowed: {sorted(SPLITS)}"
        raise ValueError(msg)
    root = Path(root).resolve()
    if not root.is_dir():
        msg = f"NEU-DET root not found: {root}"
        raise FileNotFoundError(msg)
    records = []
    for image_path in list_images(root / NEU_IMAGE_FOLDER, require_any=True):
        defect_type, _, number = image_path.stem.rpartition("_")
        if not defect_type or not number.isdigit():
            msg = f"NEU-DET image name is not <type>_<n>: {image_path}"
            raise ValueError(msg)
        records.append(
            {
                "image_path": image_path,
                "defect_type": defect_type,
                "is_normal": False,
                "boxes": parse_voc_boxes(root / NEU_ANNOTATION_FOLDER / f"{image_path.stem}.xml"),
                "split": split,
            }
        )
    return make_sample_table(records)


def _size_of(root: ET.Element, xml_path: Path) -> tuple[int | None, int | None]:
    size = root.find("size")
    if size is None:
        return None, None
    return _optional_integer(size, "width", xml_path), _optional_integer(size, "height", xml_path)


def _optional_integer(node: ET.Element, tag: str, xml_path: Path) -> int | None:
    text = node.findtext(tag)
    if text is None or not text.strip():
        return None
    try:
        value = int(float(text))
    except ValueError as error:
        msg = f"<{tag}> is not a number ({text!r}) in {xml_path}"
        raise ValueError(msg) from error
    return value if value > 0 else None


def _integer(node: ET.Element, tag: str, xml_path: Path, index: int) -> int:
    text = node.findtext(tag)
    if text is None:
        msg = f"box #{index} lacks <{tag}> in {xml_path}"
        raise ValueError(msg)
    try:
        # Some VOC exporters write "12.0"; the coordinate is still a pixel index.
        return round(float(text))
    except ValueError as error:
        msg = f"box #{index} has a non-numeric <{tag}> ({text!r}) in {xml_path}"
        raise ValueError(msg) from error
