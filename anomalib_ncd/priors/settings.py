"""Settings of the object prior: where the inspected object lies in each image."""

from __future__ import annotations

from dataclasses import dataclass

PRIOR_KINDS = ("none", "whole_image", "foreground", "grounded_sam")
SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")


@dataclass(frozen=True)
class ObjectPriorSettings:
    """Which object prior to use and where its weights are.

    Attributes:
        kind: ``none``, ``whole_image``, ``foreground`` or ``grounded_sam``.
        prompt: GroundingDINO text prompt; ``None``: the category name.
        sam_checkpoint: a segment-anything checkpoint (``.pth``).
        sam_model_type: ``vit_h``, ``vit_l`` or ``vit_b``.
        groundingdino_checkpoint: a GroundingDINO checkpoint.
        groundingdino_config: GroundingDINO's python config file.
        bert_path: a local ``bert-base-uncased`` folder.
        box_threshold: GroundingDINO box threshold.
        text_threshold: GroundingDINO text threshold.
        cache_dir: where object masks are cached (``None``: the package cache).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        drop_outside: drop regions that lie off the object (region stage).
        min_inside: fraction of a region's anomalous pixels that must lie on the object to keep it.
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
        if self.kind not in PRIOR_KINDS:
            msg = f"object prior kind must be one of {PRIOR_KINDS}, got {self.kind!r}"
            raise ValueError(msg)
        if self.sam_model_type not in SAM_MODEL_TYPES:
            msg = f"sam_model_type must be one of {SAM_MODEL_TYPES}, got {self.sam_model_type!r}"
            raise ValueError(msg)
        for name in ("box_threshold", "text_threshold", "min_inside"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                msg = f"object prior {name} must lie in [0, 1], got {value}"
                raise ValueError(msg)
        if self.drop_outside and self.kind == "none":
            msg = "drop_outside needs an object prior: set kind to whole_image, foreground or grounded_sam"
            raise ValueError(msg)
