"""``anomalib-ncd``: the command line, in anomalib's jsonargparse style (``-c/--config``, ``--print_config``).

The command is thin: it parses, then calls the Python API. User errors (missing paths, unreadable
images, unusable maps) end with one ``anomalib-ncd: error: ...`` line and exit code 2, no traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd
from jsonargparse import auto_cli

from anomalib_ncd.data import (
    generate_synthetic_dataset,
    load_mtd,
    load_mvtec_ad,
    load_neu_det,
    load_typed_folder,
)
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.map_set import MapError
from anomalib_ncd.regions.crops import CropSettings
from anomalib_ncd.regions.mebin import MEBin
from anomalib_ncd.results import new_run_dir

logger = logging.getLogger("anomalib_ncd")

USER_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError, MapError, PermissionError, OSError)


def load_dataset(data: str, category: str | None, workdir: Path, seed: int) -> tuple[pd.DataFrame, str, str]:
    """Load a dataset by path (layout detected) or generate the built-in synthetic one.

    Args:
        data: ``"synthetic"``, or a dataset folder in MTD, NEU-DET, MVTec AD or typed-folder layout.
        category: MVTec AD category (or synthetic category).
        workdir: where the synthetic dataset is written.
        seed: seed of the synthetic dataset.

    Returns:
        The sample table, the dataset name and the category.
    """
    if data == "synthetic":
        category = category or "brick"
        table = generate_synthetic_dataset(workdir / "synthetic", category, seed=seed, image_size=(128, 176))
        return table, "synthetic", category
    root = Path(data)
    if not root.is_dir():
        msg = f"dataset folder not found: {root}"
        raise FileNotFoundError(msg)
    if any(root.glob("MT_*")):
        return load_mtd(root), "MTD", ""
    if (root / "IMAGES").is_dir() and (root / "ANNOTATIONS").is_dir():
        return load_neu_det(root), "NEU-DET", ""
    if category is not None and (root / category / "test").is_dir():
        return load_mvtec_ad(root, category), root.name or "MVTecAD", category
    if (root / "test").is_dir() and (root / "train").is_dir():
        return load_mvtec_ad(root.parent, root.name), root.parent.name, root.name
    return load_typed_folder(root), root.name, ""


def regions(
    data: str = "synthetic",
    category: str | None = None,
    maps: str | None = None,
    backbone: str = "mobilenetv2_100.tv_in1k",
    image_size: int = 256,
    coreset_sampling_ratio: float = 0.01,
    mebin: MEBin | None = None,
    crops: CropSettings | None = None,
    working_long_side: int = 256,
    save_crops: bool = True,
    output: str = "results",
    accelerator: str = "auto",
    devices: int = 1,
    seed: int = 0,
) -> Path:
    """Run the region stage: detector maps -> MEBin -> anomaly-centred regions.

    Without arguments it runs on a built-in synthetic dataset (generated on the fly, no network):
    trains anomalib's Patchcore on offline ImageNet weights, takes its raw maps, binarises them
    with MEBin and writes the regions.

    Args:
        data: ``synthetic`` or a dataset folder (MTD, NEU-DET, MVTec AD category or ``root/<type>/*``).
        category: MVTec AD category under ``data``.
        maps: a folder of saved anomaly maps (``index.csv`` or the dataset's layout); skips the detector.
        backbone: timm backbone of the Patchcore detector.
        image_size: detector input size (square).
        coreset_sampling_ratio: Patchcore memory-bank subsampling.
        mebin: MEBin settings.
        crops: crop settings.
        working_long_side: long side at which maps are binarised.
        save_crops: write each region's crop and mask as PNG.
        output: results root; the run goes to ``<output>/NCD/<dataset>/<category>/vN``.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``...).
        devices: number of devices.
        seed: random seed.

    Returns:
        The run folder.
    """
    from lightning.pytorch import seed_everything

    from anomalib_ncd.data import to_anomalib_datamodule
    from anomalib_ncd.detector import make_patchcore, train_detector
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.maps.from_anomalib import predict_maps
    from anomalib_ncd.regions.extract import extract_regions

    seed_everything(seed, workers=True, verbose=False)
    output_root = Path(output)
    table, dataset, category_name = load_dataset(data, category, output_root / "data", seed)
    run = new_run_dir(output_root, dataset, category_name)
    logger.info("Run folder: %s", run)
    if maps is not None:
        map_set = load_map_folder(maps, samples=table[table["split"] == "test"])
    else:
        if not (table["split"] == "train").any():
            msg = f"dataset {data} has no normal training images for the detector; give saved maps with --maps"
            raise ValueError(msg)
        datamodule = to_anomalib_datamodule(table, dataset, category=category_name, image_size=(image_size, image_size))
        model = make_patchcore(backbone, coreset_sampling_ratio=coreset_sampling_ratio)
        train_detector(
            model, datamodule, root_dir=run / "detector", max_epochs=1, accelerator=accelerator, devices=devices
        )
        map_set = predict_maps(model, datamodule, samples=table, accelerator=accelerator, devices=devices)
    region_set = extract_regions(
        map_set, mebin=mebin or MEBin(), crop_settings=crops, working_long_side=working_long_side
    )
    if save_crops:
        region_set.save(run / "regions")
    else:
        atomic_write_text(run / "regions" / "regions.csv", region_set.table().to_csv(index=False))
    summary = {
        "dataset": dataset,
        "category": category_name,
        "images": len(map_set),
        "regions": len(region_set),
        "images_without_region": sum(all(r.whole_image for r in region_set.of_image(i)) for i in range(len(map_set))),
        "mebin_range": [region_set.mebin.min_th_, region_set.mebin.max_th_],
    }
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2))
    print(f"{summary['regions']} regions from {summary['images']} images; results in {run}")
    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anomalib-ncd`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = sys.argv[1:] if argv is None else list(argv)
    # anomalib's short form of --config, accepted after the subcommand too
    arguments = ["--config" if argument == "-c" else argument for argument in arguments]
    try:
        auto_cli({"regions": regions}, args=arguments, as_positional=False)
    except USER_ERRORS as error:
        print(f"anomalib-ncd: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
