"""Reading checkpoints as data, never as code: ``torch.load(weights_only=True)`` and an explicit allow-list.

A ``.ckpt`` file is a pickle, and a pickle may name any callable for the unpickler to call (an
object's ``__reduce__``): loading one in full (``weights_only=False``) runs whatever its author put
there. Every checkpoint this package reads goes through :func:`read_checkpoint` or
:func:`safe_loading`, which let the unpickler build only tensors, plain Python data and the types of
the allow-list:

- anomalib's own (``anomalib.utils.serialization.anomalib_safe_globals``: its ``PrecisionType``
  enum and the numpy leaf types of optimiser state), which is what the Patchcore and PRN
  checkpoints written by ``anomalib train`` and ``Engine.fit`` need;
- the model class's ``checkpoint_safe_globals()`` (anomalib's hook for model-specific types).

The list applies inside :func:`safe_loading` only: nothing is added to torch's global allow-list.
anomalib-ncd's own checkpoints need nothing from it (tensors and plain data only). A checkpoint
that needs any other type is refused with :class:`UnsafeCheckpointError`, naming the types; the
detector's checkpoint may then be loaded in full on explicit request (``trust=True``).
"""

from __future__ import annotations

import contextlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

# what every Lightning checkpoint holds (Trainer.save_checkpoint and anomalib-ncd's own writer)
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL (\S+) was not an allowed global")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, or not the kind of checkpoint expected."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that needs types outside the allow-list: loading it in full could run code.

    Args:
        path: the file.
        types: the types it needs (``module.name``), when they could be told.
        advice: what the user can do (e.g. the opt-in flag), one sentence.

    Attributes:
        path: the file.
        types: the types it needs.
    """

    def __init__(self, path: Path, types: list[str], advice: str) -> None:
        self.path = path
        self.types = types
        needs = f"needs {', '.join(types)} to load" if types else "holds pickled data that is not plain data"
        super().__init__(
            f"{path} {needs}, outside the allow-list of safe types: unpickling it could run code, "
            f"so it was not loaded; {advice}"
        )


def allowed_types(model_class: type | None = None, extra_types: Sequence[Any] = ()) -> list[Any]:
    """The allow-list for a model class's checkpoints, besides the tensors and plain data torch accepts.

    Args:
        model_class: an anomalib model class (its ``checkpoint_safe_globals()`` are added), or ``None``.
        extra_types: further data types a particular kind of file needs.

    Returns:
        anomalib's shared types, the model's own and ``extra_types``.
    """
    from anomalib.utils.serialization import ANOMALIB_SAFE_GLOBALS, NUMPY_SAFE_GLOBALS

    model_types = getattr(model_class, "checkpoint_safe_globals", None)
    own = list(model_types()) if callable(model_types) else []
    return [*ANOMALIB_SAFE_GLOBALS, *NUMPY_SAFE_GLOBALS, *own, *extra_types]


@contextlib.contextmanager
def safe_loading(model_class: type | None = None, extra_types: Sequence[Any] = ()) -> Iterator[None]:
    """Within this block, ``torch.load(weights_only=True)`` also accepts :func:`allowed_types`.

    Args:
        model_class: the anomalib model class whose checkpoints are loaded, or ``None``.
        extra_types: further data types to accept.

    Yields:
        Nothing; the allow-list is dropped on exit.
    """
    with torch.serialization.safe_globals(allowed_types(model_class, extra_types)):
        yield


def read_checkpoint(
    path: str | Path,
    *,
    model_class: type | None = None,
    extra_types: Sequence[Any] = (),
    trust: bool = False,
    advice: str = "",
    what: str = "checkpoint",
) -> Any:
    """Read a checkpoint file onto the CPU as data: tensors, plain Python data and allowed types only.

    Zip checkpoints (``torch.save``'s format) are memory-mapped, so reading one to check it costs
    little even for a large memory bank.

    Args:
        path: the file.
        model_class: the model class whose :func:`allowed_types` apply.
        extra_types: further data types the file may hold.
        trust: load the file in full (``weights_only=False``): it may then run code. Only on the
            user's explicit request, for a file they trust.
        advice: appended to the refusal of a file that needs other types (what the user can do).
        what: what the file is, for messages (e.g. ``run checkpoint``).

    Returns:
        What the file holds.

    Raises:
        FileNotFoundError: when the file does not exist.
        UnsafeCheckpointError: when it needs types outside the allow-list (and ``trust`` is off).
        CheckpointError: when it is not a readable PyTorch checkpoint (corrupt, truncated, empty).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{what} not found: {path}"
        raise FileNotFoundError(msg)
    is_zip = zipfile.is_zipfile(path)
    try:
        with safe_loading(model_class, extra_types), warnings.catch_warnings():
            # torch's note on a foreign pickle protocol: the refusal below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=not trust, mmap=is_zip)
    except pickle.UnpicklingError as error:
        types = _unsafe_types(path, model_class, extra_types, str(error)) if not trust else []
        if types or (is_zip and not trust):
            raise UnsafeCheckpointError(path, types, advice or "do not use this file") from error
        # not torch.save's zip format and not a legacy checkpoint either: some other file
        reason = "it is not in the format torch.save writes" if not trust else None
        raise _unreadable(path, what, error, reason) from error
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, TypeError) as error:
        raise _unreadable(path, what, error) from error


def require_lightning_checkpoint(content: Any, path: str | Path, what: str) -> dict[str, Any]:
    """Check that a file's content is a Lightning checkpoint (a dict with weights and a Lightning version).

    Args:
        content: what :func:`read_checkpoint` returned.
        path: the file (for messages).
        what: what was expected, e.g. ``a checkpoint of an anomalib model``.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: naming what the file holds instead.
    """
    if not isinstance(content, dict):
        msg = f"{path} is not {what}: it holds a {type(content).__name__}, not a Lightning checkpoint"
        raise CheckpointError(msg)
    missing = [key for key in LIGHTNING_KEYS if key not in content]
    if missing:
        keys = ", ".join(repr(key) for key in list(content)[:8]) or "nothing"
        msg = (
            f"{path} is not {what}: a Lightning checkpoint (written by anomalib train, Engine.fit or "
            f"Trainer.save_checkpoint) has {' and '.join(repr(key) for key in missing)}, this file holds {keys}"
        )
        raise CheckpointError(msg)
    return content


def _unsafe_types(path: Path, model_class: type | None, extra_types: Sequence[Any], message: str) -> list[str]:
    """The types a refused file needs: read statically from its pickle, else from torch's message."""
    with contextlib.suppress(Exception), safe_loading(model_class, extra_types):
        # reads the pickle's opcodes without running them
        types = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        if types:
            return types
    return sorted(set(_GLOBAL_IN_MESSAGE.findall(message)))


def _unreadable(path: Path, what: str, error: BaseException, reason: str | None = None) -> CheckpointError:
    """The error for a file that is no readable checkpoint, with the first sentence of the cause."""
    if reason is None and isinstance(error, EOFError):
        reason = "the file ends early (empty or cut short)"
    if reason is None:
        reason = (" ".join(str(error).split()) or type(error).__name__).split(". ")[0][:200]
    return CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint (corrupt or truncated?): {reason}")
