"""The discovery job: anomaly maps -> regions -> trained discovery model -> classes, tables and checkpoints."""
