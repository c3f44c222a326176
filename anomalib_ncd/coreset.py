"""Patchcore's greedy k-center coreset, the same selection as anomalib's but fast on a small CPU.

anomalib's :class:`~anomalib.models.components.sampling.KCenterGreedy` projects the memory bank
with a sparse random projection (``eps=0.9``: ``n_components = int(4 ln n / (eps²/2 - eps³/3))``,
334 for 780k patches), starts from ``torch.randint`` on the global torch generator and then, for each
selection, subtracts the newest center from *all* projected features (a new ``n x n_components``
tensor), takes the row norms and keeps the running minimum; the next center is the row whose minimum
is largest. On two cores that is memory-bound: about a gigabyte allocated and read per selection
for MTD's 762 training images.

:class:`FastKCenterGreedy` makes the same choices (identical indices whenever no two candidate
distances are within float32 rounding of each other) with three exact rewrites:

* **An isometric image of the projection.** Distances only depend on the projected geometry, so
  the features are stored through an orthogonal map of the projection: its ``R`` factor when the
  projection has more rows than the embedding has columns (Patchcore on MobileNetV2: 128 columns
  instead of 334), then rotated onto its principal axes. Distances are the same up to rounding.
* **A lower bound that skips most rows.** The squared distance over the leading principal axes
  never exceeds the full one; a row whose bound is not below its running minimum cannot change, so
  only the few others get a full (direct-difference) distance. On MTD's Patchcore features (200
  images, 1% coreset) the leading 32 of 128 axes leave about 2% of the rows to check on average;
  when the bound leaves more than a quarter, one dense pass over all rows is cheaper and is used.
* **No per-selection allocation of the big buffers** (anomalib allocates a new
  ``n x n_components`` tensor per selection) and a running maximum per block of rows, so the next
  center is found without scanning all rows.

What remains per selection is reading the 32 bound columns of every row once (memory-bound, linear
in ``n`` like anomalib's loop). ``benchmarks/coreset_speed.py`` on two cores shared with other
jobs, MTD's 762 training images (780,288 rows): 60 selections/s against anomalib's 0.7-1.2, the
whole 1% coreset in 136 s instead of about two hours; 200 images: 241 against 3.0.

It runs on the embedding's device and uses the same random draws as anomalib (the projection is
anomalib's own :class:`~anomalib.models.components.dimensionality_reduction.SparseRandomProjection`,
then one ``torch.randint``), so seeding ``torch`` and ``numpy`` gives both samplers the same start.

To make a Patchcore use it, see :func:`use_fast_coreset` (:func:`anomalib_ncd.detector.make_patchcore`
does it by default).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch
from anomalib.models.components.sampling import KCenterGreedy
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from tqdm import tqdm

from anomalib_ncd.threads import torch_threads

if TYPE_CHECKING:
    from anomalib.models import Patchcore

# Rows whose bound leaves more than this fraction as candidates are handled by one dense pass.
_DENSE_FRACTION = 0.25
# Relative slack on the lower bound: it is computed by expansion (|h|² - 2h·c + |c|²) in float32,
# whose rounding error is far below this, so no row that could change is ever skipped.
_BOUND_SLACK = 1e-4
# Rows per block of the running block maximum (the argmax then scans n / 1024 + 1024 values).
_BLOCK = 1024
# Rows per chunk when a pass over all rows needs a temporary (keeps it small and reused).
_CHUNK = 16384
# Rows per chunk of differences in a dense distance pass: small enough to stay in cache.
_DENSE_CHUNK = 2048
# Rows used to estimate the principal axes (any orthogonal basis is exact; this one only makes the
# lower bound tight).
_PCA_ROWS = 65536


class FastKCenterGreedy(KCenterGreedy):
    """Greedy k-center coreset selection, index for index anomalib's :class:`KCenterGreedy`, faster.

    A drop-in: same constructor, :meth:`select_coreset_idxs` and :meth:`sample_coreset` (inherited:
    ``embedding[select_coreset_idxs()]``), and it is a :class:`KCenterGreedy`. After selection,
    ``features`` holds the rotated isometric features (distances equal to anomalib's projected
    ones up to rounding; as many columns as the embedding when the projection has more) and
    ``min_distances`` the final ``(n, 1)`` minimum distances, as anomalib leaves them.

    Float16/bfloat16 embeddings are sampled in float32 (anomalib computes in the embedding's dtype,
    so its half-precision ties may be broken differently); float64 stays float64.

    Args:
        embedding: ``(n, d)`` patch embedding (or ``(n, ...)``, flattened without projection, as
            anomalib does).
        sampling_ratio: fraction of rows to keep (``int(n * sampling_ratio)`` rows; must be 1 or more).
        bound_dims: leading principal axes used for the lower bound (clipped to the feature
            dimension). More axes: fewer rows to check, more to read for every row.
        loop_threads: torch intra-op threads during the selection loop on a CPU (the previous
            setting is restored afterwards); ``None`` keeps torch's setting. The loop runs about
            twenty small memory-bound operations per selection: on two cores shared with other
            jobs, one thread ran 7x faster than two (every parallel operation waits for a thread
            the other jobs have descheduled).

    Raises:
        ValueError: when the coreset would be empty, or ``bound_dims`` or ``loop_threads`` is
            below 1.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> sampler = FastKCenterGreedy(torch.randn(500, 32), sampling_ratio=0.02)
        >>> len(sampler.select_coreset_idxs())
        10
    """

    def __init__(
        self,
        embedding: torch.Tensor,
        sampling_ratio: float,
        *,
        bound_dims: int = 32,
        loop_threads: int | None = 1,
    ) -> None:
        super().__init__(embedding=embedding, sampling_ratio=sampling_ratio)
        if bound_dims < 1:
            msg = f"bound_dims must be at least 1, got {bound_dims}"
            raise ValueError(msg)
        if loop_threads is not None and loop_threads < 1:
            msg = f"loop_threads must be at least 1 or None, got {loop_threads}"
            raise ValueError(msg)
        self.bound_dims = bound_dims
        self.loop_threads = loop_threads

    def select_coreset_idxs(self) -> list[int]:
        """Greedily select the coreset: each new index is the row farthest from all chosen ones.

        Returns:
            The ``coreset_size`` selected row indices, the random start first (as anomalib).
        """
        n = self.n_observations
        device = self.embedding.device
        isometry = self._fit_isometry()
        # Same draw, same generator and same place in the random stream as anomalib's start.
        start = torch.randint(high=n, size=(1,), device=device).squeeze()
        self.features = self._rotated_features(isometry)
        self.reset_distances()
        with torch_threads(self.loop_threads if device.type == "cpu" else None):
            selected = self._greedy(start)
        return selected.cpu().tolist()

    def _fit_isometry(self) -> torch.Tensor | None:
        """Fit anomalib's random projection and return a ``(d, r)`` map with the same distances.

        Returns:
            ``M`` such that ``|x M - y M| = |P x - P y|`` for the projection ``P`` (an ``R`` factor
            of ``P`` when ``P`` is taller than wide, ``P`` itself otherwise), in float64; ``None``
            for an embedding that anomalib flattens without projecting.
        """
        if self.embedding.ndim != 2:
            return None
        # anomalib's own projection: same matrix and same torch/numpy random draws.
        self.model.fit(self.embedding)
        projection = self.model.sparse_random_matrix.to(torch.float64)  # (n_components, d)
        n_components, n_features = projection.shape
        if n_components > n_features:
            # P = Q R with orthonormal Q: |P v| = |R v|, with d columns instead of n_components.
            _, triangular = torch.linalg.qr(projection, mode="r")
            return triangular.T
        return projection.T

    def _rotated_features(self, isometry: torch.Tensor | None) -> torch.Tensor:
        """Map the embedding isometrically and rotate it onto its principal axes (largest first).

        Args:
            isometry: the ``(d, r)`` map from :meth:`_fit_isometry`, or ``None`` (identity).

        Returns:
            ``(n, r)`` contiguous features in the working dtype, centred.
        """
        flat = self.embedding.reshape(self.n_observations, -1)
        dtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
        if isometry is None:
            isometry = torch.eye(flat.shape[1], dtype=torch.float64, device=flat.device)
        mean = flat.mean(0, dtype=torch.float64)
        # Principal axes from a strided subset (no random draw: it would shift anomalib's stream).
        step = max(1, self.n_observations // _PCA_ROWS)
        sample = (flat[::step].to(torch.float64) - mean) @ isometry
        _, axes = torch.linalg.eigh(sample.T @ sample)
        transform = (isometry @ axes.flip(1)).to(dtype)
        mean = mean.to(dtype)
        features = torch.empty((self.n_observations, transform.shape[1]), dtype=dtype, device=flat.device)
        # Chunked so that the centred copy of the embedding is never materialised whole.
        for begin in range(0, self.n_observations, _CHUNK):
            end = min(begin + _CHUNK, self.n_observations)
            torch.mm(flat[begin:end].to(dtype) - mean, transform, out=features[begin:end])
        return features

    def _greedy(self, start: torch.Tensor) -> torch.Tensor:
        """Run the farthest-point selection from ``start`` on ``self.features``.

        Args:
            start: the first index (0-d tensor).

        Returns:
            ``(coreset_size,)`` int64 indices on the features' device.
        """
        features = self.features
        n, dims = features.shape
        device, dtype = features.device, features.dtype
        head_dims = min(self.bound_dims, dims)
        # The bound reads only these columns, stored column-major for a fast matrix-vector product.
        head_t = features[:, :head_dims].T.contiguous()
        head_sq = head_t.square().sum(0)
        head_sq.mul_(1.0 - _BOUND_SLACK)
        dense_limit = int(n * _DENSE_FRACTION)

        n_blocks = math.ceil(n / _BLOCK)
        # Squared running minimum; padding rows stay at -inf so the argmax never picks them.
        min_sq = torch.full((n_blocks * _BLOCK,), -math.inf, dtype=dtype, device=device)
        blocks = min_sq.view(n_blocks, _BLOCK)
        min_sq = min_sq[:n]
        bound = torch.empty(n, dtype=dtype, device=device)
        below = torch.empty(n, dtype=torch.bool, device=device)
        scratch = torch.empty((min(_DENSE_CHUNK, n), dims), dtype=dtype, device=device)
        # Candidate rows are gathered into one reused buffer (a fresh one per selection costs page faults).
        gathered = torch.empty((dense_limit, dims), dtype=dtype, device=device)

        selected = torch.empty(self.coreset_size, dtype=torch.long, device=device)
        selected[0] = start
        self._dense_sq_distances(features[start], scratch, out=min_sq)
        block_max = blocks.amax(1)
        for step in tqdm(range(1, self.coreset_size), desc="Selecting Coreset Indices."):
            # First block holding the overall maximum, then its first row: the first index of the
            # maximum, as torch.max returns for anomalib.
            block = torch.max(block_max, dim=0).indices
            idx = block * _BLOCK + torch.max(blocks[block], dim=0).indices
            selected[step] = idx
            min_sq[idx] = 0.0
            if step == self.coreset_size - 1:
                continue  # anomalib never updates with its last center
            center = features[idx]
            center_head = center[:head_dims]
            # Lower bound (slightly lowered): |h|² - 2 h·c + |c|² over the head columns.
            torch.addmv(head_sq, head_t.T, center_head, alpha=-2.0, out=bound)
            bound.add_(center_head.square().sum() * (1.0 - _BOUND_SLACK))
            torch.lt(bound, min_sq, out=below)
            rows = below.nonzero().squeeze(1)
            if rows.numel() > dense_limit:
                new_sq = self._dense_sq_distances(center, scratch, out=bound)
                torch.minimum(min_sq, new_sq, out=min_sq)
                block_max = blocks.amax(1)
                continue
            if rows.numel() == 0:
                block_max[block] = blocks[block].max()
                continue
            diff = torch.index_select(features, 0, rows, out=gathered[: rows.numel()]).sub_(center)
            new_sq = torch.linalg.vecdot(diff, diff)
            min_sq.index_copy_(0, rows, torch.minimum(min_sq.index_select(0, rows), new_sq))
            # rows is sorted: its blocks are the consecutive unique values; the chosen block too.
            touched = torch.cat((torch.unique_consecutive(rows // _BLOCK), block.view(1)))
            block_max.index_copy_(0, touched, blocks.index_select(0, touched).amax(1))
        self.min_distances = min_sq.clamp(min=0.0).sqrt().unsqueeze(1)
        return selected

    def _dense_sq_distances(self, center: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Squared direct-difference distances from every feature row to ``center``.

        Args:
            center: ``(r,)`` center.
            scratch: ``(chunk, r)`` reusable buffer (a chunk of differences at a time).
            out: ``(n,)`` destination.

        Returns:
            ``out``.
        """
        n = self.features.shape[0]
        chunk = scratch.shape[0]
        for begin in range(0, n, chunk):
            end = min(begin + chunk, n)
            part = scratch[: end - begin]
            torch.sub(self.features[begin:end], center, out=part)
            torch.linalg.vecdot(part, part, out=out[begin:end])
        return out


class FastCoresetPatchcoreModel(PatchcoreModel):
    """anomalib's Patchcore torch model whose memory-bank subsampling uses :class:`FastKCenterGreedy`.

    It adds no state: weights, buffers and state-dict keys are those of :class:`PatchcoreModel`, so
    checkpoints load into anomalib's own Patchcore and the other way round.
    """

    def subsample_embedding(self, sampling_ratio: float, embeddings: torch.Tensor | None = None) -> None:
        """Replace the stored embeddings by their greedy k-center coreset (as anomalib's method does).

        Args:
            sampling_ratio: fraction of the stored patch embeddings to keep, in ``(0, 1]``.
            embeddings: deprecated by anomalib (since 2.1.0) and ignored, as there; a warning says so
                when it is given (anomalib's decorator warns on every call).

        Raises:
            ValueError: when no embedding has been stored.
        """
        if embeddings is not None:
            msg = "subsample_embedding(embeddings=...) is deprecated since anomalib 2.1.0 and ignored"
            warnings.warn(msg, DeprecationWarning, stacklevel=2)
        if not self.embedding_store:
            msg = "Embedding store is empty. Cannot perform coreset selection."
            raise ValueError(msg)
        self.memory_bank = torch.vstack(self.embedding_store)
        self.embedding_store.clear()
        self.memory_bank = FastKCenterGreedy(embedding=self.memory_bank, sampling_ratio=sampling_ratio).sample_coreset()


def use_fast_coreset(model: Patchcore) -> Patchcore:
    """Make an anomalib Patchcore select its memory bank with :class:`FastKCenterGreedy`.

    Patchcore's :meth:`~anomalib.models.Patchcore.fit` calls its torch model's
    ``subsample_embedding``; this gives that torch model the class
    :class:`FastCoresetPatchcoreModel`, a subclass that overrides only that method and adds no
    state, so the model keeps its weights and buffers, stays an anomalib Patchcore (same name,
    hyper-parameters, checkpoint layout; ``Patchcore.load_from_checkpoint`` reads its checkpoints)
    and its memory bank is the one anomalib's sampler would choose (same seed, no near-ties).

    Args:
        model: an anomalib ``Patchcore`` (its ``model`` a plain ``PatchcoreModel``, or already fast).

    Returns:
        ``model`` itself.

    Raises:
        TypeError: when ``model.model`` is a different subclass of ``PatchcoreModel`` (its own
            override would be silently lost) or not a Patchcore torch model at all.

    Example:
        >>> from anomalib.models import Patchcore
        >>> patchcore = use_fast_coreset(Patchcore(backbone="resnet18", pre_trained=False))
        >>> type(patchcore.model).__name__
        'FastCoresetPatchcoreModel'
    """
    torch_model = model.model
    if isinstance(torch_model, FastCoresetPatchcoreModel):
        return model
    if type(torch_model) is not PatchcoreModel:
        msg = f"expected anomalib's PatchcoreModel as model.model, got {type(torch_model).__name__}"
        raise TypeError(msg)
    # Rebinding the class is sound here: the subclass defines no __init__ and no attribute.
    torch_model.__class__ = FastCoresetPatchcoreModel
    return model
