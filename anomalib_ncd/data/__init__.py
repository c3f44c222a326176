"""Datasets with defect types: loaders to sample tables, a synthetic generator, anomalib adapters.

The anomalib adapters and datamodules (``MTD``, ``SyntheticDefects``: ``--data
anomalib_ncd.data.MTD`` in anomalib's CLI) are imported lazily (on first attribute access)
because importing ``anomalib.data`` takes several seconds, which loaders and the generator do not
need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from anomalib_ncd.data.image_io import (
    IMAGE_EXTENSIONS,
    MASK_THRESHOLD,
    list_images,
    read_image,
    read_image_size,
    read_mask_file,
    write_mask_file,
)
from anomalib_ncd.data.mask_cache import anomalib_mask_path, default_mask_cache_dir
from anomalib_ncd.data.masks import boxes_to_mask, read_row_mask
from anomalib_ncd.data.mtd import load_mtd
from anomalib_ncd.data.mvtec import load_mvtec_ad
from anomalib_ncd.data.neu_det import load_neu_det, parse_voc_boxes
from anomalib_ncd.data.samples import SAMPLE_COLUMNS, check_images_exist, make_sample_table, validate_sample_table
from anomalib_ncd.data.splits import select_train_names
from anomalib_ncd.data.synthetic import (
    SYNTHETIC_MODES,
    SyntheticImage,
    generate_highres_small,
    generate_synthetic_dataset,
    render_synthetic_image,
)
from anomalib_ncd.data.synthetic_backgrounds import CATEGORIES as SYNTHETIC_CATEGORIES
from anomalib_ncd.data.synthetic_defects import (
    DEFAULT_DEFECT_TYPES,
    DEFECT_TYPES,
    SMALL_DEFECT_TYPES,
    paint_defect,
    paint_small_defect,
)
from anomalib_ncd.data.typed_folder import DEFAULT_NORMAL_TYPES, load_typed_folder

if TYPE_CHECKING:
    from anomalib_ncd.data.anomalib_adapters import (
        defect_type_lookup,
        mvtec_datamodule,
        to_anomalib_datamodule,
        to_anomalib_samples,
    )
    from anomalib_ncd.data.datamodules import MTD, SyntheticDefects

# name -> module that defines it, imported on first access
_LAZY_EXPORTS: dict[str, str] = {
    "defect_type_lookup": "anomalib_ncd.data.anomalib_adapters",
    "mvtec_datamodule": "anomalib_ncd.data.anomalib_adapters",
    "to_anomalib_datamodule": "anomalib_ncd.data.anomalib_adapters",
    "to_anomalib_samples": "anomalib_ncd.data.anomalib_adapters",
    "MTD": "anomalib_ncd.data.datamodules",
    "SyntheticDefects": "anomalib_ncd.data.datamodules",
}

__all__ = [
    "DEFAULT_DEFECT_TYPES",
    "DEFAULT_NORMAL_TYPES",
    "DEFECT_TYPES",
    "IMAGE_EXTENSIONS",
    "MASK_THRESHOLD",
    "MTD",
    "SAMPLE_COLUMNS",
    "SMALL_DEFECT_TYPES",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_MODES",
    "SyntheticDefects",
    "SyntheticImage",
    "anomalib_mask_path",
    "boxes_to_mask",
    "check_images_exist",
    "default_mask_cache_dir",
    "defect_type_lookup",
    "generate_highres_small",
    "generate_synthetic_dataset",
    "list_images",
    "load_mtd",
    "load_mvtec_ad",
    "load_neu_det",
    "load_typed_folder",
    "make_sample_table",
    "mvtec_datamodule",
    "paint_defect",
    "paint_small_defect",
    "parse_voc_boxes",
    "read_image",
    "read_image_size",
    "read_mask_file",
    "read_row_mask",
    "render_synthetic_image",
    "select_train_names",
    "to_anomalib_datamodule",
    "to_anomalib_samples",
    "validate_sample_table",
    "write_mask_file",
]


def __getattr__(name: str) -> Any:
    """Import the anomalib adapters and datamodules on first use.

    Args:
        name: the attribute asked for.

    Returns:
        The adapter function or datamodule class.

    Raises:
        AttributeError: for names this package does not define.
    """
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
