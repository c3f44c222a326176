"""The view cache's frozen tokens on disk: ``.npy`` shards written once, read by offset.

In memory the tokens of every view of every region cost ``(1 + n_views) * T * C * 2`` bytes per
region (0.8 MB for five 224-px views of MobileNetV2 tokens: 26 GB for 32,000 regions). On disk
they are split into shards of about :data:`SHARD_BYTES`, each a plain ``.npy`` file (``np.load``
reads it), with a ``tokens.json`` manifest. Training reads the two views of a region it needs with
``os.pread``, not through a memory map: pages of a mapped file count in the process's resident
memory until the kernel drops them, while the page cache that ``pread`` fills does not, so memory
stays bounded by the batch whatever the set's size.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_ncd.io import atomic_write_text

MANIFEST = "tokens.json"
SHARD_BYTES = 256 * 2**20
DTYPE = np.dtype("<f2")  # float16, the cache's precision in memory too


def _shard_name(shard: int) -> str:
    return f"tokens-{shard:05d}.npy"


class TokenStore:
    """Frozen tokens ``(R, V, T, C)`` in float16 shards on disk; indexing returns torch tensors.

    Supports the indexing the cache's users need: ``store[r, views]`` and ``store[a:b, v]``, with
    ``r`` and ``v`` integers, ``views`` a sequence or a tensor of view numbers, ``a:b`` a slice.

    Args:
        directory: the folder of the shards and the manifest.
        shape: ``(regions, views, tokens, channels)``.
        shard_regions: regions per shard.
        writable: open the shards for writing (a new store).
    """

    def __init__(self, directory: str | Path, shape: Sequence[int], shard_regions: int, writable: bool = False) -> None:
        self.directory = Path(directory)
        self.shape = torch.Size(int(size) for size in shape)
        if len(self.shape) != 4 or shard_regions < 1:
            msg = f"a token store needs a (R, V, T, C) shape and shards of >= 1 region, got {tuple(shape)}"
            raise ValueError(msg)
        self.shard_regions = int(shard_regions)
        self.writable = writable
        self._view_bytes = self.shape[2] * self.shape[3] * DTYPE.itemsize
        self._files: dict[int, tuple[int, int]] = {}  # shard -> (file descriptor, data offset)

    # ------------------------------------------------------------------ building

    @classmethod
    def create(cls, directory: str | Path, shape: Sequence[int], shard_bytes: int = SHARD_BYTES) -> TokenStore:
        """A new, empty store: shard files of the right size (their values written later).

        Args:
            directory: the folder (created; an earlier store in it is replaced).
            shape: ``(regions, views, tokens, channels)``.
            shard_bytes: about how large a shard may be.

        Returns:
            The store, open for writing.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).unlink(missing_ok=True)  # no manifest: not a complete store
        for old in directory.glob("tokens-*.npy"):
            old.unlink()
        region_bytes = int(np.prod(shape[1:])) * DTYPE.itemsize
        store = cls(directory, shape, max(1, shard_bytes // max(region_bytes, 1)), writable=True)
        for shard in range(store.n_shards):
            rows = store._rows_of(shard)
            with (directory / _shard_name(shard)).open("wb") as file:
                np.lib.format.write_array_header_2_0(
                    file, {"descr": DTYPE.str, "fortran_order": False, "shape": (rows, *store.shape[1:])}
                )
                file.truncate(file.tell() + rows * region_bytes)
        return store

    def write(self, region: int, view: int, values: torch.Tensor) -> None:
        """Write the ``(T, C)`` tokens of one view of one region.

        Args:
            region: the region number.
            view: the view number.
            values: the tokens.
        """
        data = np.ascontiguousarray(values.detach().to("cpu", torch.float16).numpy(), dtype=DTYPE)
        if data.shape != tuple(self.shape[2:]):
            msg = f"tokens of one view must have shape {tuple(self.shape[2:])}, got {data.shape}"
            raise ValueError(msg)
        descriptor, offset = self._offset(region, view)
        os.pwrite(descriptor, data.tobytes(), offset)

    def finish(self, extra: dict[str, Any] | None = None) -> None:
        """Make the shards durable and write the manifest (atomically): the store is complete.

        Args:
            extra: more fields for the manifest (e.g. the fingerprint of what was cached).
        """
        for descriptor, _ in self._files.values():
            os.fsync(descriptor)
        self.close()
        manifest = {"shape": list(self.shape), "shard_regions": self.shard_regions, **(extra or {})}
        atomic_write_text(self.directory / MANIFEST, json.dumps(manifest, indent=1))
        self.writable = False

    # ------------------------------------------------------------------- reading

    @classmethod
    def open(cls, directory: str | Path) -> TokenStore | None:
        """The complete store in a folder, or ``None`` (no manifest: never finished, or none there).

        Args:
            directory: the folder.

        Returns:
            The store, read-only.
        """
        manifest = read_manifest(directory)
        if manifest is None:
            return None
        return cls(directory, manifest["shape"], manifest["shard_regions"])

    @property
    def n_shards(self) -> int:
        """Number of shard files."""
        return -(-self.shape[0] // self.shard_regions)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: tuple[Any, Any]) -> torch.Tensor:
        """Tokens of some views of some regions (see the class docstring for the forms of ``key``)."""
        region_key, view_key = key
        regions = range(self.shape[0])[region_key] if isinstance(region_key, slice) else [int(region_key)]
        if isinstance(view_key, slice):
            views = list(range(self.shape[1])[view_key])
        elif isinstance(view_key, int | np.integer):
            views = [int(view_key)]
        else:
            views = [int(v) for v in torch.as_tensor(view_key).reshape(-1).tolist()]
        out = np.empty((len(regions), len(views), *self.shape[2:]), dtype=DTYPE)
        for row, region in enumerate(regions):
            if not 0 <= region < self.shape[0]:
                msg = f"region {region} out of range for a store of {self.shape[0]}"
                raise IndexError(msg)
            for column, view in enumerate(views):
                descriptor, offset = self._offset(region, view)
                out[row, column] = np.frombuffer(os.pread(descriptor, self._view_bytes, offset), dtype=DTYPE).reshape(
                    self.shape[2:]
                )
        tensor = torch.from_numpy(out)
        if not isinstance(view_key, slice | Sequence | torch.Tensor | np.ndarray):
            tensor = tensor[:, 0]
        return tensor if isinstance(region_key, slice) else tensor[0]

    # ------------------------------------------------------------------ plumbing

    def _rows_of(self, shard: int) -> int:
        return min(self.shard_regions, self.shape[0] - shard * self.shard_regions)

    def _offset(self, region: int, view: int) -> tuple[int, int]:
        if not 0 <= view < self.shape[1]:
            msg = f"view {view} out of range for {self.shape[1]} views per region"
            raise IndexError(msg)
        shard, row = divmod(region, self.shard_regions)
        descriptor, start = self._file(shard)
        return descriptor, start + (row * self.shape[1] + view) * self._view_bytes

    def _file(self, shard: int) -> tuple[int, int]:
        if shard not in self._files:
            path = self.directory / _shard_name(shard)
            with path.open("rb") as file:
                version = np.lib.format.read_magic(file)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(file)
                start = file.tell()
            if tuple(shape) != (self._rows_of(shard), *self.shape[1:]) or dtype != DTYPE:
                msg = f"{path} does not hold {self._rows_of(shard)} regions of {tuple(self.shape[1:])} float16 tokens"
                raise ValueError(msg)
            self._files[shard] = (os.open(path, os.O_RDWR if self.writable else os.O_RDONLY), start)
        return self._files[shard]

    def close(self) -> None:
        """Close the open shard files (they reopen on the next read)."""
        for descriptor, _ in self._files.values():
            os.close(descriptor)
        self._files.clear()

    def __getstate__(self) -> dict[str, Any]:
        # file descriptors do not cross processes (e.g. Lightning's spawned ranks): reopen there
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # at interpreter shutdown
            self.close()


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete store, or ``None``.

    Args:
        directory: the store's folder.

    Returns:
        The manifest's fields.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
