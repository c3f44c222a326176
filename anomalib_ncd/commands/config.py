"""The resolved configuration of a run: written as ``config.yaml``, read back to resume the run."""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

CONFIG_FILE = "config.yaml"


def plain(value: Any) -> Any:
    """A value as YAML-able plain data in jsonargparse's format.

    Settings dataclasses become mappings; enums (anomalib's ``TestSplitMode``, torchvision's
    ``InterpolationMode``...) become their values; NumPy scalars become Python numbers; other objects
    (an anomalib datamodule, a transform) become ``class_path`` / ``init_args`` (their attributes
    that are ``__init__`` parameters).

    Args:
        value: any argument value.

    Returns:
        Plain data.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    parameters = inspect.signature(type(value).__init__).parameters
    init_args = {name: plain(getattr(value, name)) for name in parameters if name != "self" and hasattr(value, name)}
    return {"class_path": f"{type(value).__module__}.{type(value).__qualname__}", "init_args": init_args}


def config_yaml(arguments: dict[str, Any]) -> str:
    """The YAML text of a command's resolved arguments.

    Args:
        arguments: argument name -> value.

    Returns:
        YAML, readable by ``anomalib-ncd <command> -c``.
    """
    return yaml.safe_dump({name: plain(value) for name, value in arguments.items()}, sort_keys=False)


def load_arguments(command: Callable[..., Any], path: str | Path) -> dict[str, Any]:
    """Parse a config file written by :func:`config_yaml` into the command's arguments.

    Args:
        command: the command function whose signature defines the arguments.
        path: the config file.

    Returns:
        Argument name -> value, with settings and classes instantiated.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(command, as_positional=False)
    config = parser.parse_path(str(path))
    return {key: value for key, value in vars(parser.instantiate_classes(config)).items() if key != "__path__"}
