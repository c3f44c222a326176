"""``anomalib-ncd``: the command line, in anomalib's jsonargparse style (``-c``, ``--print_config``).

Commands: ``discover`` (find the defect classes of a set), ``predict`` (classify new images with a
discovered model), ``add`` (continual discovery: a new batch, new kinds appended as classes),
``evaluate`` (score a run against true types), ``regions`` (the region stage alone), ``review``
(apply the edits made in a run's report: class names, merges, moved images) and ``export`` (a run's
images in one folder per class). Each is a thin wrapper over the Python API. Output is one line per
stage and progress bars; ``--verbose`` (anywhere on the line) also shows the libraries' status
lines, model summaries and harmless warnings. User errors (missing paths, unreadable images,
unusable maps, a corrupt checkpoint or one that is not an anomalib checkpoint, a checkpoint that
would need to run code to load, a full disk) end with one ``anomalib-ncd: error: ...`` line and exit
code 2, no traceback; earlier results are left as they were. Checkpoints are read as data, never run
(:mod:`anomalib_ncd.checkpoints`). A bad option value (``--n_novel_classes abc``) is one line too,
saying what the option accepts, followed by a line pointing at ``--help``.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentError, auto_cli

# third-party deprecation notices at import time are not the user's business
warnings.filterwarnings("ignore", category=FutureWarning)

from anomalib_ncd.commands.add import add  # noqa: E402
from anomalib_ncd.commands.discover import discover  # noqa: E402
from anomalib_ncd.commands.evaluate import evaluate  # noqa: E402
from anomalib_ncd.commands.export import export  # noqa: E402
from anomalib_ncd.commands.predict import predict  # noqa: E402
from anomalib_ncd.commands.regions import regions  # noqa: E402
from anomalib_ncd.commands.review import review  # noqa: E402
from anomalib_ncd.maps.map_set import MapError  # noqa: E402
from anomalib_ncd.quiet import configure_output  # noqa: E402

logger = logging.getLogger("anomalib_ncd")

COMMANDS: dict[str, Callable[..., Any]] = {
    "discover": discover,
    "predict": predict,
    "add": add,
    "evaluate": evaluate,
    "regions": regions,
    "review": review,
    "export": export,
}
USER_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError, MapError, PermissionError, OSError)
ALLOWED_VALUES = {
    "n_novel_classes": "an integer of at least 2 (the classes to discover, normal included) or auto",
}
"""What an option accepts, in words, for the options whose type reads badly in a parser message."""
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anomalib-ncd`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = sys.argv[1:] if argv is None else list(argv)
    arguments, verbose = _verbose_flag(arguments)
    configure_output(verbose)
    # anomalib's short form of --config, accepted after the subcommand too
    arguments = ["--config" if argument == "-c" else argument for argument in arguments]
    try:
        # a fresh dict literal takes jsonargparse's component type (a dict's value type is invariant)
        auto_cli({**COMMANDS}, args=arguments, as_positional=False, exit_on_error=False)
    except ArgumentError as error:
        command = next((argument for argument in arguments if argument in COMMANDS), None)
        print(f"anomalib-ncd: error: {argument_error_message(error)}", file=sys.stderr)
        print(f"  the options: anomalib-ncd {command or '<command>'} --help", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        print(f"anomalib-ncd: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        command = next((argument for argument in arguments if argument in COMMANDS), None)
        # predict says itself how far it got and which --output resumes it
        hint = {"discover": "; resume the run with --resume <run folder>"}.get(command or "", "")
        print(f"anomalib-ncd: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


def argument_error_message(error: BaseException) -> str:
    """A parser error on one line, saying what the option accepts.

    jsonargparse lists every member of a union type, over several lines; this keeps the option,
    the value given and what is allowed.

    Args:
        error: the parser's error.

    Returns:
        The message, e.g. ``--n_novel_classes: 'abc' is not allowed; give an integer ... or auto``.
    """
    text = str(error)
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', text, re.DOTALL)
    if match is None:
        return _one_line(error)
    key, detail = match.groups()
    given = re.search(r"(?:Given value|Got value): (.*)$", detail, re.MULTILINE)
    allowed = ALLOWED_VALUES.get(key) or _expected_types(detail)
    if given is None or not allowed:
        return f"--{key}: {_one_line(ValueError(detail))}"
    return f"--{key}: {given.group(1).strip()!r} is not allowed; give {allowed}"


def _expected_types(detail: str) -> str:
    """The types a jsonargparse message says it expected, in words (``int or 'auto'``)."""
    names = []
    for expected in re.findall(r"Expected a (.+?)(?:\. Got value:|$)", detail, re.MULTILINE):
        name = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", expected.strip())
        name = re.sub(r"typing\.Literal\[(.*)\]", r"\1", name)
        if name != "NoneType":
            names.append(TYPE_WORDS.get(name, name))
    return " or ".join(dict.fromkeys(names))


def _verbose_flag(arguments: list[str]) -> tuple[list[str], bool]:
    """The arguments without ``--verbose`` (also ``--verbose true|false``), and whether it was given.

    A flag of the whole tool rather than of each command: it changes what is printed, never a result.
    """
    verbose, kept, skip = False, [], False
    for position, argument in enumerate(arguments):
        if skip:
            skip = False
            continue
        if argument in ("--verbose", "-v"):
            following = arguments[position + 1].lower() if position + 1 < len(arguments) else ""
            if following in ("true", "false"):
                verbose, skip = following == "true", True
            else:
                verbose = True
        elif argument.startswith("--verbose="):
            verbose = argument.split("=", 1)[1].lower() == "true"
        else:
            kept.append(argument)
    return kept, verbose


def _one_line(error: BaseException) -> str:
    """The error's message on one line (an ``OSError`` names its file)."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
