"""Grounded-SAM object prior: GroundingDINO finds the prompt's boxes, SAM turns them into masks.

The object mask of an image is the union of SAM's masks for every box GroundingDINO finds for the
text prompt (e.g. ``"bottle"``). Substitutes, each logged as a warning and counted in
:attr:`GroundedSamPrior.fallback_counts`, never silent:

* no box above the thresholds (``"no_box"``): the whole image;
* boxes, but SAM's masks are all empty (``"empty_sam_mask"``): the boxes themselves.

Everything is loaded from local files only: the SAM checkpoint, GroundingDINO's config and
checkpoint and a local ``bert-base-uncased`` folder (tokenizer and text-encoder architecture, loaded
with ``local_files_only=True``: nothing asks a model hub). Weights are read with
``torch.load(map_location="cpu", weights_only=True)`` (never as code) and then moved to the device.

GroundingDINO 0.4.0 wraps BERT with internals that recent ``transformers`` releases removed
(``get_head_mask`` ...). :func:`load_groundingdino` therefore builds the model with its own BERT
loader and text-encoder adapter (same sub-module names, so checkpoints load unchanged), which runs on
``transformers`` 4 and 5 alike.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from anomalib_ncd.priors.base import ObjectPrior, ObjectPriorError, PriorMask, as_rgb, whole_mask
from anomalib_ncd.priors.settings import SAM_MODEL_TYPES, ObjectPriorSettings

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'pip install "anomalib-ncd[sam]" (or, without touching opencv/torch: the optional object-prior step of '
    "scripts/install.sh, which installs segment-anything and groundingdino-py with --no-deps plus their "
    "runtime dependencies transformers, addict, yapf and pycocotools)"
)
#: modules the grounded_sam prior imports, with the distribution that provides each
REQUIRED_MODULES = {
    "segment_anything": "segment-anything",
    "groundingdino": "groundingdino-py",
    "transformers": "transformers",
    "addict": "addict",
    "yapf": "yapf",
    "pycocotools": "pycocotools",
}
NO_BOX = "no_box"
EMPTY_SAM_MASK = "empty_sam_mask"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BERT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_BERT_VOCAB_FILES = ("vocab.txt", "tokenizer.json")
_SPECIAL_TOKENS = ("[CLS]", "[SEP]", ".", "?")  # GroundingDINO's separators, never a word of the prompt


class BoxDetector(Protocol):
    """Finds the boxes of a text prompt in an image."""

    def detect(self, image: np.ndarray, prompt: str) -> np.ndarray:
        """Boxes of ``prompt`` in ``image``.

        Args:
            image: ``uint8`` ``(H, W, 3)`` RGB.
            prompt: the text prompt.

        Returns:
            ``(N, 4)`` float ``x0, y0, x1, y1`` in pixels (``N`` may be 0).
        """
        ...


class BoxSegmenter(Protocol):
    """Turns boxes into one object mask."""

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Union of the masks of ``boxes``.

        Args:
            image: ``uint8`` ``(H, W, 3)`` RGB.
            boxes: ``(N, 4)`` ``x0, y0, x1, y1`` in pixels, ``N >= 1``.

        Returns:
            ``(H, W)`` bool.
        """
        ...


def require_sam_extra() -> None:
    """Import the optional modules the grounded_sam prior needs.

    Raises:
        ObjectPriorError: naming the missing modules and the install command.
    """
    missing = []
    for module, distribution in REQUIRED_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing.append(f"{module} (package {distribution}: {error})")
    if missing:
        msg = f"the grounded_sam object prior needs the 'sam' extra; missing: {'; '.join(missing)}. "
        msg += f"Install: {INSTALL_HINT}"
        raise ObjectPriorError(msg)


def resolve_device(device: str) -> torch.device:
    """The torch device for a settings' ``device`` (``auto``: the GPU when there is one).

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device.

    Raises:
        ObjectPriorError: when a GPU is asked for but none (or not that one) is visible.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"object prior device {device!r}: no CUDA GPU is visible; set device to 'auto' or 'cpu'"
            raise ObjectPriorError(msg)
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            msg = f"object prior device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            raise ObjectPriorError(msg)
    return torch.device(device)


def load_weights_file(path: str | Path, setting: str) -> Any:
    """Read a local ``.pth`` file onto the CPU as data: it can never run code.

    The file is read with ``torch.load(weights_only=True)`` (:func:`anomalib_ncd.checkpoints.read_checkpoint`):
    tensors, plain data and, for training scripts that save their arguments beside the weights,
    ``argparse.Namespace``. A file that needs any other type is refused, naming it.

    Args:
        path: the file.
        setting: the settings field that named it (for messages).

    Returns:
        What the file holds.

    Raises:
        ObjectPriorError: when the file is missing, unreadable or needs types outside the allow-list.
    """
    from anomalib_ncd.checkpoints import CheckpointError, UnsafeCheckpointError, read_checkpoint

    path = Path(path)
    if not path.is_file():
        msg = f"object prior {setting}: file not found: {path}"
        raise ObjectPriorError(msg)
    advice = (
        "the published SAM and GroundingDINO checkpoints hold tensors only: download the file again from "
        "its official source, or save just its state dict"
    )
    try:
        return read_checkpoint(path, extra_types=(argparse.Namespace,), advice=advice, what=setting)
    except UnsafeCheckpointError as error:
        msg = f"object prior {setting}: {error}"
        raise ObjectPriorError(msg) from error
    except CheckpointError as error:
        msg = f"object prior {setting}: cannot read {path} ({error}); download the file again"
        raise ObjectPriorError(msg) from error


def load_sam(
    model_type: str = "vit_h", checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> Sam:
    """Build a SAM model, with a checkpoint's weights or randomly initialised.

    ``sam_model_registry[model_type](checkpoint=None)`` builds the architecture with random weights;
    the checkpoint is then read here as data (:func:`load_weights_file`) and loaded strictly.

    Args:
        model_type: ``vit_h``, ``vit_l`` or ``vit_b``.
        checkpoint: a segment-anything checkpoint; ``None``: random weights (tests only: the masks
            mean nothing).
        device: where the model runs.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ObjectPriorError: for an unknown model type, a missing or unreadable checkpoint, or one that
            does not fit ``model_type``.
    """
    if model_type not in SAM_MODEL_TYPES:
        msg = f"sam_model_type must be one of {SAM_MODEL_TYPES}, got {model_type!r}"
        raise ObjectPriorError(msg)
    from segment_anything import sam_model_registry

    model = sam_model_registry[model_type](checkpoint=None)
    if checkpoint is None:
        logger.warning("SAM %s built with random weights (no checkpoint): its masks are meaningless", model_type)
    else:
        state = load_weights_file(checkpoint, "sam_checkpoint")
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            msg = (
                f"object prior sam_checkpoint {checkpoint} does not fit sam_model_type {model_type!r} "
                f"(sam_vit_h_4b8939.pth is vit_h, sam_vit_l_0b3195.pth vit_l, sam_vit_b_01ec64.pth vit_b): "
                f"{str(error)[:300]}"
            )
            raise ObjectPriorError(msg) from error
    return model.to(device).eval()


class SamBoxSegmenter:
    """SAM's masks of a set of boxes, united (``segment_anything.SamPredictor``).

    Args:
        sam: a SAM model (:func:`load_sam`).
    """

    def __init__(self, sam: Sam) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam)

    @torch.no_grad()
    def segment(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Union of SAM's single-mask outputs for every box.

        Args:
            image: ``uint8`` ``(H, W, 3)`` RGB.
            boxes: ``(N, 4)`` ``x0, y0, x1, y1`` in pixels.

        Returns:
            ``(H, W)`` bool.
        """
        height, width = image.shape[:2]
        self.predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
        try:
            prompts = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.predictor.device)
            prompts = self.predictor.transform.apply_boxes_torch(prompts.reshape(-1, 4), (height, width))
            masks, _, _ = self.predictor.predict_torch(
                point_coords=None, point_labels=None, boxes=prompts, multimask_output=False
            )
        finally:
            self.predictor.reset_image()
        return masks.any(dim=0)[0].cpu().numpy().astype(bool)


class _TextEncoder(nn.Module):
    """BERT run the way GroundingDINO needs, with public ``transformers`` pieces only.

    GroundingDINO passes a ``(B, L, L)`` self-attention mask (each phrase attends to itself) and its
    own position ids. The sub-modules keep BERT's names (``embeddings``, ``encoder``, ``pooler``), so
    a GroundingDINO checkpoint's ``bert.*`` weights load unchanged.
    """

    def __init__(self, bert_model: Any) -> None:  # a transformers BertModel (an optional dependency)
        super().__init__()
        self.config = bert_model.config
        self.embeddings = bert_model.embeddings
        self.encoder = bert_model.encoder
        self.pooler = bert_model.pooler

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        """Encode the tokens.

        Args:
            input_ids: ``(B, L)`` token ids.
            attention_mask: ``(B, L)`` or ``(B, L, L)``, true/1 where attention is allowed.
            token_type_ids: ``(B, L)``, or ``None`` (zeros).
            position_ids: ``(B, L)``, or ``None`` (0, 1, 2 ...).

        Returns:
            ``{"last_hidden_state": (B, L, hidden)}``.
        """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.dim() == 2:
            attention_mask = attention_mask[:, None, :].expand(-1, input_ids.shape[1], -1)
        allowed = attention_mask.bool()[:, None]  # (B, 1, L, L), broadcast over heads
        additive = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device)
        additive = additive.masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        output = self.encoder(hidden, attention_mask=additive)
        return {"last_hidden_state": output[0]}


def check_bert_folder(bert_path: str | Path | None) -> list[str]:
    """What is missing from a local ``bert-base-uncased`` folder.

    Args:
        bert_path: the folder, or ``None``.

    Returns:
        Problems, one per missing item (empty when the folder is usable).
    """
    if bert_path is None:
        return ["bert_path is not set (a local bert-base-uncased folder: config.json, vocab.txt, weights)"]
    folder = Path(bert_path)
    if not folder.is_dir():
        return [f"bert_path folder not found: {folder}"]
    problems = []
    if not (folder / "config.json").is_file():
        problems.append(f"bert_path {folder} has no config.json")
    if not any((folder / name).is_file() for name in _BERT_VOCAB_FILES):
        problems.append(f"bert_path {folder} has no tokenizer vocabulary ({' or '.join(_BERT_VOCAB_FILES)})")
    return problems


def _load_bert(bert_path: str | Path) -> tuple[Any, nn.Module]:
    """Tokenizer and BERT model from a local folder, never from a hub.

    The folder's weights are loaded when it has them; otherwise the architecture is built from its
    ``config.json`` (the GroundingDINO checkpoint carries its own fine-tuned BERT weights).
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    problems = check_bert_folder(bert_path)
    if problems:
        raise ObjectPriorError("; ".join(problems))
    folder = Path(bert_path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if any((folder / name).is_file() for name in _BERT_WEIGHT_FILES):
        model = BertModel.from_pretrained(str(folder), local_files_only=True)
    else:
        logger.info("bert_path %s has no weights: BERT built from its config.json", folder)
        model = BertModel(BertConfig.from_pretrained(str(folder), local_files_only=True))
    return tokenizer, model


@contextlib.contextmanager
def _local_bert(bert_path: str | Path) -> Iterator[None]:
    """Make GroundingDINO's model constructor use the local BERT and the text-encoder adapter."""
    from groundingdino.models.GroundingDINO import groundingdino as gd_model
    from groundingdino.util import get_tokenlizer

    tokenizer, bert = _load_bert(bert_path)
    saved = (get_tokenlizer.get_tokenlizer, get_tokenlizer.get_pretrained_language_model, gd_model.BertModelWarper)
    get_tokenlizer.get_tokenlizer = lambda _name: tokenizer
    get_tokenlizer.get_pretrained_language_model = lambda _name: bert
    gd_model.BertModelWarper = _TextEncoder
    try:
        yield
    finally:
        get_tokenlizer.get_tokenlizer, get_tokenlizer.get_pretrained_language_model, gd_model.BertModelWarper = saved


def load_groundingdino(
    config: str | Path,
    bert_path: str | Path,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build GroundingDINO from its python config, with a checkpoint's weights or randomly initialised.

    Args:
        config: GroundingDINO's config file (e.g. ``GroundingDINO_SwinT_OGC.py``).
        bert_path: local ``bert-base-uncased`` folder (tokenizer and text-encoder architecture).
        checkpoint: a GroundingDINO checkpoint (``{"model": state_dict}``); ``None``: random weights
            (tests only).
        device: where the model runs.
        overrides: config entries to replace (e.g. fewer layers in tests).

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ObjectPriorError: for missing or unreadable files, or a checkpoint that does not fit the config.
    """
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    config = Path(config)
    if not config.is_file():
        msg = f"object prior groundingdino_config: file not found: {config}"
        raise ObjectPriorError(msg)
    try:
        args = SLConfig.fromfile(str(config))
    except Exception as error:  # the config is python code: any error means a wrong file
        msg = f"object prior groundingdino_config: cannot read {config} ({error}); use GroundingDINO_SwinT_OGC.py"
        raise ObjectPriorError(msg) from error
    args.text_encoder_type = str(bert_path)
    args.use_checkpoint = False  # gradient checkpointing: training only
    args.use_transformer_ckpt = False
    for key, value in (overrides or {}).items():
        setattr(args, key, value)
    with _local_bert(bert_path):
        model = build_model(args)
    if checkpoint is None:
        logger.warning("GroundingDINO built with random weights (no checkpoint): its boxes are meaningless")
    else:
        _load_groundingdino_weights(model, checkpoint)
    return model.to(device).eval()


def _load_groundingdino_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load a GroundingDINO checkpoint (``{"model": ...}``, ``module.`` prefixes removed), like upstream."""
    content = load_weights_file(checkpoint, "groundingdino_checkpoint")
    state = content.get("model", content) if isinstance(content, Mapping) else None
    if not isinstance(state, Mapping):
        msg = f"object prior groundingdino_checkpoint {checkpoint} holds no state dict"
        raise ObjectPriorError(msg)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    own = model.state_dict()
    fitting = {
        key: value
        for key, value in state.items()
        if key in own and isinstance(value, torch.Tensor) and own[key].shape == value.shape
    }
    misfits = [key for key in state if key in own and key not in fitting]
    if not fitting or misfits:
        msg = (
            f"object prior groundingdino_checkpoint {checkpoint} does not fit groundingdino_config "
            f"({len(fitting)} of {len(own)} tensors fit; shape mismatches: {misfits[:5]})"
        )
        raise ObjectPriorError(msg)
    result = model.load_state_dict(fitting, strict=False)
    if result.missing_keys:
        logger.warning(
            "GroundingDINO checkpoint %s lacks %d tensor(s) (e.g. %s): they keep their initial values",
            checkpoint,
            len(result.missing_keys),
            result.missing_keys[:3],
        )
    ignored = [key for key in state if key not in own]
    if ignored:
        logger.debug("GroundingDINO checkpoint %s: %d tensor(s) ignored: %s", checkpoint, len(ignored), ignored[:5])


def caption_of(prompt: str) -> str:
    """GroundingDINO's caption for a prompt: lower case, ending with a period.

    Args:
        prompt: the text prompt.

    Returns:
        The caption.
    """
    caption = prompt.lower().strip()
    return caption if caption.endswith(".") else caption + "."


class GroundingDinoDetector:
    """Boxes of a text prompt, as in GroundingDINO's own inference (short side 800, long side <= 1333).

    A query gives a box when its highest token probability exceeds ``box_threshold`` (GroundingDINO's
    rule) and at least one word token of the prompt exceeds ``text_threshold`` (the box has a phrase).

    Args:
        model: a GroundingDINO model (:func:`load_groundingdino`).
        box_threshold: box threshold.
        text_threshold: text threshold.
        short_side: the image's short side at the model's input.
        max_side: the longest side at the model's input.
    """

    def __init__(
        self,
        model: nn.Module,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        short_side: int = 800,
        max_side: int = 1333,
    ) -> None:
        self.model = model
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.short_side = short_side
        self.max_side = max_side

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize and normalise an RGB image for the model.

        Args:
            image: ``uint8`` ``(H, W, 3)`` RGB.

        Returns:
            ``(3, h, w)`` float tensor on the model's device.
        """
        from torchvision.transforms.functional import normalize, resize

        height, width = image.shape[:2]
        scale = self.short_side / min(height, width)
        if max(height, width) * scale > self.max_side:
            scale = self.max_side / max(height, width)
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device, torch.float32) / 255.0
        tensor = resize(tensor, size, antialias=True)
        return normalize(tensor, list(IMAGENET_MEAN), list(IMAGENET_STD))

    @torch.no_grad()
    def detect(self, image: np.ndarray, prompt: str) -> np.ndarray:
        """Boxes of ``prompt`` in ``image``.

        Args:
            image: ``uint8`` ``(H, W, 3)`` RGB.
            prompt: the text prompt.

        Returns:
            ``(N, 4)`` float ``x0, y0, x1, y1`` in pixels, clipped to the image.
        """
        height, width = image.shape[:2]
        caption = caption_of(prompt)
        outputs = self.model(self.preprocess(image)[None], captions=[caption])
        probabilities = outputs["pred_logits"][0].sigmoid().float().cpu()  # (queries, max_text_len)
        boxes = outputs["pred_boxes"][0].float().cpu()  # (queries, 4) normalised cx, cy, w, h
        words = self._word_positions(caption, probabilities.shape[1])
        keep = probabilities.max(dim=1).values > self.box_threshold
        if words.numel():
            keep &= probabilities[:, words].max(dim=1).values > self.text_threshold
        else:  # a prompt of separators only has no word to ground
            keep = torch.zeros_like(keep)
        centre_x, centre_y, box_w, box_h = boxes[keep].unbind(dim=1)
        corners = torch.stack(
            [centre_x - box_w / 2, centre_y - box_h / 2, centre_x + box_w / 2, centre_y + box_h / 2], dim=1
        )
        pixels = (corners * torch.tensor([width, height, width, height])).numpy()
        pixels[:, [0, 2]] = pixels[:, [0, 2]].clip(0, width)
        pixels[:, [1, 3]] = pixels[:, [1, 3]].clip(0, height)
        valid = (pixels[:, 2] - pixels[:, 0] >= 1) & (pixels[:, 3] - pixels[:, 1] >= 1)
        return pixels[valid].astype(np.float32).reshape(-1, 4)

    def _word_positions(self, caption: str, length: int) -> torch.Tensor:
        """Token positions of the caption's words (not its separators), below ``length``."""
        tokenizer: Any = self.model.tokenizer  # GroundingDINO's transformers tokenizer (untyped)
        ids = tokenizer(caption)["input_ids"]
        special = set(tokenizer.convert_tokens_to_ids(list(_SPECIAL_TOKENS)))
        return torch.tensor([i for i, token in enumerate(ids) if token not in special and i < length], dtype=torch.long)


def boxes_mask(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """The union of boxes as a mask.

    Args:
        shape: ``(H, W)``.
        boxes: ``(N, 4)`` ``x0, y0, x1, y1`` in pixels.

    Returns:
        ``(H, W)`` bool.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners[:, [0, 2]] = corners[:, [0, 2]].clip(0, width)
    corners[:, [1, 3]] = corners[:, [1, 3]].clip(0, height)
    for x0, y0, x1, y1 in corners:
        mask[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return mask


class GroundedSamPrior(ObjectPrior):
    """Object mask = union of SAM's masks for GroundingDINO's boxes of the prompt.

    No box: the whole image, with a warning, counted in :attr:`no_box_count`. Boxes whose SAM masks
    are all empty: the boxes themselves, with a warning (``fallback_counts["empty_sam_mask"]``).

    Args:
        detector: finds boxes (:class:`GroundingDinoDetector`).
        segmenter: turns boxes into a mask (:class:`SamBoxSegmenter`).
        prompt: the text prompt.
        identity: what identifies the models and their settings, for :meth:`fingerprint`.
    """

    name = "grounded_sam"
    warn_reasons = frozenset({NO_BOX, EMPTY_SAM_MASK})

    def __init__(
        self,
        detector: BoxDetector,
        segmenter: BoxSegmenter,
        prompt: str,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not prompt or not prompt.strip():
            msg = "the grounded_sam object prior needs a non-empty prompt"
            raise ObjectPriorError(msg)
        self.detector = detector
        self.segmenter = segmenter
        self.prompt = prompt
        self.identity = dict(identity or {})

    @property
    def no_box_count(self) -> int:
        """How many images had no box for the prompt (and so got the whole image)."""
        return self.fallback_counts.get(NO_BOX, 0)

    def fingerprint(self) -> str:
        """The prompt, the thresholds and the identity of the weights.

        Returns:
            ``grounded_sam:v1:`` followed by JSON.
        """
        return "grounded_sam:v1:" + json.dumps({"prompt": self.prompt, **self.identity}, sort_keys=True, default=str)

    def compute(self, image: np.ndarray, path: str | Path | None = None) -> PriorMask:
        """Detect, segment, unite; substitutes as described in the class docstring.

        Args:
            image: ``uint8`` ``(H, W)`` or ``(H, W, 3)``.
            path: the image's file, for log messages.

        Returns:
            The mask and the fallback reason, if any.
        """
        rgb = as_rgb(image)
        boxes = np.asarray(self.detector.detect(rgb, self.prompt), dtype=np.float32).reshape(-1, 4)
        if not len(boxes):
            self.record_fallback(NO_BOX, path, f"no box for prompt {self.prompt!r}: using the whole image")
            return PriorMask(whole_mask(rgb), NO_BOX)
        mask = np.asarray(self.segmenter.segment(rgb, boxes), dtype=bool)
        if mask.shape != rgb.shape[:2]:
            msg = f"the segmenter returned a {mask.shape} mask for a {rgb.shape[:2]} image"
            raise RuntimeError(msg)
        if not mask.any():
            self.record_fallback(
                EMPTY_SAM_MASK, path, f"SAM's masks of {len(boxes)} box(es) are empty: using the boxes"
            )
            return PriorMask(boxes_mask(rgb.shape[:2], boxes), EMPTY_SAM_MASK)
        return PriorMask(mask)


def _file_identity(path: str | Path | None) -> str | None:
    """A file's name and size: identifies weights without reading gigabytes."""
    if path is None:
        return None
    path = Path(path)
    return f"{path.name}:{path.stat().st_size}" if path.is_file() else path.name


def missing_weight_settings(settings: ObjectPriorSettings) -> list[str]:
    """Every weight file or folder the grounded_sam prior needs that is not set or not there.

    Args:
        settings: the prior's settings.

    Returns:
        One line per problem, naming the setting and the expected file.
    """
    problems = []
    expected = {
        "sam_checkpoint": f"a segment-anything checkpoint for {settings.sam_model_type}, e.g. sam_vit_h_4b8939.pth",
        "groundingdino_checkpoint": "a GroundingDINO checkpoint, e.g. groundingdino_swint_ogc.pth",
        "groundingdino_config": "GroundingDINO's config file, e.g. GroundingDINO_SwinT_OGC.py",
    }
    for name, what in expected.items():
        value = getattr(settings, name)
        if value is None:
            problems.append(f"{name} is not set ({what})")
        elif not Path(value).is_file():
            problems.append(f"{name} file not found: {value} ({what})")
    problems.extend(check_bert_folder(settings.bert_path))
    return problems


def build_grounded_sam(settings: ObjectPriorSettings, category: str | None = None) -> GroundedSamPrior:
    """Load GroundingDINO and SAM from the settings' local files.

    Args:
        settings: ``kind="grounded_sam"`` settings.
        category: the category name, the prompt when the settings have none.

    Returns:
        The prior (not cached; :func:`anomalib_ncd.priors.build_object_prior` adds the cache).

    Raises:
        ObjectPriorError: for no prompt, a missing extra, missing weight files or an unusable device.
    """
    prompt = settings.with_prompt(category).prompt
    if prompt is None:
        msg = "the grounded_sam object prior needs a prompt: set object_prior.prompt or give the category name"
        raise ObjectPriorError(msg)
    require_sam_extra()
    problems = missing_weight_settings(settings)
    if problems:
        msg = "the grounded_sam object prior cannot find its weights: " + "; ".join(problems)
        msg += ". See docs/object_priors.md for where to download them."
        raise ObjectPriorError(msg)
    # no problem: every path is set
    assert settings.groundingdino_config is not None
    assert settings.bert_path is not None
    device = resolve_device(settings.device)
    if device.type == "cpu":
        logger.warning("grounded_sam object prior runs on the CPU: expect tens of seconds per image")
    detector_model = load_groundingdino(
        settings.groundingdino_config, settings.bert_path, settings.groundingdino_checkpoint, device
    )
    sam = load_sam(settings.sam_model_type, settings.sam_checkpoint, device)
    identity = {
        "sam_model_type": settings.sam_model_type,
        "sam_checkpoint": _file_identity(settings.sam_checkpoint),
        "groundingdino_checkpoint": _file_identity(settings.groundingdino_checkpoint),
        "groundingdino_config": _file_identity(settings.groundingdino_config),
        "bert": Path(settings.bert_path).name if settings.bert_path else None,
        "box_threshold": settings.box_threshold,
        "text_threshold": settings.text_threshold,
    }
    detector = GroundingDinoDetector(detector_model, settings.box_threshold, settings.text_threshold)
    return GroundedSamPrior(detector, SamBoxSegmenter(sam), prompt, identity)
