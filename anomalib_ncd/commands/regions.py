"""``anomalib-ncd regions``: the region stage alone (detector maps -> MEBin -> anomaly-centred regions).

A run that fails leaves no run folder; everything it writes lies under ``--output``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from anomalib_ncd.commands.datasets import SYNTHETIC, SyntheticSettings, load_dataset
from anomalib_ncd.commands.detector_maps import DetectorSettings, anomaly_maps
from anomalib_ncd.data.image_io import check_image_sizes
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.regions.crops import CropSettings
from anomalib_ncd.regions.mebin import MEBin
from anomalib_ncd.results import RunFolder, check_output_root, mark_latest, new_run_dir, remove_run_dir, write_run_state

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("anomalib_ncd")


def regions(
    data: str = SYNTHETIC,
    category: str | None = None,
    synthetic: SyntheticSettings = SyntheticSettings(),  # noqa: B008 (frozen settings)
    maps: str | None = None,
    skip_missing_maps: bool = False,
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
        synthetic: the built-in synthetic set's preset (``--synthetic.mode highres_small``,
            ``--synthetic.bit_depth 16``).
        maps: a folder of saved anomaly maps (``index.csv`` or the dataset's layout); skips the detector.
        skip_missing_maps: with ``maps``, leave out (with a warning and their count) the images that
            have no saved map; by default one missing map is an error naming the image.
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

    seed_everything(seed, workers=True, verbose=False)
    output_root = Path(output)
    check_output_root(output_root)
    table, dataset, category_name = load_dataset(data, category, output_root / "data", seed, synthetic=synthetic)
    if maps is None and not (table["split"] == "train").any():
        msg = f"dataset {data} has no normal training images for the detector; give saved maps with --maps"
        raise ValueError(msg)
    check_image_sizes(table["image_path"])
    run = new_run_dir(output_root, dataset, category_name)
    write_run_state(run, command="regions", complete=False, dataset=dataset, category=category_name)
    logger.info("Run folder: %s", run)
    settings = DetectorSettings(
        maps=maps,
        skip_missing_maps=skip_missing_maps,
        backbone=backbone,
        image_size=image_size,
        coreset_sampling_ratio=coreset_sampling_ratio,
    )
    try:
        _region_stage(
            run,
            settings,
            table,
            dataset,
            category_name,
            mebin,
            crops,
            working_long_side,
            save_crops,
            accelerator,
            devices,
            seed,
        )
    except Exception:
        remove_run_dir(run)  # a failed run leaves no half-made folder
        raise
    return run


def _region_stage(
    run: Path,
    settings: DetectorSettings,
    table: pd.DataFrame,
    dataset: str,
    category_name: str,
    mebin: MEBin | None,
    crops: CropSettings | None,
    working_long_side: int,
    save_crops: bool,
    accelerator: str,
    devices: int,
    seed: int,
) -> None:
    from anomalib_ncd.regions.extract import extract_regions

    map_set, _, _, _ = anomaly_maps(
        settings,
        table,
        dataset,
        category_name,
        run,
        accelerator=accelerator,
        devices=devices,
        seed=seed,
        skip_option="--skip_missing_maps true",
    )
    region_set = extract_regions(
        map_set, mebin=mebin or MEBin(), crop_settings=crops, working_long_side=working_long_side
    )
    assert region_set.mebin is not None  # extract_regions binarised the maps with it
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
        "mebin_range": list(region_set.mebin.fitted_range()),
    }
    atomic_write_text(RunFolder(run).summary, json.dumps(summary, indent=2))
    write_run_state(run, complete=True)
    mark_latest(run)
    print(f"{summary['regions']} regions from {summary['images']} images; results in {run}")
