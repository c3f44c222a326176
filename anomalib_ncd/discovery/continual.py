"""Continual discovery: a trained model takes a new batch; new kinds of defect become new classes.

Old class ids never change: the old prototypes are kept as they are and new ones are appended.
A region of the new batch is *new-kind* when its feature is less typical of every old class than
almost all training regions were: its best cosine to a prototype (the vMF log-likelihood up to the
constant ``kappa``) falls below the ``quantile`` of the training regions' best cosines. The
new-kind regions are clustered (spherical k-means; their number estimated like ``n_novel_classes:
auto`` unless given) and each cluster's mean direction becomes a new prototype in every head.
Regions that fit an old class (typicality at or above the threshold) may only take old classes, so
an appended prototype never takes over a kind the model already knew; images are then fused as usual.

Unknown rejection (:mod:`~anomalib_ncd.discovery.novelty`) is recalibrated for the extended model,
on the earlier regions and the batch's together: the set its classes now come from, so the same
false-rejection rate holds (the old thresholds would call the new kinds unknown, as their
prototypes had no training). For the ``"knn"`` score the batch's regions join the bank. This needs
the earlier regions' images and areas (an :class:`ImageClassification` of them); given only their
features, the extended model is left uncalibrated (``NaN``: it rejects nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.cluster import KMeans

from anomalib_ncd.discovery.class_count import ClassCountSettings, estimate_class_count
from anomalib_ncd.discovery.classification import ImageClassification
from anomalib_ncd.discovery.fusion import fuse_regions
from anomalib_ncd.regions.soft import regions_without_anomaly

if TYPE_CHECKING:
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD


@dataclass
class ContinualUpdate:
    """What a new batch added.

    Attributes:
        model: the extended model (old classes first, with their old ids).
        classification: the new batch classified by the extended model.
        new_classes: ids of the appended classes.
        new_kind: per region of the batch, whether it fitted no old class.
        typicality: per region, its best cosine to an old prototype.
        threshold: the typicality below which a region is new-kind.
    """

    model: AnomalyNCD
    classification: ImageClassification
    new_classes: list[int]
    new_kind: np.ndarray
    typicality: np.ndarray
    threshold: float


def typicality(model: AnomalyNCD, features: np.ndarray) -> np.ndarray:
    """Best cosine of each feature to a prototype of the model's chosen head.

    Args:
        model: a trained model.
        features: ``(R, D)`` region features.

    Returns:
        ``(R,)`` cosines in ``[-1, 1]``.
    """
    with torch.no_grad():
        cosines = model.network.heads(torch.as_tensor(features, dtype=torch.float32, device=model.device))
    return cosines[int(model.best_head)].max(dim=1).values.cpu().numpy()


def add_batch(
    model: AnomalyNCD,
    images: Sequence[np.ndarray],
    anomaly_maps: Sequence[np.ndarray],
    training: ImageClassification | np.ndarray,
    quantile: float = 0.05,
    n_new_classes: int | None = None,
    class_count: ClassCountSettings | None = None,
    min_new_regions: int = 4,
) -> ContinualUpdate:
    """Classify a new batch, appending a class for each group of new-kind regions.

    Args:
        model: the trained model (not modified).
        images: the new images' pixels.
        anomaly_maps: their raw maps (same detector).
        training: the regions the model was trained on, classified (e.g. ``DefectDiscovery``'s
            ``classification_``, or :meth:`AnomalyNCD.classify_images` of the earlier images): their
            features set the new-kind threshold, and with their images and areas the extended model's
            unknown rejection is recalibrated; or only their ``(R, D)`` features (e.g.
            :meth:`AnomalyNCD.region_features`), which leaves the extended model uncalibrated.
        quantile: fraction of training regions that would count as new-kind (false-alarm rate).
        n_new_classes: how many classes to append; ``None`` estimates it from the new-kind regions.
        class_count: candidate range for the estimate.
        min_new_regions: fewer new-kind regions than this add no class (too few to be a kind).

    Returns:
        The update.
    """
    if not 0 < quantile < 1:
        msg = f"quantile must lie in (0, 1), got {quantile}"
        raise ValueError(msg)
    earlier = training if isinstance(training, ImageClassification) else None
    training_features = earlier.region_features if earlier is not None else np.asarray(training)
    threshold = float(np.quantile(typicality(model, training_features), quantile))
    found = model.classify_images(images, anomaly_maps)
    scores = typicality(model, found.region_features)
    whole = regions_without_anomaly(found.regions)
    new_kind = (scores < threshold) & ~whole
    features = found.region_features[new_kind]
    if len(features) < max(min_new_regions, 1) or n_new_classes == 0:
        return ContinualUpdate(model, found, [], new_kind, scores, threshold)
    if n_new_classes is None:
        settings = class_count or ClassCountSettings(k_min=2, k_max=min(6, len(features) - 1))
        # one new kind when too few regions to compare counts; else the best-separated count
        too_few = len(features) < 2 * settings.k_min + 1
        n_new_classes = 1 if too_few else estimate_class_count(features, settings).n_classes
    directions = _mean_directions(features, n_new_classes, model.seed)
    extended = _append_prototypes(model, directions)
    if earlier is not None:
        recalibrate_rejection(extended, earlier, found)
    new_classes = list(range(model.n_classes, extended.n_classes))
    classification = classify_keeping_old_ids(extended, model, threshold, images, anomaly_maps)
    return ContinualUpdate(extended, classification, new_classes, new_kind, scores, threshold)


def classify_keeping_old_ids(
    extended: AnomalyNCD,
    old: AnomalyNCD,
    threshold: float,
    images: Sequence[np.ndarray],
    anomaly_maps: Sequence[np.ndarray],
) -> ImageClassification:
    """Classify with an extended model; regions typical of an old class only choose among old classes.

    Args:
        extended: the model with appended classes.
        old: the model before the update.
        threshold: the new-kind typicality threshold of the update.
        images: the images.
        anomaly_maps: their raw maps.

    Returns:
        The classification.
    """
    found = extended.classify_images(images, anomaly_maps)
    probabilities = found.region_probabilities.copy()
    fits_old = typicality(old, found.region_features) >= threshold
    probabilities[fits_old, old.n_classes :] = 0.0
    probabilities[fits_old] /= probabilities[fits_old].sum(axis=1, keepdims=True)
    image_index = np.array([region.image_index for region in found.regions])
    areas = np.array([region.area for region in found.regions], dtype=float)
    fused = fuse_regions(probabilities, areas, image_index, len(images), extended.fusion_temperature)
    return ImageClassification(
        classes=fused.argmax(1),
        confidence=fused.max(1),
        probabilities=fused,
        regions=found.regions,
        region_probabilities=probabilities,
        region_features=found.region_features,
        # the unknown verdict does not depend on the class probabilities: the extended model's stands
        region_descriptors=found.region_descriptors,
        region_unknown_score=found.region_unknown_score,
        region_is_unknown=found.region_is_unknown,
        unknown_score=found.unknown_score,
        is_unknown=found.is_unknown,
    )


def recalibrate_rejection(extended: AnomalyNCD, earlier: ImageClassification, batch: ImageClassification) -> None:
    """Calibrate the extended model's unknown thresholds on the earlier and the batch's regions together.

    Args:
        extended: the model with appended classes (its thresholds and, for ``"knn"``, bank are set).
        earlier: the regions the model was trained on, classified.
        batch: the new batch's regions, classified by the model before the update (the features
            are the same for the extended model: only the heads changed).
    """
    both = [earlier, batch]
    whole = np.concatenate([regions_without_anomaly(part.regions) for part in both])
    areas = np.concatenate([[region.area for region in part.regions] for part in both]).astype(float)
    # the batch's images follow the earlier ones
    image_index = np.concatenate(
        [
            np.array([region.image_index for region in earlier.regions], dtype=np.int64),
            np.array([region.image_index for region in batch.regions], dtype=np.int64) + len(earlier.classes),
        ]
    )
    features = np.concatenate([part.region_features for part in both])
    descriptors = bank = None
    if extended.novelty_settings.score == "knn":
        if earlier.region_descriptors is None or batch.region_descriptors is None:
            return  # no descriptors to build the bank from: stay uncalibrated
        descriptors = torch.from_numpy(np.concatenate([part.region_descriptors for part in both]))
        bank = descriptors[torch.from_numpy(~whole)]
    extended.calibrate_novelty_on(features, descriptors, whole, areas, image_index, bank)


def _mean_directions(features: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    points = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    labels = np.zeros(len(points), int)
    if n_clusters > 1:
        labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(points)
    means = np.stack([points[labels == k].mean(0) for k in range(n_clusters)])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def _append_prototypes(model: AnomalyNCD, directions: np.ndarray) -> AnomalyNCD:
    """A copy of the model with the new prototypes appended to every head; everything else kept."""
    extended = model.with_novel_classes(model.n_classes - model.n_known + len(directions))
    extended.model.load_state_dict(
        {k: v for k, v in model.model.state_dict().items() if not k.startswith("heads.")}, strict=False
    )
    old = model.model.heads.weight.detach()
    new = torch.as_tensor(directions, dtype=old.dtype, device=old.device) * old.norm(dim=-1).mean()
    with torch.no_grad():
        extended.model.heads.weight.copy_(torch.cat([old, new.expand(old.shape[0], -1, -1)], dim=1))
    extended.best_head.copy_(model.best_head)
    extended.prototypes_initialised.fill_(True)
    return extended.to(model.device)
