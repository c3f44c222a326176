"""Quiet command-line output: library status lines hidden, real warnings kept, ``--verbose`` shows all."""

import subprocess
import sys

import pytest

from anomalib_ncd.cli import _verbose_flag

SCRIPT = """
import logging, warnings
logging.basicConfig(level=logging.INFO, format="%(message)s")
from anomalib_ncd.quiet import configure_output
configure_output({verbose})
import anomalib.engine  # imports lightning_fabric too, which resets its loggers unless handled
from lightning.pytorch import Trainer
Trainer(logger=False, accelerator="cpu", devices=1)
logging.getLogger("timm.models._builder").warning(
    "Unexpected keys (classifier.weight) found while loading pretrained weights"
)
warnings.warn("Found 3 module(s) in eval mode at the start of training.", UserWarning)
warnings.warn("`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer")
warnings.warn("a real problem", UserWarning)
logging.getLogger("anomalib_ncd").info("one line per stage")
"""


def _stderr(verbose: bool) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(verbose=verbose)], capture_output=True, text=True, timeout=300, check=True
    )
    return completed.stdout + completed.stderr


def test_quiet_output_hides_library_chatter_but_not_real_warnings():
    output = _stderr(verbose=False)
    chatter_lines = ("GPU available", "TPU available", "litlogger", "Unexpected keys", "in eval mode", "no optimizer")
    for chatter in chatter_lines:
        assert chatter not in output
    assert "a real problem" in output
    assert "one line per stage" in output


def test_verbose_output_shows_everything():
    output = _stderr(verbose=True)
    shown = ("GPU available", "Unexpected keys", "in eval mode", "no optimizer", "a real problem", "one line per stage")
    for line in shown:
        assert line in output


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["discover", "--data", "x"], (["discover", "--data", "x"], False)),
        (["--verbose", "discover", "--data", "x"], (["discover", "--data", "x"], True)),
        (["discover", "--data", "x", "--verbose"], (["discover", "--data", "x"], True)),
        (["discover", "--verbose", "true", "--data", "x"], (["discover", "--data", "x"], True)),
        (["discover", "--verbose", "false", "--data", "x"], (["discover", "--data", "x"], False)),
        (["discover", "--verbose=true"], (["discover"], True)),
        (["discover", "-v"], (["discover"], True)),
    ],
)
def test_the_verbose_flag_is_taken_out_of_the_command_line(arguments, expected):
    assert _verbose_flag(arguments) == expected


def test_processes_started_by_a_quiet_command_are_quiet_too():
    """A DDP worker inherits the environment: ``follow_parent_output`` (the model's setup) makes it quiet."""
    import os

    script = (
        "from anomalib_ncd.quiet import configure_output, follow_parent_output, is_verbose, OUTPUT_ENV\n"
        "import os\n"
        "follow_parent_output(); print(is_verbose())\n"
        "configure_output(True); print(os.environ[OUTPUT_ENV])\n"
    )
    quiet = os.environ | {"ANOMALIB_NCD_QUIET": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True, env=quiet
    )
    assert completed.stdout.split() == ["False", "0"]
    loud = os.environ | {"ANOMALIB_NCD_QUIET": "0"}
    completed = subprocess.run(
        [sys.executable, "-c", "from anomalib_ncd.quiet import follow_parent_output, is_verbose\n"
         "follow_parent_output(); print(is_verbose())"],
        capture_output=True, text=True, timeout=300, check=True, env=loud,
    )  # fmt: skip
    assert completed.stdout.split() == ["True"]
