from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from anomalib.data.utils import read_mask as anomalib_read_mask

from anomalib_ncd.data import (
    defect_type_lookup,
    generate_synthetic_dataset,
    load_mtd,
    load_neu_det,
    mvtec_datamodule,
    read_row_mask,
    to_anomalib_datamodule,
    to_anomalib_samples,
)
from anomalib_ncd.data.mask_cache import anomalib_mask_path
from anomalib_ncd.data.samples import make_sample_table

from .conftest import MTD_ROOT, needs_mtd


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("synthetic")
    table = generate_synthetic_dataset(
        root, "washer", image_size=(48, 64), n_train_good=4, n_test_good=3, n_per_type=2, seed=2
    )
    return root, table


def all_batches(loader) -> dict[str, list]:
    collected: dict[str, list] = {"image_path": [], "gt_label": [], "gt_mask": [], "image": []}
    for batch in loader:
        collected["image_path"] += list(batch.image_path)
        collected["gt_label"] += batch.gt_label.tolist()
        collected["gt_mask"] += list(batch.gt_mask) if batch.gt_mask is not None else []
        collected["image"] += list(batch.image)
    return collected


def test_samples_table_columns_and_labels(synthetic: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, table = synthetic
    samples = to_anomalib_samples(table, mask_cache_dir=tmp_path)
    assert list(samples.columns) == ["image_path", "label_index", "split", "mask_path"]
    assert samples["label_index"].tolist() == (~table["is_normal"]).astype(int).tolist()
    assert (samples.loc[table["is_normal"].to_numpy(), "mask_path"] == "").all()
    # Synthetic masks are 0/255 at the image size already: used as they are, nothing cached.
    defects = table[~table["is_normal"]]
    assert samples.loc[~table["is_normal"].to_numpy(), "mask_path"].tolist() == defects["mask_path"].tolist()
    assert not list(tmp_path.iterdir())


def test_datamodule_yields_the_table(synthetic: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, table = synthetic
    datamodule = to_anomalib_datamodule(
        table, "synthetic", category="washer", eval_batch_size=5, mask_cache_dir=tmp_path
    )
    datamodule.setup()
    assert datamodule.category == "washer"
    train = all_batches(datamodule.train_dataloader())
    test = all_batches(datamodule.test_dataloader())
    assert sorted(train["image_path"]) == sorted(table.loc[table["split"] == "train", "image_path"])
    assert sorted(test["image_path"]) == sorted(table.loc[table["split"] == "test", "image_path"])
    assert len(datamodule.val_data) == len(datamodule.test_data)
    rows = table.set_index("image_path")
    types = defect_type_lookup(table)
    for path, label, mask, image in zip(
        test["image_path"], test["gt_label"], test["gt_mask"], test["image"], strict=True
    ):
        assert label == (not rows.loc[path, "is_normal"])
        assert types[path] == rows.loc[path, "defect_type"]
        expected = read_row_mask(rows.loc[path].to_dict() | {"image_path": path})
        assert np.array_equal(mask.numpy().astype(bool), expected)
        assert image.shape == (3, 48, 64)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_image_size_resizes_images_and_masks(synthetic: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, table = synthetic
    datamodule = to_anomalib_datamodule(table, image_size=(32, 40), eval_batch_size=4, mask_cache_dir=tmp_path)
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape[1:] == (3, 32, 40)
    assert batch.gt_mask.shape[1:] == (32, 40)


def test_mvtec_datamodule_reads_the_synthetic_layout(synthetic: tuple[Path, pd.DataFrame]) -> None:
    root, table = synthetic
    datamodule = mvtec_datamodule(root, "washer", eval_batch_size=32)
    datamodule.setup()
    test = all_batches(datamodule.test_dataloader())
    assert sorted(test["image_path"]) == sorted(table.loc[table["split"] == "test", "image_path"])
    rows = table.set_index("image_path")
    for path, label, mask in zip(test["image_path"], test["gt_label"], test["gt_mask"], strict=True):
        assert label == (not rows.loc[path, "is_normal"])
        assert int(mask.sum()) == int(read_row_mask(rows.loc[path].to_dict() | {"image_path": path}).sum())


def test_non_binary_masks_are_binarised_for_anomalib(mtd_root: Path, tmp_path: Path) -> None:
    table = load_mtd(mtd_root)
    row = table[~table["is_normal"]].iloc[0]
    # anomalib would read the 1..127 halo of the source mask as defect:
    assert int(anomalib_read_mask(row["mask_path"], as_tensor=True).sum()) == 64
    cached = anomalib_mask_path(row, tmp_path)
    assert Path(cached).parent == tmp_path
    assert np.array_equal(anomalib_read_mask(cached, as_tensor=True).numpy().astype(bool), read_row_mask(row))
    assert int(read_row_mask(row).sum()) == 16
    assert anomalib_mask_path(row, tmp_path) == cached  # reused, not rewritten


def test_boxes_are_rasterised(neu_root: Path, tmp_path: Path) -> None:
    table = load_neu_det(neu_root)
    samples = to_anomalib_samples(table, mask_cache_dir=tmp_path)
    for (_, row), mask_path in zip(table.iterrows(), samples["mask_path"], strict=True):
        anomalib_mask = anomalib_read_mask(mask_path, as_tensor=True).numpy().astype(bool)
        assert np.array_equal(anomalib_mask, read_row_mask(row))
    assert anomalib_read_mask(samples["mask_path"].iloc[0]).shape == (16, 20)


def test_no_normal_test_image_keeps_the_train_set(neu_root: Path, tmp_path: Path) -> None:
    table = load_neu_det(neu_root)
    source = Path(table["image_path"].iloc[0]).read_bytes()
    normal = []
    for index in range(10):
        path = tmp_path / f"n{index}.jpg"
        path.write_bytes(source)
        normal.append({"image_path": path, "defect_type": "good", "is_normal": True, "split": "train"})
    both = make_sample_table([*normal, *table.to_dict("records")])
    datamodule = to_anomalib_datamodule(both, mask_cache_dir=tmp_path / "cache")
    datamodule.setup()
    # anomalib's default would move 20% of the train images into the test set here.
    assert len(datamodule.train_data) == 10
    assert len(datamodule.test_data) == len(table)


def test_rejections(synthetic: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, table = synthetic
    defect_in_train = table.copy()
    defect_in_train.loc[(~defect_in_train["is_normal"]).idxmax(), "split"] = "train"
    with pytest.raises(ValueError, match="split 'train'"):
        to_anomalib_samples(defect_in_train, mask_cache_dir=tmp_path)
    half_masked = table.copy()
    half_masked.loc[(~half_masked["is_normal"]).idxmax(), "mask_path"] = None
    with pytest.raises(ValueError, match="all defects or none"):
        to_anomalib_samples(half_masked, mask_cache_dir=tmp_path)
    unmasked = table.assign(mask_path=None)
    samples = to_anomalib_samples(unmasked, mask_cache_dir=tmp_path)
    assert (samples["mask_path"] == "").all()
    datamodule = to_anomalib_datamodule(unmasked, eval_batch_size=64, mask_cache_dir=tmp_path)
    datamodule.setup()
    assert str(datamodule.task.value) == "classification"
    assert torch.equal(
        next(iter(datamodule.test_dataloader())).gt_label.sort().values,
        torch.tensor(sorted(~table.loc[table["split"] == "test", "is_normal"].to_numpy())),
    )


@pytest.mark.dataset
@needs_mtd
def test_real_mtd_datamodule(tmp_path: Path) -> None:
    table = load_mtd(MTD_ROOT)
    datamodule = to_anomalib_datamodule(table, "mtd", image_size=64, eval_batch_size=8, mask_cache_dir=tmp_path)
    datamodule.setup()
    assert len(datamodule.train_data) == 762
    assert len(datamodule.test_data) == 582
    samples = datamodule.test_data.samples
    assert (samples["label_index"] == 1).sum() == 392
    cached = samples[samples["mask_path"].str.startswith(str(tmp_path))]
    assert len(cached) > 0
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape == (8, 3, 64, 64)
    assert batch.gt_mask.shape == (8, 64, 64)


def test_the_default_mask_cache_cannot_shadow_the_package(tmp_path, monkeypatch):
    """Python imports a folder named like the package from the working directory: the cache must not be one."""
    import subprocess
    import sys

    from anomalib_ncd.data.mask_cache import default_mask_cache_dir

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    cache = default_mask_cache_dir()
    cache.mkdir(parents=True)
    assert cache.is_relative_to(tmp_path)
    found = subprocess.run(
        [sys.executable, "-c", "import anomalib_ncd.data.mask_cache"], cwd=tmp_path, capture_output=True, check=False
    )
    assert found.returncode == 0, found.stderr.decode()
