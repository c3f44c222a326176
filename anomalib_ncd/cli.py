"""``anomalib-ncd``: the command line, in anomalib's jsonargparse style (``-c/--config``, ``--print_config``).

Commands: ``discover`` (find the defect classes of a set), ``predict`` (classify new images with a
discovered model), ``add`` (continual discovery: a new batch, new kinds appended as classes),
``evaluate`` (score a run against true types) and ``regions`` (the region stage alone). Each is a
thin wrapper over the Python API. User errors (missing paths, unreadable images, unusable maps, a
corrupt checkpoint or one that is not an anomalib checkpoint, a checkpoint that would need to run
code to load, a full disk) end with one ``anomalib-ncd: error: ...`` line and exit code 2, no
traceback; earlier results are left as they were. Checkpoints are read as data, never run
(:mod:`anomalib_ncd.checkpoints`).
"""

from __future__ import annotations

import logging
import sys
import warnings

from jsonargparse import auto_cli

# third-party deprecation notices at import time are not the user's business
warnings.filterwarnings("ignore", category=FutureWarning)

from anomalib_ncd.commands.add import add  # noqa: E402
from anomalib_ncd.commands.discover import discover  # noqa: E402
from anomalib_ncd.commands.evaluate import evaluate  # noqa: E402
from anomalib_ncd.commands.predict import predict  # noqa: E402
from anomalib_ncd.commands.regions import regions  # noqa: E402
from anomalib_ncd.maps.map_set import MapError  # noqa: E402

logger = logging.getLogger("anomalib_ncd")

COMMANDS = {"discover": discover, "predict": predict, "add": add, "evaluate": evaluate, "regions": regions}
USER_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError, MapError, PermissionError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anomalib-ncd`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = sys.argv[1:] if argv is None else list(argv)
    # anomalib's short form of --config, accepted after the subcommand too
    arguments = ["--config" if argument == "-c" else argument for argument in arguments]
    try:
        auto_cli(COMMANDS, args=arguments, as_positional=False)
    except USER_ERRORS as error:
        print(f"anomalib-ncd: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anomalib-ncd: interrupted; resume a discover run with --resume <run folder>", file=sys.stderr)
        return 130
    return 0


def _one_line(error: BaseException) -> str:
    """The error's message on one line (an ``OSError`` names its file)."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
