"""Anomaly maps in: the map set, its sources, and the raw-map export callback."""
