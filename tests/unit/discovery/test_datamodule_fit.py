"""Training on an anomalib datamodule: defect types of anomalib's datamodules, the loader swap, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from anomalib_ncd.data import SyntheticDefects, generate_synthetic_dataset
from anomalib_ncd.discovery.datamodule_fit import defect_types_of, swap_back_train_loader, swap_in_train_loader
from anomalib_ncd.discovery.lightning_model import AnomalyNCD

CATEGORY = "brick"


@pytest.fixture(scope="module")
def mvtec_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mvtec_layout")
    generate_synthetic_dataset(root, CATEGORY, image_size=(32, 48), n_per_type=2, n_train_good=3, n_test_good=2)
    return root


def test_mvtec_ad_folders_are_the_defect_types(mvtec_layout: Path) -> None:
    from anomalib.data import MVTecAD

    datamodule = MVTecAD(root=mvtec_layout, category=CATEGORY)
    datamodule.setup()
    types = defect_types_of(datamodule)
    assert len(types) == 2 + 4 * 2
    assert {Path(path).parent.name for path in types} == set(types.values())
    assert set(types.values()) == {"good", "crack", "hole", "scratch", "stain"}


def test_our_datamodules_give_their_sample_tables_types(tmp_path: Path) -> None:
    datamodule = SyntheticDefects(
        root=tmp_path, category=CATEGORY, image_size=(32, 48), n_per_type=2, n_train_good=3, n_test_good=2
    )
    datamodule.setup()
    types = defect_types_of(datamodule)
    test_paths = {str(path) for path in datamodule.test_data.samples["image_path"]}
    assert test_paths <= set(types)
    assert {types[path] for path in test_paths} == {"good", "crack", "hole", "scratch", "stain"}


def test_a_folder_datamodule_has_no_defect_types(mvtec_layout: Path) -> None:
    """anomalib's ``Folder`` says normal or abnormal only: nothing to score discovered classes against."""
    from anomalib.data import Folder

    datamodule = Folder(
        name="folder",
        root=mvtec_layout / CATEGORY,
        normal_dir="train/good",
        abnormal_dir="test/crack",
        normal_test_dir="test/good",
    )
    datamodule.setup()
    assert defect_types_of(datamodule) == {}


def test_the_swapped_loader_is_used_and_the_datamodule_is_restored(mvtec_layout: Path) -> None:
    from anomalib.data import MVTecAD

    datamodule = MVTecAD(root=mvtec_layout, category=CATEGORY)
    datamodule.setup()
    loader = DataLoader(list(range(3)))
    swap_in_train_loader(datamodule, lambda: loader)
    assert datamodule.train_dataloader() is loader
    swap_back_train_loader(datamodule)
    own = datamodule.train_dataloader()
    assert own is not loader and len(own.dataset) == 3  # the normal training images again
    swap_back_train_loader(datamodule)  # a second call is a no-op


def test_fitting_on_a_datamodule_without_a_detector_says_what_is_missing(mvtec_layout: Path) -> None:
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    model = AnomalyNCD(n_novel_classes=3, backbone="mobilenetv2_100", pretrained=False, views={"n_views": 2})
    datamodule = MVTecAD(root=mvtec_layout, category=CATEGORY)
    engine = Engine(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=mvtec_layout
    )
    with pytest.raises(ValueError, match=r"--model\.detector"):
        engine.fit(model, datamodule=datamodule)
    assert "train_dataloader" not in vars(datamodule)


def test_the_detector_checkpoint_is_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = AnomalyNCD(n_novel_classes=2, backbone="mobilenetv2_100", pretrained=False, detector="results/model.ckpt")
    assert model.detector_checkpoint == str(tmp_path / "results" / "model.ckpt")
    assert model.hparams["detector"] == "results/model.ckpt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _ = model.detector  # read on first use, and a missing file is named
