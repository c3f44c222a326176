"""AnomalyNCD's training losses (SimGCD family) as pure functions, plus the module combining them.

* ``distill_loss``: self-distillation with swapped views (DINO): a sharp teacher distribution
  (``softmax(cos / teacher_temperature)``, detached) of one view supervises the student
  (``log_softmax(cos / 0.1)``) of every other view. For unlabeled samples the known-class
  columns of the teacher are zeroed, and AnomalyNCD's pseudo-label correction pulls the
  teacher toward the normal class for regions with a low anomaly score.
* ``mean_entropy_maximisation``: keeps the batch-mean prediction spread over all classes.
* ``info_nce_loss`` (SimCLR) on all samples and ``sup_con_loss`` (Khosla et al.) on labeled ones.

Total loss (paper, ``sup = 0.3``)::

    L = (1 - sup) * (distill + 4 * memax) + sup * CE_known + (1 - sup) * InfoNCE + sup * SupCon

All inputs of ``n_views`` views are stacked view-major: rows ``v * B .. (v + 1) * B - 1``
are view ``v`` of the ``B`` samples.

Example:
    >>> import torch
    >>> criterion = DiscoveryLoss(n_known=2, n_classes=5, normal_index=2)
    >>> logits = torch.rand(4, 2 * 6, 5) * 2 - 1
    >>> labels = torch.tensor([0, 1, -1, -1, -1, -1])
    >>> scores = torch.tensor([0.0, 0.0, 0.2, 0.9, 0.4, 0.7])
    >>> total, parts = criterion(logits, torch.randn(12, 16), labels, scores, teacher_temperature=0.07)
    >>> bool(torch.isfinite(total)), sorted(parts)[:3]
    (True, ['ce', 'cluster_head_0', 'cluster_head_1'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


def _zero_like_graph(tensor: Tensor) -> Tensor:
    """A scalar 0 on ``tensor``'s device/dtype that stays attached to its graph."""
    return tensor.sum() * 0.0


def _check_views(n_rows: int, n_views: int) -> int:
    """Return the per-view batch size of ``n_rows`` view-major rows."""
    if n_views < 2:
        msg = f"n_views must be >= 2 (losses compare different views), got {n_views}"
        raise ValueError(msg)
    if n_rows % n_views:
        msg = f"{n_rows} rows cannot be split into {n_views} views"
        raise ValueError(msg)
    return n_rows // n_views


def teacher_temperature_schedule(
    n_epochs: int = 50,
    warmup_epochs: int = 40,
    warmup_temperature: float = 0.07,
    temperature: float = 0.04,
) -> np.ndarray:
    """Teacher temperature per epoch: linear warm-up, then constant (SimGCD).

    The warm-up is ``np.linspace(warmup_temperature, temperature, warmup_epochs)`` (so epoch
    ``warmup_epochs - 1`` already has the final value), cut to ``n_epochs`` when it is longer.

    Args:
        n_epochs: Number of epochs.
        warmup_epochs: Length of the warm-up (``0``: constant ``temperature``).
        warmup_temperature: Temperature at epoch 0.
        temperature: Final temperature.

    Returns:
        ``(n_epochs,)`` float array.

    Raises:
        ValueError: If an epoch count is negative.

    Example:
        >>> teacher_temperature_schedule(5, 3, 0.07, 0.04).round(3).tolist()
        [0.07, 0.055, 0.04, 0.04, 0.04]
    """
    if n_epochs < 0 or warmup_epochs < 0:
        msg = f"epoch counts must be >= 0, got n_epochs={n_epochs}, warmup_epochs={warmup_epochs}"
        raise ValueError(msg)
    warmup = np.linspace(warmup_temperature, temperature, warmup_epochs)
    constant = np.full(max(n_epochs - warmup_epochs, 0), temperature, dtype=np.float64)
    return np.concatenate([warmup, constant])[:n_epochs]


def pseudo_label_weights(scores: Tensor, threshold: float = 0.5) -> Tensor:
    """AnomalyNCD's pseudo-label correction weight ``w = max(0, threshold - s)``.

    A region whose anomaly score ``s`` (in ``[0, 1]``) is below ``threshold`` is likely a
    false positive of the detector, so its pseudo-label is pulled toward the normal class.
    The result is also clipped to ``1``, which only matters for scores outside ``[0, 1]``.

    Args:
        scores: ``(B,)`` region anomaly scores.
        threshold: Score below which the correction starts.

    Returns:
        ``(B,)`` weights in ``[0, 1]``, same device and dtype as ``scores``.

    Example:
        >>> import torch
        >>> pseudo_label_weights(torch.tensor([0.0, 0.25, 0.5, 0.9])).tolist()
        [0.5, 0.25, 0.0, 0.0]
    """
    return (threshold - scores).clamp(0.0, 1.0)


def correct_pseudo_labels(q: Tensor, weights: Tensor, normal_index: int) -> Tensor:
    """Mix pseudo-labels with the normal class: ``q' = w * onehot(normal) + (1 - w) * q``.

    Args:
        q: ``(B, K)`` probabilities.
        weights: ``(B,)`` weights in ``[0, 1]``.
        normal_index: Column of the normal class.

    Returns:
        ``(B, K)`` corrected probabilities (rows still sum to 1).

    Raises:
        ValueError: If the shapes or ``normal_index`` do not fit.
    """
    if q.ndim != 2 or weights.shape != q.shape[:1]:
        msg = f"expected q (B, K) and weights (B,), got {tuple(q.shape)} and {tuple(weights.shape)}"
        raise ValueError(msg)
    if not 0 <= normal_index < q.shape[1]:
        msg = f"normal_index {normal_index} outside [0, {q.shape[1]})"
        raise ValueError(msg)
    weight = weights.to(q).unsqueeze(1)
    normal = torch.zeros_like(q[0])
    normal[normal_index] = 1.0
    return weight * normal + (1.0 - weight) * q


def distill_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    n_views: int,
    teacher_temperature: float,
    student_temperature: float = 0.1,
    n_known: int = 0,
    normal_index: int | None = None,
    plc_weights: Tensor | None = None,
) -> Tensor:
    """Swapped-view self-distillation (DINO / SimGCD) with AnomalyNCD's pseudo-label correction.

    The teacher distribution is ``softmax(teacher / teacher_temperature)``; with
    ``n_known > 0`` its first ``n_known`` columns are zeroed and the rest renormalised
    (computed directly as a softmax over the novel columns, which is the same and cannot
    divide by an underflowed sum). It is then corrected toward ``normal_index`` with
    ``plc_weights`` (one weight per sample, shared by its views) and detached. The loss is
    the mean, over ordered view pairs ``i != j``, of the batch-mean cross-entropy between
    teacher view ``i`` and ``log_softmax(student view j / student_temperature)``.

    Args:
        student_logits: ``(V * B, K)`` cosine logits, view-major.
        teacher_logits: ``(V * B, K)`` cosine logits (usually the student's own, detached here).
        n_views: Number of views ``V`` (>= 2).
        teacher_temperature: Teacher temperature (see ``teacher_temperature_schedule``).
        student_temperature: Student temperature.
        n_known: Number of leading known-class columns removed from the teacher.
        normal_index: Column of the normal class, needed with ``plc_weights``.
        plc_weights: ``(B,)`` pseudo-label correction weights, or ``None`` for no correction.

    Returns:
        Scalar loss (0, still attached to the graph, for an empty batch).

    Raises:
        ValueError: On inconsistent shapes or arguments.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        msg = f"student and teacher logits must both be (V*B, K), got {tuple(student_logits.shape)} and "
        msg += f"{tuple(teacher_logits.shape)}"
        raise ValueError(msg)
    n_rows, n_classes = student_logits.shape
    batch = _check_views(n_rows, n_views)
    if not 0 <= n_known < n_classes:
        msg = f"n_known must be in [0, {n_classes}), got {n_known}"
        raise ValueError(msg)
    if batch == 0:
        return _zero_like_graph(student_logits)

    teacher = teacher_logits.detach() / teacher_temperature
    if n_known > 0:
        probs = torch.zeros_like(teacher)
        probs[:, n_known:] = teacher[:, n_known:].softmax(dim=-1)
    else:
        probs = teacher.softmax(dim=-1)
    if plc_weights is not None:
        if normal_index is None:
            msg = "plc_weights need a normal_index"
            raise ValueError(msg)
        if plc_weights.shape != (batch,):
            msg = f"plc_weights must have shape ({batch},), got {tuple(plc_weights.shape)}"
            raise ValueError(msg)
        probs = correct_pseudo_labels(probs, plc_weights.repeat(n_views), normal_index)

    teacher_views = probs.view(n_views, batch, n_classes)
    student_views = F.log_softmax(student_logits / student_temperature, dim=-1).view(n_views, batch, n_classes)
    # cross[i, j] = mean_b CE(teacher view i, student view j)
    cross = -torch.einsum("ibk,jbk->ij", teacher_views, student_views) / batch
    off_diagonal = ~torch.eye(n_views, dtype=torch.bool, device=cross.device)
    return cross[off_diagonal].mean()


def mean_entropy_maximisation(student_logits: Tensor, student_temperature: float = 0.1) -> Tensor:
    """Mean-entropy regulariser ``sum_k p_bar_k log p_bar_k + log K`` (SimGCD's ``me_max``).

    ``p_bar`` is the batch mean of ``softmax(logits / T)``. The value is ``log K - H(p_bar)``:
    ``>= 0``, ``0`` for a uniform mean prediction and ``log K`` when every sample predicts
    the same class, so minimising it maximises the entropy of the mean prediction.

    Args:
        student_logits: ``(N, K)`` cosine logits.
        student_temperature: Student temperature.

    Returns:
        Scalar loss (0, still attached to the graph, when ``N == 0``).

    Example:
        >>> import torch
        >>> round(float(mean_entropy_maximisation(torch.eye(4))), 6)
        0.0
    """
    if student_logits.shape[0] == 0:
        return _zero_like_graph(student_logits)
    mean_probs = (student_logits / student_temperature).softmax(dim=-1).mean(dim=0)
    # Clamp inside the log only: 0 * log(tiny) = 0 and its gradient stays finite.
    log_probs = mean_probs.clamp_min(torch.finfo(mean_probs.dtype).tiny).log()
    return (mean_probs * log_probs).sum() + math.log(student_logits.shape[1])


def info_nce_loss(projections: Tensor, n_views: int, temperature: float = 1.0) -> Tensor:
    """SimCLR's NT-Xent loss on L2-normalised projections.

    For every anchor, the positives are the other views of the same sample and the softmax
    runs over all other rows (self-similarity excluded). The loss is the mean, over anchors
    and their positives, of ``-log softmax``; with two views this is exactly SimGCD's
    ``info_nce_logits`` followed by a cross-entropy.

    Args:
        projections: ``(V * B, D)`` projections, view-major (normalised here).
        n_views: Number of views ``V`` (>= 2).
        temperature: Softmax temperature.

    Returns:
        Scalar loss (0, still attached to the graph, for an empty batch).
    """
    batch = _check_views(projections.shape[0], n_views)
    if batch == 0:
        return _zero_like_graph(projections)
    features = F.normalize(projections, dim=-1)
    similarity = features @ features.T / temperature
    n_rows = similarity.shape[0]
    self_mask = torch.eye(n_rows, dtype=torch.bool, device=similarity.device)
    sample = torch.arange(n_rows, device=similarity.device) % batch
    positive = (sample[:, None] == sample[None, :]) & ~self_mask
    log_prob = similarity - similarity.masked_fill(self_mask, float("-inf")).logsumexp(dim=1, keepdim=True)
    return -log_prob[positive].mean()


def sup_con_loss(
    projections: Tensor,
    labels: Tensor,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020), ``contrast_mode='all'``.

    Every view of every sample is an anchor; its positives are all other rows with the same
    label, and the softmax runs over all other rows. Anchors without any positive (a single
    view of a sample alone in its class) are left out instead of producing ``0 / 0``.

    Args:
        projections: ``(B, V, D)`` projections (normalised here).
        labels: ``(B,)`` class labels.
        temperature: Softmax temperature.
        base_temperature: Reference temperature; the loss is scaled by ``temperature / base_temperature``.

    Returns:
        Scalar loss (0, still attached to the graph, when no anchor has a positive).

    Raises:
        ValueError: On inconsistent shapes.
    """
    if projections.ndim != 3 or labels.shape != projections.shape[:1]:
        msg = f"expected projections (B, V, D) and labels (B,), got {tuple(projections.shape)} and "
        msg += f"{tuple(labels.shape)}"
        raise ValueError(msg)
    n_views = projections.shape[1]
    features = F.normalize(torch.cat(torch.unbind(projections, dim=1)), dim=-1)
    row_labels = labels.repeat(n_views)
    logits = features @ features.T / temperature
    n_rows = logits.shape[0]
    self_mask = torch.eye(n_rows, dtype=torch.bool, device=logits.device)
    positive = (row_labels[:, None] == row_labels[None, :]) & ~self_mask
    log_prob = logits - logits.masked_fill(self_mask, float("-inf")).logsumexp(dim=1, keepdim=True)
    n_positive = positive.sum(dim=1)
    valid = n_positive > 0
    if not bool(valid.any()):
        return _zero_like_graph(projections)
    # where() instead of a product: the masked-out diagonal is never mixed into the sums.
    mean_log_prob = torch.where(positive, log_prob, 0.0).sum(dim=1)[valid] / n_positive[valid]
    return -(temperature / base_temperature) * mean_log_prob.mean()


@dataclass
class LossWeights:
    """Weights and temperatures of the discovery loss (the paper's defaults).

    Attributes:
        sup_weight: Balance ``sup`` between supervised (``sup``) and unsupervised (``1 - sup``) terms.
        memax_weight: Weight of the mean-entropy regulariser inside the clustering loss.
        student_temperature: Student temperature (vMF concentration ``kappa = 10``).
        info_nce_temperature: Temperature of the InfoNCE loss.
        sup_con_temperature: Temperature of the supervised contrastive loss.
        plc_threshold: Anomaly score below which pseudo-labels are corrected toward normal.
    """

    sup_weight: float = 0.3
    memax_weight: float = 4.0
    student_temperature: float = 0.1
    info_nce_temperature: float = 1.0
    sup_con_temperature: float = 0.07
    plc_threshold: float = 0.5


class DiscoveryLoss(nn.Module):
    """AnomalyNCD's total loss over multi-head prototype logits and contrastive projections.

    ``L = u * (distill + memax_weight * memax) + s * CE_known + u * InfoNCE + s * SupCon`` with
    ``s = sup_weight`` and ``u = 1 - sup_weight``. ``distill``, ``memax`` and ``CE_known`` are
    averaged over the heads; distillation and ``memax`` use the unlabeled samples only,
    ``CE_known`` (``cross_entropy(cos / student_temperature, label)``) and ``SupCon`` the
    labeled samples of all views, InfoNCE all samples. A batch that happens to hold no labeled
    (or no unlabeled) sample gets 0 for those terms and keeps the other weights.

    Fully unsupervised mode (``has_labeled=False``: no labeled set at all): ``CE_known`` and
    ``SupCon`` can never contribute, so the unsupervised terms get weight ``u = 1`` instead of
    ``1 - sup_weight``; otherwise a constant 30% of the loss scale (and so of the effective
    learning rate) would silently be lost.

    Pseudo-label correction applies to the unlabeled samples when both ``normal_index`` and
    ``scores`` are given.

    Args:
        n_known: Number of known classes (the leading columns, zeroed in unlabeled teachers).
        n_classes: Total number of classes ``K`` (prototypes per head).
        normal_index: Column of the normal class for pseudo-label correction, or ``None``.
        weights: Loss weights and temperatures (``LossWeights()`` when ``None``).
        n_views: Number of augmented views per sample.
        has_labeled: Whether a labeled set exists (``False``: fully unsupervised mode).

    Raises:
        ValueError: On inconsistent class counts or indices.
    """

    def __init__(
        self,
        n_known: int,
        n_classes: int,
        normal_index: int | None,
        weights: LossWeights | None = None,
        n_views: int = 2,
        has_labeled: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= n_known < n_classes:
            msg = f"need 0 <= n_known < n_classes, got n_known={n_known}, n_classes={n_classes}"
            raise ValueError(msg)
        if normal_index is not None and not 0 <= normal_index < n_classes:
            msg = f"normal_index {normal_index} outside [0, {n_classes})"
            raise ValueError(msg)
        _check_views(0, n_views)
        self.n_known = n_known
        self.n_classes = n_classes
        self.normal_index = normal_index
        self.weights = weights if weights is not None else LossWeights()
        self.n_views = n_views
        self.has_labeled = has_labeled

    def forward(
        self,
        head_logits: Tensor,
        projections: Tensor,
        labels: Tensor,
        scores: Tensor | None,
        teacher_temperature: float,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the total loss and its detached parts.

        Args:
            head_logits: ``(H, V * B, K)`` cosine logits of every head, view-major.
            projections: ``(V * B, D)`` projector outputs, view-major.
            labels: ``(B,)`` long labels, ``-1`` for unlabeled samples.
            scores: ``(B,)`` region anomaly scores in ``[0, 1]``, or ``None``.
            teacher_temperature: Teacher temperature of the current epoch.

        Returns:
            ``(total, parts)``: ``total`` is the scalar to back-propagate; ``parts`` holds
            detached scalars ``cluster_head_{h}`` (``distill + memax_weight * memax`` of head
            ``h``, used to pick the best head; 0 for a batch without unlabeled samples),
            ``distill``, ``memax``, ``ce``, ``info_nce``, ``sup_con`` and ``total``.

        Raises:
            ValueError: On inconsistent shapes, or labeled samples in fully unsupervised mode.
        """
        if head_logits.ndim != 3 or head_logits.shape[2] != self.n_classes:
            msg = f"head_logits must be (H, V*B, {self.n_classes}), got {tuple(head_logits.shape)}"
            raise ValueError(msg)
        n_heads, n_rows, n_classes = head_logits.shape
        batch = _check_views(n_rows, self.n_views)
        if labels.shape != (batch,) or projections.shape[0] != n_rows:
            msg = f"expected labels ({batch},) and projections ({n_rows}, D), got {tuple(labels.shape)} and "
            msg += f"{tuple(projections.shape)}"
            raise ValueError(msg)
        if scores is not None and scores.shape != (batch,):
            msg = f"scores must have shape ({batch},), got {tuple(scores.shape)}"
            raise ValueError(msg)
        labeled = labels >= 0
        unlabeled = ~labeled
        if not self.has_labeled and bool(labeled.any()):
            msg = "labels >= 0 given although has_labeled=False"
            raise ValueError(msg)

        w = self.weights
        views = head_logits.reshape(n_heads, self.n_views, batch, n_classes)
        unlabeled_logits = views[:, :, unlabeled].reshape(n_heads, -1, n_classes)
        labeled_logits = views[:, :, labeled].reshape(n_heads, -1, n_classes)
        labeled_targets = labels[labeled].repeat(self.n_views)
        plc = None
        if self.normal_index is not None and scores is not None:
            plc = pseudo_label_weights(scores[unlabeled], w.plc_threshold)

        distills, memaxes, ces = [], [], []
        for head in range(n_heads):
            head_unlabeled = unlabeled_logits[head]
            distills.append(
                distill_loss(
                    head_unlabeled,
                    head_unlabeled,
                    self.n_views,
                    teacher_temperature,
                    w.student_temperature,
                    self.n_known,
                    self.normal_index,
                    plc,
                )
            )
            memaxes.append(mean_entropy_maximisation(head_unlabeled, w.student_temperature))
            if labeled_targets.numel():
                ces.append(F.cross_entropy(labeled_logits[head] / w.student_temperature, labeled_targets))
            else:
                ces.append(_zero_like_graph(labeled_logits[head]))
        distill = torch.stack(distills).mean()
        memax = torch.stack(memaxes).mean()
        ce = torch.stack(ces).mean()
        info_nce = info_nce_loss(projections, self.n_views, w.info_nce_temperature)
        labeled_projections = projections.reshape(self.n_views, batch, -1)[:, labeled].transpose(0, 1)
        sup_con = sup_con_loss(labeled_projections, labels[labeled], w.sup_con_temperature, w.sup_con_temperature)

        unsup = 1.0 - w.sup_weight if self.has_labeled else 1.0
        sup = w.sup_weight if self.has_labeled else 0.0
        total = unsup * (distill + w.memax_weight * memax) + sup * ce + unsup * info_nce + sup * sup_con

        parts = {
            f"cluster_head_{head}": (distills[head] + w.memax_weight * memaxes[head]).detach()
            for head in range(n_heads)
        }
        parts.update(
            distill=distill.detach(),
            memax=memax.detach(),
            ce=ce.detach(),
            info_nce=info_nce.detach(),
            sup_con=sup_con.detach(),
            total=total.detach(),
        )
        return total, parts
