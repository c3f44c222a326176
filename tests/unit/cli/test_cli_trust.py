"""Trust at the edges: checkpoints are read as data, never run; bad ones fail first, in one line, exit 2."""

import fractions
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_ncd.checkpoints import UnsafeCheckpointError, read_checkpoint
from anomalib_ncd.cli import main
from anomalib_ncd.results import read_run_state, write_run_state
from tests.unit.cli.test_cli_discover import FAST, discover_args, one_line_error

CHECKPOINT = Path("weights") / "lightning" / "model.ckpt"


class Plant:
    """A pickled object whose unpickling creates a file: what a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def planted(source: Path, target: Path, payload: object) -> Path:
    """A copy of a real checkpoint with ``payload`` among its hyper-parameters."""
    content = read_checkpoint(source)
    content["hyper_parameters"]["payload"] = payload
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, target)
    return target


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A finished discover run on saved maps, and a Patchcore trained by anomalib's Engine on the same set."""
    from anomalib_ncd.data import generate_synthetic_dataset, to_anomalib_datamodule
    from anomalib_ncd.detector import make_patchcore, train_detector
    from tests.unit.cli.conftest import SHAPE, write_detector_like_maps

    root = tmp_path_factory.mktemp("trust")
    table = generate_synthetic_dataset(
        root / "data", "brick", image_size=SHAPE, n_train_good=4, n_test_good=3, n_per_type=3, seed=1
    )
    maps = write_detector_like_maps(table, root / "maps")
    torch.set_num_threads(1)
    assert main(discover_args(root / "data" / "brick", maps, root / "out")) == 0
    datamodule = to_anomalib_datamodule(table, "synthetic", category="brick", image_size=(64, 64))
    patchcore = make_patchcore("mobilenetv2_100", pre_trained=False, coreset_sampling_ratio=0.1)
    engine = train_detector(patchcore, datamodule, root_dir=root / "results", max_epochs=1, accelerator="cpu")
    return {
        "root": root,
        "data": root / "data" / "brick",
        "maps": maps,
        "run": (root / "out" / "NCD" / "data" / "brick" / "latest").resolve(),
        "detector": Path(engine.trainer.checkpoint_callback.best_model_path),
    }


def copied_run(scene, tmp_path, **state) -> Path:
    """A copy of the scene's run, with ``state`` written into its run.json."""
    run = tmp_path / "NCD" / "data" / "brick" / "v0"
    shutil.copytree(scene["run"], run)
    if state:
        write_run_state(run, **state)
    return run


def test_the_planted_pickle_runs_code_when_loaded_in_full(scene, tmp_path):
    """The test's malicious checkpoint is real: loaded the old way, it creates its marker."""
    marker = tmp_path / "marker"
    evil = planted(scene["run"] / CHECKPOINT, tmp_path / "evil.ckpt", Plant(marker))
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["predict", "add"])
def test_a_planted_run_checkpoint_runs_nothing(scene, tmp_path, capsys, command):
    marker = tmp_path / "marker"
    run = copied_run(scene, tmp_path)
    planted(scene["run"] / CHECKPOINT, run / CHECKPOINT, Plant(marker))
    images = scene["data"] / "test"
    assert main([command, "--run", str(run), "--images", str(images), "--maps", str(scene["maps"])]) == 2
    assert not marker.exists()
    error = one_line_error(capsys)
    assert "io.open" in error
    assert "could run code" in error
    assert "not written by anomalib-ncd" in error


def test_load_from_checkpoint_runs_nothing(scene, tmp_path):
    from anomalib_ncd import AnomalyNCD

    marker = tmp_path / "marker"
    evil = planted(scene["run"] / CHECKPOINT, tmp_path / "evil.ckpt", Plant(marker))
    with pytest.raises(UnsafeCheckpointError, match="io.open"):
        AnomalyNCD.load_from_checkpoint(evil)
    with pytest.raises(ValueError, match="weights_only=False"):
        AnomalyNCD.load_from_checkpoint(evil, weights_only=False)
    assert not marker.exists()


def test_resuming_from_a_planted_checkpoint_runs_nothing(scene, tmp_path, capsys):
    marker = tmp_path / "marker"
    run = copied_run(scene, tmp_path, stage="training", complete=False)  # as if interrupted
    planted(scene["run"] / CHECKPOINT, run / CHECKPOINT, Plant(marker))
    assert main(["discover", "--resume", str(run)]) == 2
    assert not marker.exists()
    error = one_line_error(capsys)
    assert "io.open" in error


def test_discover_with_a_planted_detector_checkpoint_runs_nothing(scene, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = planted(scene["detector"], tmp_path / "results" / "Patchcore" / "x" / CHECKPOINT, Plant(marker))
    output = tmp_path / "o"
    arguments = ["discover", "--data", str(scene["data"]), "--detector.checkpoint", str(evil), *FAST]
    assert main([*arguments, "--output", str(output)]) == 2
    assert not marker.exists()
    error = one_line_error(capsys)
    assert "io.open" in error
    assert "--detector.trust_checkpoint true" in error
    assert not (output / "NCD").exists()  # refused before a run folder was made


def test_predict_with_a_planted_recorded_detector_runs_nothing(scene, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = planted(scene["detector"], tmp_path / "evil" / "model.ckpt", Plant(marker))
    run = copied_run(scene, tmp_path, detector_checkpoint=str(evil), detector_model="Patchcore")
    assert main(["predict", "--run", str(run), "--images", str(scene["data"] / "test" / "crack")]) == 2
    assert not marker.exists()
    assert "io.open" in one_line_error(capsys)


def test_a_detector_needing_other_types_loads_only_when_trusted(scene, tmp_path, capsys):
    from anomalib.models import Patchcore

    from anomalib_ncd.commands.detector_maps import DetectorSettings
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    odd = planted(scene["detector"], tmp_path / "results" / "Patchcore" / "y" / CHECKPOINT, fractions.Fraction(1, 3))
    with pytest.raises(UnsafeCheckpointError, match="fractions.Fraction"):
        load_anomalib_model(odd)
    arguments = ["discover", "--data", str(scene["data"]), "--detector.checkpoint", str(odd), *FAST]
    assert main([*arguments, "--output", str(tmp_path / "o")]) == 2
    assert "needs fractions.Fraction to load" in one_line_error(capsys)
    assert isinstance(load_anomalib_model(odd, trust_checkpoint=True), Patchcore)
    DetectorSettings(checkpoint=str(odd), trust_checkpoint=True).check()


def test_the_trust_option_is_documented_with_its_risk(capsys):
    with pytest.raises(SystemExit):
        main(["discover", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--detector.trust_checkpoint" in help_text
    assert "can run arbitrary code" in help_text
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--detector.trust_checkpoint" in help_text
    assert "--detector.model" in help_text


def test_our_checkpoints_hold_only_tensors_and_plain_data(scene, tmp_path):
    from anomalib_ncd import AnomalyNCD, MEBin
    from anomalib_ncd.pipeline.checkpoint import save_model_checkpoint

    trained = scene["run"] / CHECKPOINT  # written by the Trainer after each epoch
    assert torch.serialization.get_unsafe_globals_in_checkpoint(trained) == []
    model = AnomalyNCD.load_from_checkpoint(trained)
    assert model.mebin is not None
    # numpy values given by a caller become plain numbers in the checkpoint
    model.mebin = MEBin(step=np.int64(4), kernel_size=np.int64(6)).set_range(model.mebin.min_th_, 1.0)
    model.hparams["fusion_temperature"] = np.float64(50.0)
    rewritten = save_model_checkpoint(model, tmp_path / "rewritten.ckpt")  # as `add` writes it
    assert torch.serialization.get_unsafe_globals_in_checkpoint(rewritten) == []
    torch.load(rewritten, map_location="cpu", weights_only=True)  # torch's defaults, no allow-list at all
    again = AnomalyNCD.load_from_checkpoint(rewritten)
    assert again.class_names == model.class_names
    assert (again.mebin.min_th_, again.mebin.max_th_) == (model.mebin.min_th_, model.mebin.max_th_)
    assert again.mebin.step == 4
    assert again.fusion_temperature == 50.0


def test_a_real_patchcore_checkpoint_still_loads(scene):
    from anomalib.models import Patchcore

    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    # Engine.fit's checkpoint holds one anomalib enum (PrecisionType): on anomalib's allow-list
    assert torch.serialization.get_unsafe_globals_in_checkpoint(scene["detector"]) == ["anomalib.PrecisionType"]
    model = load_anomalib_model(scene["detector"])
    assert isinstance(model, Patchcore)
    assert model.model.memory_bank.shape[0] > 0


@pytest.mark.parametrize("command", ["predict", "add"])
def test_a_corrupt_run_checkpoint_fails_first_in_one_line(scene, tmp_path, capsys, command):
    run = copied_run(scene, tmp_path, detector_checkpoint=str(scene["detector"]), detector_model="Patchcore")
    whole = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(whole[: len(whole) // 2])
    images = str(scene["data"] / "test" / "crack")
    assert main([command, "--run", str(run), "--images", images]) == 2
    error = one_line_error(capsys)
    assert str(run / CHECKPOINT) in error
    assert "corrupt or truncated" in error
    # checked before the detector: with a missing detector, the run checkpoint is still what is named
    write_run_state(run, detector_checkpoint=str(tmp_path / "missing.ckpt"))
    assert main([command, "--run", str(run), "--images", images]) == 2
    assert "corrupt or truncated" in one_line_error(capsys)


@pytest.mark.parametrize("content", [{"a": 1}, [1, 2]])
def test_a_plain_torch_file_as_detector_checkpoint_says_so(scene, tmp_path, capsys, content):
    plain = tmp_path / "results" / "Patchcore" / "z" / CHECKPOINT
    plain.parent.mkdir(parents=True)
    torch.save(content, plain)
    arguments = ["discover", "--data", str(scene["data"]), "--detector.checkpoint", str(plain), *FAST]
    assert main([*arguments, "--output", str(tmp_path / "o")]) == 2
    error = one_line_error(capsys)
    assert "is not a checkpoint of an anomalib Patchcore model" in error
    expected = "this file holds 'a'" if isinstance(content, dict) else "it holds a list"
    assert expected in error
    assert "Lightning checkpoint" in error


def test_predict_and_add_use_the_recorded_detector_class(scene, tmp_path, capsys):
    """A detector checkpoint outside anomalib's results/<Model>/ layout: discover records its class."""
    detector = tmp_path / "plain" / "detector.ckpt"
    detector.parent.mkdir()
    shutil.copy(scene["detector"], detector)
    output = tmp_path / "out"
    arguments = [
        *discover_args(scene["data"], scene["maps"], output, "--n_novel_classes", "2", "--training.epochs", "2"),
        "--detector.checkpoint", str(detector),
        "--detector.model", "Patchcore",
    ]  # fmt: skip
    arguments.remove("--detector.maps")
    arguments.remove(str(scene["maps"]))
    assert main(arguments) == 0
    run = (output / "NCD" / "data" / "brick" / "latest").resolve()
    assert read_run_state(run)["detector_model"] == "Patchcore"
    crack = str(scene["data"] / "test" / "crack")
    assert main(["predict", "--run", str(run), "--images", crack, "--output", str(tmp_path / "p")]) == 0
    assert main(["add", "--run", str(run), "--images", crack]) == 0
    added = (run.parent / "latest").resolve()
    assert read_run_state(added)["detector_model"] == "Patchcore"
    # a run that does not record the class (made before it was recorded): the explicit option
    state = json.loads((run / "run.json").read_text())
    del state["detector_model"]
    (run / "run.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--images", crack, "--output", str(tmp_path / "q")]) == 2
    assert "cannot tell the model class" in one_line_error(capsys)
    override = ["--detector.model", "Patchcore", "--output", str(tmp_path / "q")]
    assert main(["predict", "--run", str(run), "--images", crack, *override]) == 0
