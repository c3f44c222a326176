"""The batch type of discovery predictions: anomalib's ``ImageBatch`` plus defect classes.

anomalib coerces ``pred_label`` to a bool (anomalous or not), so the defect class travels in fields
of its own. The mixin comes first in the bases so that its fields (all optional) follow anomalib's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from anomalib.data import ImageBatch


@dataclass
class _DiscoveryFields:
    """Discovery outputs per image, and per region of each image.

    Attributes:
        pred_class: ``(B,)`` class index of each image (known classes first, then discovered ones;
            the first discovered class is the normal one).
        class_confidence: ``(B,)`` fused probability of that class.
        class_probabilities: ``(B, K)`` fused class probabilities.
        region_boxes: per image, ``(R_i, 4)`` region boxes ``x0, y0, x1, y1`` in image pixels.
        region_classes: per image, ``(R_i,)`` class of each region.
        region_confidences: per image, ``(R_i,)`` probability of each region's class.
        region_scores: per image, ``(R_i,)`` anomaly score of each region.
        is_unknown: ``(B,)`` whether each image fits no class (``pred_class`` stays the nearest class).
        unknown_score: ``(B,)`` fused unknown score of each image (``NaN`` where nothing was found).
        region_is_unknown: per image, ``(R_i,)`` whether each region fits no class.
        region_unknown_scores: per image, ``(R_i,)`` unknown score of each region (``NaN``: whole image).
    """

    pred_class: torch.Tensor | None = None
    class_confidence: torch.Tensor | None = None
    class_probabilities: torch.Tensor | None = None
    region_boxes: list[torch.Tensor] = field(default_factory=list)
    region_classes: list[torch.Tensor] = field(default_factory=list)
    region_confidences: list[torch.Tensor] = field(default_factory=list)
    region_scores: list[torch.Tensor] = field(default_factory=list)
    is_unknown: torch.Tensor | None = None
    unknown_score: torch.Tensor | None = None
    region_is_unknown: list[torch.Tensor] = field(default_factory=list)
    region_unknown_scores: list[torch.Tensor] = field(default_factory=list)


@dataclass
class DiscoveryBatch(_DiscoveryFields, ImageBatch):
    """An anomalib ``ImageBatch`` carrying defect classes of images and regions."""


class DiscoveryInference(NamedTuple):
    """What the model returns when called on images (anomalib's ``forward``: export and ``TorchInferencer``).

    anomalib's ``TorchInferencer`` builds an ``ImageBatch`` from these fields, so they are
    ``ImageBatch`` fields only; the defect class travels in ``explanation``, anomalib's text field
    (``Engine.predict`` gives the full :class:`DiscoveryBatch` instead).

    Attributes:
        pred_score: ``(B,)`` the detector's raw image score.
        pred_label: ``(B,)`` whether the image's class is a defect class (not the normal one).
        anomaly_map: ``(B, 1, h, w)`` the detector's raw map.
        pred_mask: unused (``None``): regions are boxes, see ``explanation``.
        explanation: per image, its class: ``"<name> (class <index>, confidence <p>)"``, prefixed with
            ``"unknown, nearest "`` when the image fits no class.
    """

    pred_score: torch.Tensor | None
    pred_label: torch.Tensor
    anomaly_map: torch.Tensor
    pred_mask: torch.Tensor | None
    explanation: list[str]
