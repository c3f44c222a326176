"""Build the object prior that a settings object describes."""

from __future__ import annotations

from anomalib_ncd.priors.base import ObjectPrior, WholeImagePrior
from anomalib_ncd.priors.cache import CachedObjectPrior
from anomalib_ncd.priors.foreground import ForegroundPrior
from anomalib_ncd.priors.settings import ObjectPriorSettings


def build_object_prior(settings: ObjectPriorSettings, category: str | None = None) -> ObjectPrior | None:
    """The object prior of ``settings``.

    ``whole_image`` and ``foreground`` are cheap and not cached. ``grounded_sam`` loads GroundingDINO
    and SAM from the settings' local files and is wrapped in a :class:`CachedObjectPrior` (folder:
    ``settings.cache_dir`` or ``<cache root>/object_priors``).

    Args:
        settings: the prior's settings.
        category: the category name, the GroundingDINO prompt when ``settings.prompt`` is ``None``.

    Returns:
        ``None`` for kind ``none``, the prior otherwise.

    Raises:
        ObjectPriorError: for grounded_sam without a prompt, without the ``sam`` extra, with missing
            weight files or an unusable device (the message names what to fix).
    """
    if settings.kind == "none":
        return None
    if settings.kind == "whole_image":
        return WholeImagePrior()
    if settings.kind == "foreground":
        return ForegroundPrior()
    from anomalib_ncd.priors.grounded_sam import build_grounded_sam

    return CachedObjectPrior(build_grounded_sam(settings, category), settings.cache_dir)
