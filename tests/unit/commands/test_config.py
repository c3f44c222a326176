"""config.yaml: written from resolved arguments, parsed back into the same arguments."""

from anomalib_ncd.commands.config import config_yaml, load_arguments, plain
from anomalib_ncd.commands.detector_maps import DetectorSettings
from anomalib_ncd.commands.discover import discover
from anomalib_ncd.discovery.lightning_model import TrainingSettings
from anomalib_ncd.regions.mebin import MEBin


def test_plain_values():
    assert plain(TrainingSettings(epochs=3))["epochs"] == 3
    mebin = plain(MEBin(step=8))
    assert mebin["class_path"] == "anomalib_ncd.regions.mebin.MEBin"
    assert mebin["init_args"]["step"] == 8


def test_round_trip_through_the_discover_signature(tmp_path):
    arguments = {
        "data": "somewhere",
        "detector": DetectorSettings(maps="maps", max_train_images=10),
        "n_novel_classes": 4,
        "mebin": MEBin(step=8, min_interval_len=3),
        "training": TrainingSettings(epochs=7, lr=0.02),
        "seed": 3,
    }
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(arguments))
    loaded = load_arguments(discover, path)
    assert loaded["data"] == "somewhere"
    assert loaded["detector"] == DetectorSettings(maps="maps", max_train_images=10)
    assert loaded["n_novel_classes"] == 4
    assert isinstance(loaded["mebin"], MEBin)
    assert (loaded["mebin"].step, loaded["mebin"].min_interval_len) == (8, 3)
    assert loaded["training"] == TrainingSettings(epochs=7, lr=0.02)
    assert loaded["seed"] == 3
    assert loaded["backbone"] == "mobilenetv2_100.tv_in1k"  # defaults fill what the file leaves out
