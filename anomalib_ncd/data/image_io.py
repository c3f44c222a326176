"""Robust reading of images and masks from disk, and listing of image files in a folder.

OpenCV returns ``None`` instead of raising on a missing or undecodable file; every reader here turns
that into an exception that names the file, so a bad dataset fails loudly at the right place.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
"""File suffixes (lower case) that count as images when listing a folder."""

MASK_THRESHOLD: int = 127
"""A mask pixel is foreground when its grey value is strictly greater than this."""


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
    """Read an 8-bit image, grey or colour, whatever the file holds.

    Args:
        path: the image file.
        colour: ``True`` returns ``(H, W, 3)`` RGB (grey files are replicated to three channels);
            ``False`` returns ``(H, W)`` grey.

    Returns:
        A ``uint8`` array.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file exists but cannot be decoded as an image.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image not found: {path}"
        raise FileNotFoundError(msg)
    flag = cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE
    image = cv2.imread(str(path), flag)
    if image is None:
        msg = f"cannot decode image (corrupt or unsupported format): {path}"
        raise ValueError(msg)
    if colour:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


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
