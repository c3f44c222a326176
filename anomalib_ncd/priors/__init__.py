"""Object priors: where the inspected object lies in each image.

An :class:`ObjectPrior` gives one boolean mask per image (``True`` on the object), which the
discovery model's region guidance and the region stage (``drop_outside``) use. Kinds (see
``docs/object_priors.md``): ``none``, ``whole_image``, ``foreground`` (training-free, border-model
segmentation that degrades to the whole image on textures) and ``grounded_sam`` (GroundingDINO boxes
turned into masks by SAM, cached on disk).
"""

from anomalib_ncd.priors.base import ObjectPrior, ObjectPriorError, PriorMask, WholeImagePrior
from anomalib_ncd.priors.cache import CachedObjectPrior, default_cache_dir
from anomalib_ncd.priors.factory import build_object_prior
from anomalib_ncd.priors.foreground import ForegroundParameters, ForegroundPrior
from anomalib_ncd.priors.settings import ObjectPriorSettings

__all__ = [
    "CachedObjectPrior",
    "ForegroundParameters",
    "ForegroundPrior",
    "ObjectPrior",
    "ObjectPriorError",
    "ObjectPriorSettings",
    "PriorMask",
    "WholeImagePrior",
    "build_object_prior",
    "default_cache_dir",
]
