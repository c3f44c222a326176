"""Regions out: MEBin binarisation, anomaly-centred crops, the anomalib post-processor."""
