"""A self-contained visual HTML report of a discovery run: galleries per class, metrics and figures."""

from __future__ import annotations

from anomalib_ncd.report.data import ReportData
from anomalib_ncd.report.html import write_report

__all__ = ["ReportData", "write_report"]
