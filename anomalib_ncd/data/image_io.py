"""Robust reading of images and masks from disk, and listing of image files in a folder.

OpenCV returns ``None`` instead of raising on a missing or undecodable file; every reader here turns
that into an exception that names the file, so a bad dataset fails loudly at the right place.

Bit depth: every image is returned as 8-bit. A file of higher depth (16-bit PNG or TIFF, 32-bit
TIFF) is scaled by the range of its dtype, not by its own minimum and maximum, so the same scene
gives the same pixels whatever its depth: an unsigned or signed integer image is mapped from
``[0, dtype max]`` to ``[0, 255]`` (``round(v * 255 / max)``; negative values are clipped to 0)
and a float image from ``[0, 1]`` (values outside are clipped). A 16-bit copy ``v * 257`` of an
8-bit image thus reads back as the 8-bit image exactly. The detector's data path
(:class:`anomalib_ncd.data.anomalib_adapters.SampleDataset`) and the region crops both read through
:func:`read_image`, so they see the same pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
"""File suffixes (lower case) that count as images when listing a folder."""

MASK_THRESHOLD: int = 127
"""A mask pixel is foreground when its grey value is strictly greater than this."""

JPEG_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg"})
JPEG_END = b"\xff\xd9"  # end-of-image marker; never inside the entropy-coded data (0xFF is stuffed there)

MIN_IMAGE_SIDE: int = 32
"""The smallest short side (pixels) of an image to discover classes in.

Below it the detector's feature maps (Patchcore's stride-16 layers here) hold fewer than 2 x 2
cells whatever the input size the image is upsampled to, and its score means nothing (a 1 x 1
image gets the highest score of a set and lands in the normal class)."""


def list_images(
    folder: str | Path,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    *,
    require_any: bool = False,
) -> list[Path]:
    """List the image files directly inside ``folder``, sorted by file name.

    Sorting makes every loader independent of the file system's listing order. Hidden files
    (``.name``) are skipped; suffixes are compared case-insensitively.

    Args:
        folder: the folder to list.
        extensions: lower-case suffixes (with the dot) that count as images.
        require_any: raise if the folder holds no image.

    Returns:
        The image paths, sorted by name.

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
        ValueError: if ``require_any`` and the folder holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"folder not found: {folder}"
        raise FileNotFoundError(msg)
    images = [
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in extensions
    ]
    if require_any and not images:
        msg = f"no images ({', '.join(sorted(extensions))}) in {folder}"
        raise ValueError(msg)
    return sorted(images, key=lambda path: path.name)


def list_subfolders(folder: str | Path) -> list[Path]:
    """List the non-hidden sub-directories of ``folder``, sorted by name.

    Args:
        folder: the folder to list.

    Returns:
        The sub-directories, sorted by name.

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"folder not found: {folder}"
        raise FileNotFoundError(msg)
    return sorted((path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")), key=str)


def read_image(path: str | Path, *, colour: bool = True) -> np.ndarray:
    """Read an image as 8-bit, grey or colour, whatever the file holds.

    Files of more than 8 bits per channel are scaled by their dtype's range (see the module
    docstring).

    Args:
        path: the image file.
        colour: ``True`` returns ``(H, W, 3)`` RGB (grey files are replicated to three channels);
            ``False`` returns ``(H, W)`` grey.

    Returns:
        A ``uint8`` array.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file exists but cannot be decoded as an image, or holds NaN values.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image not found: {path}"
        raise FileNotFoundError(msg)
    flag = (cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_ANYDEPTH
    image = cv2.imread(str(path), flag)
    if image is None:
        msg = f"cannot decode image (corrupt, truncated or unsupported format): {path}"
        raise ValueError(msg)
    if path.suffix.lower() in JPEG_SUFFIXES and not _has_jpeg_end(path):
        # OpenCV decodes a truncated JPEG as a grey-padded image, with only a warning on stderr
        msg = f"image file is truncated (its JPEG end marker is missing): {path}"
        raise ValueError(msg)
    image = to_uint8(image, str(path))
    if colour:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _has_jpeg_end(path: Path, tail_bytes: int = 1024) -> bool:
    """Whether a JPEG file ends with its end-of-image marker (possibly followed by some padding)."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - tail_bytes))
        return JPEG_END in file.read()


def to_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Scale an image of any depth to ``uint8`` by its dtype's range (see the module docstring).

    Args:
        image: the pixels.
        name: what to call the image in error messages (its file).

    Returns:
        The ``uint8`` pixels (the input itself when it is ``uint8`` already).

    Raises:
        ValueError: on NaN values, or a dtype that is neither integer nor float.

    Example:
        >>> to_uint8(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).tolist()
        [[0, 100, 255]]
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer):
        scaled = image.astype(np.float64) * (255.0 / np.iinfo(image.dtype).max)
    elif np.issubdtype(image.dtype, np.floating):
        if np.isnan(image).any():
            msg = f"image {name} holds NaN values"
            raise ValueError(msg)
        scaled = image.astype(np.float64) * 255.0
    else:
        msg = f"image {name} has unsupported pixel type {image.dtype}"
        raise ValueError(msg)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """Return ``(height, width)`` of an image by reading only its header.

    Args:
        path: the image file.

    Returns:
        ``(height, width)`` in pixels.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image not found: {path}"
        raise FileNotFoundError(msg)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as error:
        msg = f"cannot read image header (corrupt or unsupported format): {path}"
        raise ValueError(msg) from error
    return height, width


def check_image_sizes(paths: Iterable[str | Path], min_side: int = MIN_IMAGE_SIDE) -> None:
    """Check that every image has at least ``min_side`` pixels on its short side (headers only).

    Args:
        paths: the image files.
        min_side: the smallest allowed short side (:data:`MIN_IMAGE_SIDE`).

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: naming the first image that is too small (and how many are), or that is not
            a readable image.
    """
    small = []
    for path in paths:
        height, width = read_image_size(path)
        if min(height, width) < min_side:
            small.append((str(path), height, width))
    if small:
        path, height, width = small[0]
        others = f" ({len(small) - 1} more)" if len(small) > 1 else ""
        msg = (
            f"image {path} is {height} x {width} px{others}: images need at least {min_side} px on their "
            "short side for the detector; remove them or enlarge them"
        )
        raise ValueError(msg)


def read_mask_file(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a pixel mask as booleans: foreground where the grey value is > 127.

    Masks that are not strictly binary (JPEG-like halos, anti-aliased edges) are thresholded here
    rather than at "> 0", so faint halo pixels do not count as defect.

    Args:
        path: the mask file.
        shape: ``(height, width)`` to return; a mask of another size is resized with
            nearest-neighbour interpolation (so it stays binary).

    Returns:
        A ``bool`` array of shape ``shape`` (or the file's own size).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be decoded.
    """
    grey = read_image(path, colour=False)
    if shape is not None and grey.shape != tuple(shape):
        height, width = shape
        grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_NEAREST)
    return grey > MASK_THRESHOLD


def write_mask_file(path: str | Path, mask: np.ndarray) -> Path:
    """Write a boolean mask as a 0/255 single-channel PNG, atomically.

    The file is written under a temporary name and then renamed, so a concurrent reader (e.g. a
    data-loader worker) never sees a half-written mask.

    Args:
        path: destination (a ``.png`` file); parent folders are created.
        mask: a 2-D array; non-zero means foreground.

    Returns:
        The destination path.

    Raises:
        ValueError: if ``mask`` is not 2-D.
        OSError: if the file cannot be written.
    """
    path = Path(path)
    if mask.ndim != 2:
        msg = f"a mask must be 2-D, got shape {mask.shape} for {path}"
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not cv2.imwrite(str(temporary), np.where(mask > 0, 255, 0).astype(np.uint8)):
        msg = f"cannot write mask: {path}"
        raise OSError(msg)
    temporary.replace(path)
    return path
