"""Anomaly detectors of the plugin, usable with anomalib's CLI and Engine (``--model anomalib_ncd.models.Prn``).

``anomalib_ncd.models.Patchcore`` is anomalib's Patchcore with the offline weights and the fast
coreset, for ``anomalib train`` with anomalib's own datamodules in an air-gapped plant.
"""

from anomalib_ncd.models.patchcore import Patchcore
from anomalib_ncd.models.prn import Prn

__all__ = ["Patchcore", "Prn"]
