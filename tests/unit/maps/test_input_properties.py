"""Property-based: map and image validation gives a valid result or a clear error naming the file, nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import tifffile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anomalib_ncd.data.image_io import check_image_sizes, read_image, to_uint8
from anomalib_ncd.maps.folder import read_map_file
from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError, check_map, working_shape

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.uint16, np.int32, np.int64, bool])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)
SPECIAL = st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e30, -1e30])


@st.composite
def arrays(draw, shapes=SHAPES):
    """Arrays of any shape and dtype; float ones sprinkled with NaN, inf, huge values, or constant."""
    dtype = np.dtype(draw(DTYPES))
    shape = draw(shapes)
    if dtype.kind == "f":
        width = min(dtype.itemsize * 8, 64)
        bound = 6e4 if width == 16 else 1e6
        special = SPECIAL.filter(lambda value: width > 16 or not np.isfinite(value) or abs(value) < 6e4)
        elements = st.one_of(special, st.floats(-bound, bound, width=width))
        array = draw(hnp.arrays(dtype, shape, elements=elements))
    else:
        array = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()) and array.size:
        array = np.full_like(array, array.flat[0])  # a constant map
    return array


def attempt(call, *allowed):
    """``(result, None)``, or ``(None, error)`` for an error of the allowed types; any other exception propagates."""
    try:
        return call(), None
    except allowed as error:
        return None, error


def _valid_map(result: np.ndarray) -> None:
    assert result.dtype == np.float32
    assert result.ndim == 2
    assert result.size > 0
    assert np.isfinite(result).all()


@SETTINGS
@given(array=arrays())
def test_check_map(array):
    result, error = attempt(lambda: check_map(array, "img_017.png"), MapError)
    if error is not None:
        assert "img_017.png" in str(error)
        return
    _valid_map(result)


IMAGE_SHAPES = st.tuples(st.integers(1, 400), st.integers(1, 400))


@SETTINGS
@given(
    array=arrays(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40)),
    image_shape=IMAGE_SHAPES,
    long_side=st.one_of(st.none(), st.integers(1, 300)),
)
def test_map_set_and_alignment(array, image_shape, long_side):
    map_set, error = attempt(
        lambda: AnomalyMapSet.from_arrays([array], ["part_3.png"], image_shapes=[image_shape]), MapError
    )
    if error is not None:
        assert "part_3.png" in str(error)
        return
    _valid_map(map_set.maps[0])
    aligned = map_set.aligned(long_side)[0]
    expected = image_shape if long_side is None else working_shape(image_shape, long_side)
    assert aligned.shape == expected
    assert np.isfinite(aligned).all()


@SETTINGS
@given(map_shape=st.tuples(st.integers(1, 300), st.integers(1, 300)), image_shape=IMAGE_SHAPES)
@example(map_shape=(1, 2), image_shape=(2, 1))  # the two windows of scales share one end
@example(map_shape=(20, 300), image_shape=(128, 176))
def test_aspect_rule(map_shape, image_shape):
    """A map is accepted exactly when it is square or some scale puts both sides within 1 px of the image's."""
    height, width = map_shape
    image_height, image_width = image_shape
    # if some scale fits both sides, one at an end of the two 1-px windows does
    candidates = [(height + d) / image_height for d in (-1, 1)] + [(width + d) / image_width for d in (-1, 1)]
    fits = any(
        abs(height - s * image_height) <= 1 + 1e-9 and abs(width - s * image_width) <= 1 + 1e-9 for s in candidates
    )
    _, error = attempt(
        lambda: AnomalyMapSet.from_arrays([np.zeros(map_shape, np.float32)], ["x.png"], image_shapes=[image_shape]),
        MapError,
    )
    if error is not None:
        assert "x.png" in str(error)
        assert height != width
        assert not fits
        return
    assert height == width or fits


@SETTINGS
@given(
    array=arrays(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=16)),
    suffix=st.sampled_from([".npy", ".tif", ".png"]),
)
def test_saved_map_files(array, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"map_42{suffix}"
        try:
            if suffix == ".npy":
                np.save(path, array)
            elif suffix == ".tif":
                tifffile.imwrite(path, array)
            elif not cv2.imwrite(str(path), array):
                return
        except Exception:
            return  # an array the writer itself refuses: nothing to read back
        result, error = attempt(lambda: read_map_file(path), MapError)
        if error is not None:
            assert "map_42" in str(error)
            return
        _valid_map(result)


@SETTINGS
@given(
    array=arrays(hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=24)),
    suffix=st.sampled_from([".png", ".tif", ".jpg"]),
    truncate=st.sampled_from([None, 0, 1, 8, 40, 200]),
    colour=st.booleans(),
)
def test_image_files(array, suffix, truncate, colour):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"photo_9{suffix}"
        try:
            written = cv2.imwrite(str(path), array)
        except cv2.error:
            return
        if not written:
            return
        if truncate is not None:
            path.write_bytes(path.read_bytes()[:truncate])
        image, error = attempt(lambda: read_image(path, colour=colour), ValueError)
        if error is not None:
            assert "photo_9" in str(error)
        else:
            assert image.dtype == np.uint8
            assert image.ndim == (3 if colour else 2)
        _, error = attempt(lambda: check_image_sizes([path], min_side=4), ValueError)
        assert error is None or "photo_9" in str(error)


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_random_bytes_are_a_clear_error(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"junk{suffix}"
        path.write_bytes(data)
        for call in (lambda: read_image(path), lambda: read_map_file(path), lambda: check_image_sizes([path])):
            _, error = attempt(call, ValueError, MapError)
            assert error is None or "junk" in str(error)


@SETTINGS
@given(array=arrays(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8)))
def test_to_uint8(array):
    result, error = attempt(lambda: to_uint8(array, "scan.tif"), ValueError)
    if error is not None:
        assert "scan.tif" in str(error)
        assert np.isnan(array).any()
        return
    assert result.dtype == np.uint8
    assert result.shape == array.shape
