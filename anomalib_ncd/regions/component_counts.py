# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""Connected-component counts of every upper level set of a quantised image.

MEBin needs, for one anomaly map, the number of connected components of the
binarised (and eroded) map at each of its 64 thresholds. Once the map is
quantised to integer levels (``level > j`` is exactly "above threshold ``j``"),
this is the number of components of ``{level > j}`` for every ``j``. This module
computes all of them from a single quantised image:

* levels that no pixel takes cannot change the foreground, so the count of the
  next level up is reused instead of labelling again;
* each remaining level set is labelled only inside its bounding box, which is
  small for the typical anomaly map (background sits at level 0).

The labelling itself is OpenCV's connected-component labelling, so the counts are
those of ``cv2.connectedComponents`` on the full binary image, by construction.

Example:
    >>> import numpy as np
    >>> levels = np.zeros((8, 8), dtype=np.uint8)
    >>> levels[1, 1] = 2
    >>> levels[5:7, 5:7] = 1
    >>> component_counts(levels, n_levels=3).tolist()
    [2, 1, 0]
"""

import cv2
import numpy as np

_VALID_CONNECTIVITY = (4, 8)


def component_counts(levels: np.ndarray, n_levels: int, connectivity: int = 8) -> np.ndarray:
    """Count connected components of ``{levels > j}`` for ``j = 0 .. n_levels - 1``.

    Args:
        levels: 2-D ``uint8`` image of integer levels in ``[0, n_levels]``.
        n_levels: Number of thresholds, i.e. the largest level a pixel may take.
        connectivity: Pixel connectivity of a component, ``4`` or ``8``.

    Returns:
        np.ndarray: ``int64`` array of length ``n_levels``; entry ``j`` is the number of
        ``connectivity``-connected components of the pixels whose level exceeds ``j``.

    Raises:
        ValueError: If ``levels`` is not a 2-D ``uint8`` array, if a level exceeds
            ``n_levels`` or if ``connectivity`` is not 4 or 8.
    """
    if levels.ndim != 2 or levels.dtype != np.uint8:
        msg = f"levels must be a 2-D uint8 array, got shape {levels.shape} and dtype {levels.dtype}"
        raise ValueError(msg)
    if connectivity not in _VALID_CONNECTIVITY:
        msg = f"connectivity must be 4 or 8, got {connectivity}"
        raise ValueError(msg)
    counts = np.zeros(n_levels, dtype=np.int64)
    if levels.size == 0:
        return counts
    # Everything happens inside the bounding box of the non-zero pixels, often a small part of the map.
    left, top, width, height = cv2.boundingRect(levels)
    if width == 0:
        return counts
    levels = levels[top : top + height, left : left + width]
    if int(levels.max()) > n_levels:
        msg = f"levels must not exceed n_levels={n_levels}, found {int(levels.max())}"
        raise ValueError(msg)
    histogram = np.bincount(levels.ravel(), minlength=n_levels + 1)

    # Only levels some pixel takes change the foreground; every other j repeats the next level up.
    changes = np.flatnonzero(histogram[1:])  # the j at which {levels > j} differs from {levels > j + 1}
    # Bounding box of each of those level sets, from the row and column maxima.
    above_rows = levels.max(axis=1)[None, :] > changes[:, None]
    above_cols = levels.max(axis=0)[None, :] > changes[:, None]
    tops = above_rows.argmax(axis=1).tolist()
    bottoms = (above_rows.shape[1] - above_rows[:, ::-1].argmax(axis=1)).tolist()
    lefts = above_cols.argmax(axis=1).tolist()
    rights = (above_cols.shape[1] - above_cols[:, ::-1].argmax(axis=1)).tolist()

    found = []
    for k, j in enumerate(changes.tolist()):
        window = levels[tops[k] : bottoms[k], lefts[k] : rights[k]]
        _, foreground = cv2.threshold(window, j, 1, cv2.THRESH_BINARY)
        found.append(cv2.connectedComponents(foreground, connectivity=connectivity)[0] - 1)
    # counts[j] is the count at the smallest changing level >= j, or 0 above the highest one.
    nearest_change = np.searchsorted(changes, np.arange(n_levels), side="left")
    return np.append(np.asarray(found, dtype=np.int64), 0)[nearest_change]
