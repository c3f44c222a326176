"""Quiet output for the command line: one line per stage and the progress bars, no library chatter.

Lightning, anomalib and timm each print their own status lines (accelerators found, a cloud-logging
tip, model initialisation, weight-file names, model summaries) and a few warnings that are harmless
for this tool (a frozen backbone kept in eval mode, a classifier head not loaded into a feature
extractor). ``anomalib-ncd`` hides them unless ``--verbose`` is given; the Python API leaves logging
to its caller and stays as it is until :func:`configure_output` is called.

Only what is known to be harmless is hidden: other warnings and every error still show.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

CHATTY_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "lightning_fabric",
    "pytorch_lightning",
    "anomalib",
    "timm",
)
"""Loggers whose INFO lines are status chatter here; their warnings still show (except the harmless ones)."""

HARMLESS_LOG_MESSAGES = (
    # a features-only backbone built from a full ImageNet checkpoint: its classifier is not needed
    r"Unexpected keys \(.*\) found while loading pretrained weights",
    # anomalib's pre-processor resizes with the same interpolation in another spelling
    r"Conflicting interpolation method found between augmentations and model transforms",
    # Engine.predict given a model this tool has already loaded from its checkpoint
    r"ckpt_path is not provided\. Model weights will not be loaded",
)
HARMLESS_WARNINGS = (
    # the frozen backbone stays in eval mode on purpose (batch-norm statistics of ImageNet)
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Patchcore and PRN's memory-bank fit have no optimizer by design
    r"`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
)

_state = {"verbose": True}
OUTPUT_ENV = "ANOMALIB_NCD_QUIET"
"""Set by :func:`configure_output` for the processes Lightning starts (DDP): they inherit the setting."""


class _HarmlessMessages(logging.Filter):
    """Drops the log records whose message is one of :data:`HARMLESS_LOG_MESSAGES`."""

    def __init__(self) -> None:
        super().__init__()
        self._pattern = re.compile("|".join(HARMLESS_LOG_MESSAGES))

    def filter(self, record: logging.LogRecord) -> bool:
        return self._pattern.search(record.getMessage()) is None


_FILTER = _HarmlessMessages()


def configure_output(verbose: bool) -> None:
    """Show everything (``verbose``) or only this tool's lines, progress bars and real warnings.

    Args:
        verbose: keep the libraries' status lines, model summaries and harmless warnings.
    """
    _state["verbose"] = verbose
    os.environ[OUTPUT_ENV] = "0" if verbose else "1"
    _import_lightning()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    # records reach handlers, not their parents' filters: the filter goes on every handler they meet
    handlers = [handler for name in ("", *CHATTY_LOGGERS) for handler in logging.getLogger(name).handlers]
    for handler in handlers:
        if verbose:
            handler.removeFilter(_FILTER)
        else:
            handler.addFilter(_FILTER)
    if not verbose:
        for message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message)


def _import_lightning() -> None:
    """Import Lightning's packages now: each sets its loggers to INFO when imported, so set ours after."""
    import importlib

    for package in ("lightning.pytorch", "lightning_fabric", "pytorch_lightning"):
        try:
            importlib.import_module(package)
        except ImportError:  # the standalone packages are optional
            continue


def is_verbose() -> bool:
    """Whether library status output (e.g. Lightning's model summary) should be shown."""
    return _state["verbose"]


def follow_parent_output() -> None:
    """In a process Lightning started (a DDP worker), be as quiet as the command that started it."""
    if os.environ.get(OUTPUT_ENV) == "1" and _state["verbose"]:
        configure_output(verbose=False)
