"""Anomaly detectors of the plugin, usable with anomalib's CLI and Engine (``--model anomalib_ncd.models.Prn``)."""

from anomalib_ncd.models.prn import Prn

__all__ = ["Prn"]
