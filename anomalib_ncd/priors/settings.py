"""Settings of the object prior: where the inspected object lies in each image."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

PRIOR_KINDS = ("none", "whole_image", "foreground", "grounded_sam")
SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_PATH_FIELDS = ("sam_checkpoint", "groundingdino_checkpoint", "groundingdino_config", "bert_path", "cache_dir")
_UNIT_FIELDS = ("box_threshold", "text_threshold", "min_inside")


@dataclass(frozen=True)
class ObjectPriorSettings:
    """Which object prior to use and where its weights are.

    Nothing here touches the file system: weight files are checked when the prior is built
    (:func:`anomalib_ncd.priors.build_object_prior`), so settings can be written on one machine
    and used on another.

    Attributes:
        kind: ``none`` (no prior), ``whole_image`` (every pixel is on the object), ``foreground``
            (classical border-model segmentation, no weights) or ``grounded_sam``
            (GroundingDINO boxes turned into masks by SAM).
        prompt: GroundingDINO text prompt; ``None``: the category name (an error if there is none).
        sam_checkpoint: a segment-anything checkpoint (``.pth``), e.g. ``sam_vit_h_4b8939.pth``.
        sam_model_type: ``vit_h``, ``vit_l`` or ``vit_b``; must match ``sam_checkpoint``.
        groundingdino_checkpoint: a GroundingDINO checkpoint, e.g. ``groundingdino_swint_ogc.pth``.
        groundingdino_config: GroundingDINO's python config file, e.g. ``GroundingDINO_SwinT_OGC.py``.
        bert_path: a local ``bert-base-uncased`` folder (``config.json``, ``vocab.txt``, weights).
        box_threshold: GroundingDINO box threshold: a box is kept when its best prompt-token
            probability exceeds it.
        text_threshold: GroundingDINO text threshold: a kept box also needs one word of the prompt
            above it.
        cache_dir: where object masks are cached (``None``: ``<cache root>/object_priors``, with the
            cache root ``$ANOMALIB_NCD_CACHE`` or ``~/.cache/anomalib_ncd``).
        device: ``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        drop_outside: drop regions that lie off the object (used by the region stage).
        min_inside: with ``drop_outside``, the fraction of a region's anomalous pixels that must lie on
            the object for the region to be kept (used by the region stage).
    """

    kind: str = "none"
    prompt: str | None = None
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_h"
    groundingdino_checkpoint: str | None = None
    groundingdino_config: str | None = None
    bert_path: str | None = None
    box_threshold: float = 0.3
    text_threshold: float = 0.25
    cache_dir: str | None = None
    device: str = "auto"
    drop_outside: bool = False
    min_inside: float = 0.5

    def __post_init__(self) -> None:
        """Check every field and normalise paths to strings.

        Raises:
            ValueError: naming the first invalid field, its value and what it accepts.
        """
        if self.kind not in PRIOR_KINDS:
            msg = f"object prior kind must be one of {PRIOR_KINDS}, got {self.kind!r}"
            raise ValueError(msg)
        if self.sam_model_type not in SAM_MODEL_TYPES:
            msg = f"object prior sam_model_type must be one of {SAM_MODEL_TYPES}, got {self.sam_model_type!r}"
            raise ValueError(msg)
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt.strip()):
            msg = f"object prior prompt must be a non-empty text or None (the category name), got {self.prompt!r}"
            raise ValueError(msg)
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
                msg = f"object prior {name} must be a non-empty path or None, got {value!r}"
                raise ValueError(msg)
            object.__setattr__(self, name, str(Path(value).expanduser()))
        for name in _UNIT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                msg = f"object prior {name} must be a number in [0, 1], got {value!r}"
                raise ValueError(msg)
            object.__setattr__(self, name, float(value))
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            msg = f"object prior device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            raise ValueError(msg)
        if not isinstance(self.drop_outside, bool):
            msg = f"object prior drop_outside must be true or false, got {self.drop_outside!r}"
            raise ValueError(msg)
        if self.drop_outside and self.kind == "none":
            msg = "drop_outside needs an object prior: set kind to whole_image, foreground or grounded_sam"
            raise ValueError(msg)

    def with_prompt(self, category: str | None) -> ObjectPriorSettings:
        """These settings with the prompt filled in from a category name when none is set.

        Args:
            category: the dataset category (e.g. ``"bottle"``), or ``None``.

        Returns:
            A copy with ``prompt`` set (itself when it already has one or ``category`` is ``None``).
        """
        if self.prompt is not None or category is None or not category.strip():
            return self
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["prompt"] = category.strip().replace("_", " ")
        return ObjectPriorSettings(**values)
