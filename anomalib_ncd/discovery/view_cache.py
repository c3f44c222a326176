"""The frozen part's output for every view of every region, computed once and reused every epoch.

Everything before the trainable tail is frozen, so for a given view (pixels and mask) its tokens
never change. Computing them once per view turns each training epoch into a pass over the small
tail only: on a CPU the difference between minutes and hours. View 0 of each region is the plain
evaluation view; views ``1..n_views`` are the augmented training views.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from anomalib_ncd.discovery.guidance import GuidanceSettings, guide_of, pool_to_patches
from anomalib_ncd.discovery.token_store import TokenStore, read_manifest
from anomalib_ncd.discovery.views import ViewMaker
from anomalib_ncd.io import atomic_write_path
from anomalib_ncd.threads import torch_threads

if TYPE_CHECKING:
    from anomalib_ncd.discovery.backbone import TokenBackbone

GUIDES_FILE = "guides.npz"


@dataclass
class ViewCache:
    """Cached frozen tokens and patch guidance of every view of a set of regions.

    Attributes:
        tokens: ``(R, 1 + n_views, T, C)`` frozen tokens (half precision to halve memory), in memory
            or on disk (:class:`~anomalib_ncd.discovery.token_store.TokenStore`).
        anomaly: ``(R, 1 + n_views, N)`` anomaly coverage of each patch.
        scores: ``(R,)`` region anomaly scores in ``[0, 1]``.
        areas: ``(R,)`` anomalous pixels of each region.
        image_index: ``(R,)`` image of each region.
        whole_image: ``(R,)`` True for the whole-image region of an image where nothing was found.
        objects: ``(R, 1 + n_views, N)`` object coverage of each patch (the object prior), or
            ``None`` when the regions have no object masks.
        soft: ``(R,)`` True for soft-path regions (MEBin found nothing; centred on the map's peak),
            or ``None`` for none.
        anomalous: ``(R,)`` the detector's calibrated probability that a soft-path region's image is
            anomalous (NaN elsewhere), or ``None``.
    """

    tokens: torch.Tensor | TokenStore
    anomaly: torch.Tensor
    scores: torch.Tensor
    areas: torch.Tensor
    image_index: torch.Tensor
    whole_image: torch.Tensor
    objects: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    anomalous: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_views(self) -> int:
        """Augmented views per region (the plain view excluded)."""
        return self.tokens.shape[1] - 1

    def plain_descriptors(self, end: int | None = None, chunk: int = 512) -> torch.Tensor:
        """Anomaly-pooled frozen descriptors of the plain views of the first ``end`` regions.

        Read in chunks, so the tokens of the whole set are never in memory at once.

        Args:
            end: number of regions (all by default).
            chunk: regions read at a time.

        Returns:
            ``(end, C)`` float32 descriptors (:func:`~anomalib_ncd.discovery.novelty.anomaly_pooled`).
        """
        from anomalib_ncd.discovery.novelty import anomaly_pooled

        end = len(self) if end is None else end
        bounds = [(start, min(start + chunk, end)) for start in range(0, end, chunk)]
        parts = [anomaly_pooled(self.tokens[a:b, 0], self.anomaly[a:b, 0]) for a, b in bounds]
        return torch.cat(parts) if parts else torch.empty((0, self.tokens.shape[3]))

    def save_guides(self, directory: Path, fingerprint: str) -> None:
        """Write everything but the tokens (guides, scores, flags) next to an on-disk token store.

        Args:
            directory: the store's folder.
            fingerprint: what was cached (:func:`view_fingerprint`); checked when loading.
        """
        arrays: dict[str, Any] = {name: value.numpy() for name, value in self._small_tensors().items()}
        arrays["fingerprint"] = np.array(fingerprint)
        with atomic_write_path(directory / GUIDES_FILE) as temporary, temporary.open("wb") as file:
            np.savez(file, **arrays)

    def _small_tensors(self) -> dict[str, torch.Tensor]:
        named = {
            "anomaly": self.anomaly,
            "scores": self.scores,
            "areas": self.areas,
            "image_index": self.image_index,
            "whole_image": self.whole_image,
            "objects": self.objects,
            "soft": self.soft,
            "anomalous": self.anomalous,
        }
        return {name: value for name, value in named.items() if value is not None}


class RegionLike(Protocol):
    """What the cache needs of a region: crop, mask, score, area, image index, whole-image flag.

    A region may also carry ``object_mask`` (its crop of the object prior) and ``soft_mask``. The
    members are read-only, so a region whose crop is always loaded (``np.ndarray``) fits as well as
    :class:`~anomalib_ncd.regions.crops.Region` (``np.ndarray | None``).
    """

    @property
    def crop(self) -> np.ndarray | None:
        """The image pixels of the region's box (``None`` when not loaded)."""

    @property
    def mask(self) -> np.ndarray | None:
        """The binary mask inside the box (``None`` when not loaded)."""

    @property
    def score(self) -> float:
        """The region's anomaly score."""

    @property
    def area(self) -> int:
        """Anomalous pixels of the region."""

    @property
    def image_index(self) -> int:
        """Position of the region's image in its map set."""

    @property
    def whole_image(self) -> bool:
        """Whether the region is the whole image (nothing found)."""


def region_view(
    region: RegionLike,
    maker: ViewMaker,
    guidance: GuidanceSettings,
    grid: tuple[int, int],
    region_number: int = 0,
    view_number: int = 0,
    with_object: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One view of a region and its per-patch guides: the plain view (0) or augmented view ``v``.

    The anomaly guide and the object mask go through the same geometric transform as the pixels.

    Args:
        region: a region with its crop and mask loaded.
        maker: the view maker.
        guidance: the guidance settings (which guide: binary mask or map).
        grid: the backbone's patch grid.
        region_number: the region's number (seeds its augmented views).
        view_number: 0 for the plain view, else an augmented one.
        with_object: also return the object coverage per patch (the whole crop when the region has
            no object mask).

    Returns:
        ``(3, S, S)`` image, ``(N,)`` anomaly coverage and ``(N,)`` object coverage (or ``None``).

    Raises:
        ValueError: when the region has no crop loaded.
    """
    if region.crop is None or region.mask is None:
        msg = f"region {region_number} has no crop loaded: extract regions with load_crops=True"
        raise ValueError(msg)
    guide = np.asarray(guide_of(region, guidance), dtype=np.float32)
    if with_object:
        on_object = getattr(region, "object_mask", None)
        on_object = np.ones(guide.shape, np.float32) if on_object is None else np.asarray(on_object, np.float32)
        guide = np.stack([guide, on_object])
    if view_number == 0:
        image, masks = maker.plain(region.crop, guide)
    else:
        image, masks = maker.augmented(region.crop, guide, region_number, view_number)
    patches = pool_to_patches(masks.reshape(-1, *masks.shape[-2:]), grid)
    return image, patches[0], patches[1] if with_object else None


def has_object_masks(regions: Sequence[RegionLike]) -> bool:
    """Whether any region carries an object mask (then every view gets an object coverage)."""
    return any(getattr(region, "object_mask", None) is not None for region in regions)


def view_fingerprint(regions: Sequence[RegionLike], backbone: TokenBackbone, view_maker: ViewMaker) -> str:
    """A digest of everything the cached views depend on: regions, frozen weights, view settings, seed.

    A cache on disk is reused (by a resumed run, or the next fit of the same set) only when this
    matches.

    Args:
        regions: the regions to cache (crops and masks loaded).
        backbone: the token backbone (its frozen weights and guidance settings count).
        view_maker: the view maker (settings and seed).

    Returns:
        A hex digest.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((type(backbone).__name__, backbone.guidance, backbone.grid, view_maker.settings)).encode())
    digest.update(str(view_maker.seed).encode())
    for name, value in sorted(backbone.state_dict().items()):
        if any(name.startswith(f"{module}.") for module in backbone.frozen_modules):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    for region in regions:
        extras = (getattr(region, "object_mask", None), getattr(region, "soft_mask", None))
        for array in (region.crop, region.mask, *extras):
            if array is not None:
                digest.update(repr(np.shape(array)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        flags = (
            region.score,
            region.area,
            region.image_index,
            region.whole_image,
            getattr(region, "source", "region"),
            getattr(region, "anomalous_probability", None),
        )
        digest.update(repr(flags).encode())
    return digest.hexdigest()


def load_view_cache(directory: str | Path, fingerprint: str) -> ViewCache | None:
    """The complete cache on disk in ``directory`` when it holds the views ``fingerprint`` names.

    Args:
        directory: the cache folder (:func:`build_view_cache`'s ``directory``).
        fingerprint: :func:`view_fingerprint` of the regions to cache.

    Returns:
        The cache (tokens read from disk), or ``None`` when there is none or it holds other views.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    guides_path = directory / GUIDES_FILE
    if manifest is None or manifest.get("fingerprint") != fingerprint or not guides_path.is_file():
        return None
    with np.load(guides_path, allow_pickle=False) as guides:
        if str(guides["fingerprint"]) != fingerprint:
            return None
        arrays = {name: torch.from_numpy(guides[name].copy()) for name in guides.files if name != "fingerprint"}
    tokens = TokenStore.open(directory)
    if tokens is None:
        return None
    return ViewCache(tokens=tokens, **arrays)


def build_view_cache(
    regions: Sequence[RegionLike],
    backbone: TokenBackbone,
    view_maker: ViewMaker,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    directory: str | Path | None = None,
    fingerprint: str | None = None,
) -> ViewCache:
    """Run the frozen part once on the plain view and every augmented view of each region.

    Args:
        regions: regions with their crop and mask loaded.
        backbone: a token backbone (``frozen(images, anomaly)``, ``grid``).
        view_maker: makes the views (its seed fixes them).
        batch_size: views per forward pass.
        device: where the frozen part runs.
        progress: called with the number of views done after each batch.
        directory: keep the tokens on disk in this folder
            (:class:`~anomalib_ncd.discovery.token_store.TokenStore`) instead of in memory; the
            cache is complete, and reusable with :func:`load_view_cache`, only once this returns.
        fingerprint: :func:`view_fingerprint` of the regions, stored with an on-disk cache
            (computed when omitted).

    Returns:
        The cache, on the CPU.
    """
    n_views = view_maker.settings.n_views
    with_object = has_object_masks(regions)
    jobs = [(r, v) for r in range(len(regions)) for v in range(1 + n_views)]
    tokens: torch.Tensor | TokenStore | None = None
    anomaly: torch.Tensor | None = None
    objects: torch.Tensor | None = None
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        # many tiny augmentation ops: one thread (see anomalib_ncd.threads); the backbone keeps all
        with torch_threads(1):
            views = [
                region_view(regions[r], view_maker, backbone.guidance, backbone.grid, r, v, with_object)
                for r, v in chunk
            ]
        patches = torch.stack([view[1] for view in views])
        # with_object: every view has its object coverage
        on_object = torch.stack([view[2] for view in views if view[2] is not None]) if with_object else None
        # half precision on a GPU: the cache is stored in float16 anyway
        with torch.autocast(device_type=torch.device(device).type, enabled=torch.device(device).type == "cuda"):
            out = backbone.frozen(
                torch.stack([view[0] for view in views]).to(device),
                patches.to(device),
                None if on_object is None else on_object.to(device),
            ).to("cpu", torch.float16)
        if tokens is None:
            shape = (len(regions), 1 + n_views, *out.shape[1:])
            if directory is None:
                tokens = torch.empty(shape, dtype=torch.float16)
            else:
                tokens = TokenStore.create(directory, shape)
            anomaly = torch.empty((len(regions), 1 + n_views, patches.shape[1]), dtype=torch.float32)
            objects = torch.empty_like(anomaly) if with_object else None
        assert anomaly is not None  # allocated with tokens, on the first batch
        for row, (region_number, view_number) in enumerate(chunk):
            if isinstance(tokens, TokenStore):
                tokens.write(region_number, view_number, out[row])
            else:
                tokens[region_number, view_number] = out[row]
            anomaly[region_number, view_number] = patches[row]
            if objects is not None and on_object is not None:
                objects[region_number, view_number] = on_object[row]
        if progress is not None:
            progress(len(chunk))
    if tokens is None or anomaly is None:
        msg = "no regions to cache"
        raise ValueError(msg)
    cache = ViewCache(
        tokens=tokens,
        anomaly=anomaly,
        scores=torch.tensor([float(r.score) for r in regions], dtype=torch.float32),
        areas=torch.tensor([float(r.area) for r in regions], dtype=torch.float32),
        image_index=torch.tensor([int(r.image_index) for r in regions], dtype=torch.long),
        whole_image=torch.tensor([bool(r.whole_image) for r in regions], dtype=torch.bool),
        objects=objects,
        soft=torch.tensor([getattr(r, "source", "region") == "soft" for r in regions], dtype=torch.bool),
        anomalous=torch.tensor(
            [float(getattr(r, "anomalous_probability", float("nan"))) for r in regions], dtype=torch.float32
        ),
    )
    if isinstance(tokens, TokenStore):
        fingerprint = fingerprint or view_fingerprint(regions, backbone, view_maker)
        cache.save_guides(Path(tokens.directory), fingerprint)
        tokens.finish({"fingerprint": fingerprint})  # the manifest last: only now is the cache complete
    return cache
