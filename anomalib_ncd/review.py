"""An engineer's review of a discovery run: class names, merges and moved images, as data.

The report's review panel downloads the edits as ``review.json``; ``anomalib-ncd review`` applies
them to the run's tables (:func:`apply_review`). The file holds only plain JSON::

    {
      "format": "anomalib-ncd-review",
      "version": 1,
      "run": "results/NCD/synthetic/brick/v0",
      "classes": {"novel_1": "scratch", "novel_3": "scratch", "novel_2": "stain"},
      "images": {"/data/test/0007.png": "normal"},
      "regions": {"12": "stain"}
    }

- ``classes``: a class's new name; two classes given the same name are merged.
- ``images``: an image moved to a class (a reviewed name, a class's original name, ``normal`` or
  ``unknown``); its regions follow it.
- ``regions``: a region (its ``region`` number in ``regions.csv``) moved on its own.

Names are free text: moving an image to a name no class has yet starts a class by hand, which a
later ``discover --known RUN`` learns like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from anomalib_ncd.discovery.novelty import UNKNOWN

REVIEW_FORMAT = "anomalib-ncd-review"
REVIEW_VERSION = 1
REVIEW_FILE = "review.json"
NORMAL = "normal"
MAX_NAME_LENGTH = 120


class ReviewError(ValueError):
    """A review file that cannot apply to the run: malformed, or naming classes or images it lacks."""


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        msg = f"{where}: a class name must be a non-empty string, got {value!r}"
        raise ReviewError(msg)
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH or any(ord(character) < 32 for character in name):
        msg = f"{where}: class names are at most {MAX_NAME_LENGTH} printable characters, got {name!r}"
        raise ReviewError(msg)
    return name


def _mapping(content: dict[str, Any], key: str) -> dict[str, str]:
    value = content.get(key, {})
    if not isinstance(value, dict):
        msg = f"review '{key}' must be an object of name -> class name, got {type(value).__name__}"
        raise ReviewError(msg)
    return {str(item): _name(target, f"review {key}[{item!r}]") for item, target in value.items()}


@dataclass(frozen=True)
class ReviewEdits:
    """The edits of one review.

    Attributes:
        run: the run the edits were made on (as the report names it).
        classes: original class name -> reviewed name (equal names merge classes).
        images: image path -> class name the image is moved to.
        regions: region number -> class name the region is moved to.
    """

    run: str = ""
    classes: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    regions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, content: Any) -> ReviewEdits:
        """Read the edits from parsed JSON.

        Args:
            content: the parsed ``review.json``.

        Returns:
            The edits.

        Raises:
            ReviewError: when it is not a review of this format.
        """
        if not isinstance(content, dict) or content.get("format") != REVIEW_FORMAT:
            msg = f'not an anomalib-ncd review file (expected "format": "{REVIEW_FORMAT}")'
            raise ReviewError(msg)
        if content.get("version") != REVIEW_VERSION:
            msg = f"review format version {content.get('version')!r} is not supported (this version reads 1)"
            raise ReviewError(msg)
        return cls(
            run=str(content.get("run", "")),
            classes=_mapping(content, "classes"),
            images=_mapping(content, "images"),
            regions=_mapping(content, "regions"),
        )

    @classmethod
    def read(cls, path: str | Path) -> ReviewEdits:
        """Read ``review.json``.

        Args:
            path: the file.

        Returns:
            The edits.

        Raises:
            ReviewError: when the file is missing, not JSON, or not a review.
        """
        path = Path(path)
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            msg = f"review file not found: {path}"
            raise ReviewError(msg) from error
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            msg = f"{path} is not a JSON review file: {error}"
            raise ReviewError(msg) from error
        return cls.from_dict(content)

    def as_dict(self) -> dict[str, Any]:
        """The edits as the JSON file holds them."""
        return {
            "format": REVIEW_FORMAT,
            "version": REVIEW_VERSION,
            "run": self.run,
            "classes": dict(self.classes),
            "images": dict(self.images),
            "regions": dict(self.regions),
        }

    @property
    def n_edits(self) -> int:
        """Renamed classes plus moved images and regions."""
        return len(self.classes) + len(self.images) + len(self.regions)


def reviewed_class_names(class_names: list[str], edits: ReviewEdits) -> list[str]:
    """The name of each class index after the review (merged classes share one).

    Args:
        class_names: the run's name of each class index.
        edits: the review.

    Returns:
        One name per class index.

    Raises:
        ReviewError: when the review renames a class the run does not have.
    """
    missing = sorted(set(edits.classes) - set(class_names))
    if missing:
        msg = f"the review renames classes this run does not have: {missing} (its classes: {class_names})"
        raise ReviewError(msg)
    return [edits.classes.get(name, name) for name in class_names]


def _renamed(table: pd.DataFrame, edits: ReviewEdits) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Renamed ``class_name``, the model's name (kept from an earlier review) and the ``review`` note."""
    current = table["class_name"].astype(str)
    model_names = table["model_class_name"].astype(str) if "model_class_name" in table else current
    earlier = table["review"].fillna("").astype(str) if "review" in table else pd.Series("", index=table.index)
    renamed = current.map(lambda name: edits.classes.get(name, name))
    note = earlier.where(renamed == current, "renamed")
    return renamed, model_names, note


def apply_review(
    assignments: pd.DataFrame, regions: pd.DataFrame, edits: ReviewEdits
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's tables with the review applied.

    ``class_name`` becomes the reviewed class; ``model_class_name`` keeps the model's and
    ``review`` says what changed a row (``renamed``, ``moved`` or empty). Images flagged unknown stay
    unknown unless the review moves them; an image moved to ``unknown`` is flagged.

    Args:
        assignments: the run's ``assignments.csv`` (one row per image).
        regions: the run's ``regions.csv`` (one row per region).
        edits: the review.

    Returns:
        ``(assignments, regions)`` reviewed copies.

    Raises:
        ReviewError: when the review names classes, images or regions the run does not have.
    """
    if UNKNOWN in edits.classes:
        msg = f"'{UNKNOWN}' is a flag, not a class: move its images to a class instead of renaming it"
        raise ReviewError(msg)
    known = set(assignments["class_name"].astype(str)) | set(regions["class_name"].astype(str))
    missing_classes = sorted(set(edits.classes) - known)
    if missing_classes:
        msg = f"the review renames classes this run does not have: {missing_classes}"
        raise ReviewError(msg)
    paths = assignments["image_path"].astype(str)
    missing_images = sorted(set(edits.images) - set(paths))
    if missing_images:
        shown = ", ".join(missing_images[:3]) + (" ..." if len(missing_images) > 3 else "")
        msg = f"the review moves {len(missing_images)} images this run does not have: {shown}"
        raise ReviewError(msg)
    numbers = regions["region"].astype(str) if "region" in regions else pd.Series([], dtype=str)
    missing_regions = sorted(set(edits.regions) - set(numbers))
    if missing_regions:
        msg = f"the review moves regions this run does not have: {missing_regions[:5]}"
        raise ReviewError(msg)

    images = assignments.copy()
    images["class_name"], images["model_class_name"], images["review"] = _renamed(images, edits)
    moved = paths.map(edits.images)
    is_moved = moved.notna()
    images.loc[is_moved, "class_name"] = moved[is_moved]
    images.loc[is_moved, "review"] = "moved"
    if "unknown" in images:
        unknown = images["unknown"].astype(bool)
        images["unknown"] = (unknown & ~is_moved) | (is_moved & (moved == UNKNOWN))

    table = regions.copy()
    table["class_name"], table["model_class_name"], table["review"] = _renamed(table, edits)
    follows = table["image_path"].astype(str).map(edits.images)  # an image's regions follow it
    is_following = follows.notna()
    table.loc[is_following, "class_name"] = follows[is_following]
    table.loc[is_following, "review"] = "moved"
    own = numbers.map(edits.regions) if len(numbers) else pd.Series([], dtype=object)
    is_own = own.notna()
    table.loc[is_own, "class_name"] = own[is_own]
    table.loc[is_own, "review"] = "moved"
    if "unknown" in table:
        changed = is_following | is_own
        table["unknown"] = (table["unknown"].astype(bool) & ~changed) | (changed & (table["class_name"] == UNKNOWN))
    return images, table
