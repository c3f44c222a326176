"""The ``anomalib-ncd`` commands as plain functions: the CLI parses its arguments from their signatures."""
