"""Heads on top of a frozen or fine-tuned backbone: a contrastive projector and cosine prototype heads.

AnomalyNCD (CVPR 2025) follows SimGCD: the backbone's class token ``x`` goes to

* a projection MLP (``768 -> 2048 -> 2048 -> 256``, GELU) whose output only feeds the
  contrastive losses, and
* ``n_heads`` independent sets of unit-norm class prototypes (weight-normalised linear
  layers with the norm frozen at 1, as in DINO), each giving the cosine between the
  L2-normalised feature and every prototype. The model keeps the head with the lowest
  clustering loss.

Example:
    >>> import torch
    >>> heads = PrototypeHeads(in_dim=8, n_classes=3, n_heads=2)
    >>> heads(torch.randn(5, 8)).shape
    torch.Size([2, 5, 3])
    >>> ProjectionMLP(8, hidden_dim=16, out_dim=4)(torch.randn(5, 8)).shape
    torch.Size([5, 4])
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


class ProjectionMLP(nn.Module):
    """Linear-GELU-...-Linear projector used only by the contrastive losses.

    With the defaults it is the paper's ``in_dim -> 2048 -> 2048 -> 256`` MLP. Weights are
    drawn from a truncated normal with std 0.02 and biases start at 0 (SimGCD/DINO init).

    Args:
        in_dim: Feature dimension of the backbone.
        hidden_dim: Width of the hidden layers.
        out_dim: Dimension of the projection.
        n_layers: Number of linear layers (``1`` gives a single ``Linear(in_dim, out_dim)``).

    Raises:
        ValueError: If ``n_layers < 1``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 256, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            msg = f"n_layers must be >= 1, got {n_layers}"
            raise ValueError(msg)
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Project features.

        Args:
            features: ``(B, in_dim)`` backbone features.

        Returns:
            ``(B, out_dim)`` raw (not normalised) projections; the losses normalise them.
        """
        return self.mlp(features)


class PrototypeHeads(nn.Module):
    """``n_heads`` independent sets of unit-norm prototypes giving cosine logits.

    Each head is a linear layer without bias whose rows are normalised to unit length in
    ``forward`` (equivalent to a weight-normalised layer with its gain frozen at 1), so only
    the prototypes' directions train and the gradient of the raw weight is orthogonal to it.
    All heads share one ``(n_heads, n_classes, in_dim)`` parameter ``weight``; there is no
    gain parameter to freeze.

    von Mises-Fisher view: with unit prototypes ``mu_k`` and a unit feature ``x``, a mixture
    of vMF distributions with shared concentration ``kappa`` gives
    ``p(k | x) = softmax_k(kappa * mu_k^T x)``. The heads return the cosines ``mu_k^T x``;
    the losses apply ``kappa = 1 / temperature``, so dividing by the student temperature
    0.1 means ``kappa = 10`` (and the sharper teacher, 0.04, ``kappa = 25``).

    Args:
        in_dim: Feature dimension.
        n_classes: Number of prototypes per head (known + novel classes).
        n_heads: Number of independent heads.

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(self, in_dim: int, n_classes: int, n_heads: int = 4) -> None:
        super().__init__()
        if min(in_dim, n_classes, n_heads) < 1:
            msg = f"in_dim, n_classes and n_heads must be >= 1, got {in_dim}, {n_classes}, {n_heads}"
            raise ValueError(msg)
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.n_heads = n_heads
        self.weight = nn.Parameter(torch.empty(n_heads, n_classes, in_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw random prototype directions (``nn.Linear``'s default uniform init, per head)."""
        bound = 1.0 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def prototypes(self) -> Tensor:
        """Return the unit prototypes.

        Returns:
            ``(n_heads, n_classes, in_dim)`` unit vectors (differentiable w.r.t. ``weight``).
        """
        return F.normalize(self.weight, dim=-1)

    def forward(self, features: Tensor) -> Tensor:
        """Cosine between every L2-normalised feature and every prototype of every head.

        Args:
            features: ``(B, in_dim)`` features.

        Returns:
            ``(n_heads, B, n_classes)`` cosine logits in ``[-1, 1]``.
        """
        features = F.normalize(features, dim=-1)
        return torch.einsum("bd,hkd->hbk", features, self.prototypes().to(features.dtype))


def _spherical_kmeans(
    points: Tensor, fixed: dict[int, Tensor], n_clusters: int, rng: np.random.Generator, n_iter: int
) -> Tensor:
    """k-means++ seeding then spherical k-means on unit ``points`` ``(N, D)``; returns unit centres.

    Centres listed in ``fixed`` (index -> unit vector) take part in seeding and assignment
    but never move.
    """
    n_points = points.shape[0]
    centres = points.new_zeros(n_clusters, points.shape[1])
    is_fixed = torch.zeros(n_clusters, dtype=torch.bool, device=points.device)
    for index, centre in fixed.items():
        centres[index] = centre
        is_fixed[index] = True
    best_cos = (points @ centres[is_fixed].T).max(dim=1).values if fixed else None
    for cluster in range(n_clusters):
        if cluster in fixed:
            continue
        if best_cos is None:
            index = int(rng.integers(n_points))
        else:
            # 1 - cos is half the squared chord distance, the k-means++ sampling weight on the sphere.
            weights = (1.0 - best_cos).clamp_min(0).double().cpu().numpy()
            total = weights.sum()
            # p=None (all points coincide with a centre) falls back to a uniform draw.
            index = int(rng.choice(n_points, p=weights / total if total > 0 else None))
        centres[cluster] = points[index]
        cosine = points @ points[index]
        best_cos = cosine if best_cos is None else torch.maximum(best_cos, cosine)
    for _ in range(n_iter):
        similarity = points @ centres.T
        assignment = similarity.argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=n_clusters)
        empty = torch.nonzero((counts == 0) & ~is_fixed).flatten()
        if empty.numel():
            # Re-seed empty clusters with the points worst served by their centre (deterministic).
            worst = similarity.max(dim=1).values.argsort()[: empty.numel()]
            sums[empty] = points[worst]
        new_centres = torch.where(is_fixed[:, None], centres, F.normalize(sums, dim=1))
        if torch.equal(new_centres, centres):
            break
        centres = new_centres
    return centres


@torch.no_grad()
def init_prototypes(
    heads: PrototypeHeads,
    features: Tensor,
    seed: int = 0,
    n_iter: int = 100,
    labels: Tensor | None = None,
    n_init: int = 10,
) -> None:
    """Initialise every head's prototypes from the geometry of the given features.

    Each head gets ``n_init`` runs of k-means++ seeding followed by up to ``n_iter`` spherical
    k-means iterations on the L2-normalised features, and keeps the run with the highest total
    cosine of the points to their centres (scikit-learn's ``KMeans`` convention: 10 restarts, so
    the start is the best clustering found, not the luck of one seeding), with seed ``seed + head``. Random
    directions start far from the data on a 768-d sphere; centroids start on it. The result
    is deterministic for a given seed (and device).

    With ``labels``, every class ``c`` that has labeled rows gets the normalised mean of its
    normalised features as prototype ``c`` in all heads (k-means alone would put the known
    classes at arbitrary indices, which the supervised loss would then have to undo); the
    other prototypes are clustered around these fixed ones.

    Args:
        heads: Heads to initialise in place.
        features: ``(N, in_dim)`` features, ``N >= heads.n_classes``.
        seed: Base seed.
        n_iter: Most spherical k-means iterations after each seeding (``0``: seeding only).
        labels: Optional ``(N,)`` class indices, ``-1`` for unlabeled rows.
        n_init: Seedings per head; the best clustering is kept.

    Raises:
        ValueError: If the features or labels have the wrong shape, too few rows, a feature
            is not finite, or a label is outside ``[-1, n_classes)``.

    Example:
        >>> import torch
        >>> heads = PrototypeHeads(in_dim=2, n_classes=2, n_heads=1)
        >>> points = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> init_prototypes(heads, points, seed=0)
        >>> heads(points)[0].argmax(dim=1).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
        True
        >>> init_prototypes(heads, points, labels=torch.tensor([-1, -1, 0, -1]))
        >>> heads(points)[0].argmax(dim=1).tolist()
        [1, 1, 0, 0]
    """
    if features.ndim != 2 or features.shape[1] != heads.in_dim:
        msg = f"features must have shape (N, {heads.in_dim}), got {tuple(features.shape)}"
        raise ValueError(msg)
    if n_init < 1:
        msg = f"n_init must be at least 1, got {n_init}"
        raise ValueError(msg)
    if features.shape[0] < heads.n_classes:
        msg = f"need at least n_classes={heads.n_classes} features, got {features.shape[0]}"
        raise ValueError(msg)
    if not bool(torch.isfinite(features).all()):
        msg = "features must be finite: a NaN or infinite feature leaves k-means without a fit to compare"
        raise ValueError(msg)
    dtype = torch.promote_types(features.dtype, torch.float32)
    points = F.normalize(features.detach().to(dtype), dim=1)
    fixed: dict[int, Tensor] = {}
    if labels is not None:
        if labels.shape != features.shape[:1]:
            msg = f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}"
            raise ValueError(msg)
        classes = [int(value) for value in torch.unique(labels[labels >= 0]).tolist()]
        if int(labels.min()) < -1 or any(value >= heads.n_classes for value in classes):
            msg = f"labels must lie in [-1, {heads.n_classes})"
            raise ValueError(msg)
        labels = labels.to(points.device)
        fixed = {value: F.normalize(points[labels == value].mean(dim=0), dim=0) for value in classes}
    for head in range(heads.n_heads):
        rng = np.random.default_rng(seed + head)
        runs = [_spherical_kmeans(points, fixed, heads.n_classes, rng, n_iter) for _ in range(n_init)]
        # the spherical k-means objective: total cosine of each point to its nearest centre (the
        # first run wins a tie)
        best = max(runs, key=lambda centres: float((points @ centres.T).max(dim=1).values.sum()))
        heads.weight[head].copy_(best.to(heads.weight))
