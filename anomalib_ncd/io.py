"""Small file helpers shared by every stage: atomic writes and robust image reading."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_write_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    A killed or failing writer therefore never leaves a half-written file under the final name,
    and an earlier version of the file stays intact until the new one is complete.

    Args:
        path: the final file path.

    Yields:
        A temporary path in the same folder (same file system, so the final rename is atomic).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8).

    Args:
        path: the final file path.
        text: the content.
    """
    with atomic_write_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_image(path: str | Path, *, grey: bool = False) -> np.ndarray:
    """Read an image file, with an error that names the file when it is missing or unreadable.

    Args:
        path: the image file.
        grey: return a single-channel image.

    Returns:
        ``(H, W)`` uint8 when ``grey`` or the file is single-channel, else ``(H, W, 3)`` uint8 RGB.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not a readable image.
    """
    file = Path(path)
    if not file.is_file():
        msg = f"image not found: {file}"
        raise FileNotFoundError(msg)
    flags = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.fromfile(file, dtype=np.uint8), flags)
    if image is None:
        msg = f"cannot read image (corrupt or unsupported format): {file}"
        raise ValueError(msg)
    if image.dtype != np.uint8:
        # 16-bit images: keep the full range visible in 8 bits
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def read_mask(path: str | Path, *, threshold: int = 127) -> np.ndarray:
    """Read a mask image as bool, foreground where the grey value is above ``threshold``.

    Args:
        path: the mask file.
        threshold: grey values above this are foreground (MTD's masks are not strictly binary).

    Returns:
        ``(H, W)`` bool mask.
    """
    return read_image(path, grey=True) > threshold
