"""PRN: Prototypical Residual Network (CVPR 2023) as an anomalib model."""

from anomalib_ncd.models.prn.lightning_model import Prn

__all__ = ["Prn"]
