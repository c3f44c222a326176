"""What a review buys: discover on half of MTD, review as an engineer would, then classify the rest.

The user's path, through the command line in-process (``anomalib_ncd.cli.main``):

1. ``discover`` on half of MTD's discovery set (``A``, stratified by type, seeded), from the maps
   of a Patchcore checkpoint (default: the squashed-input detector ``detector_mtd.py`` trained on
   all 762 Free images).
2. An engineer's review, simulated from the true labels of ``--per-type`` images of each type of A
   (15 by default), as a person would use them: each class is named after the type most of its
   reviewed images have (two classes with the same majority are merged); each reviewed image in a
   class of another name is moved to its type (Free: ``normal``). ``review`` applies it.
3. The other half (``B``): ``add`` to the unreviewed run (before) and to the reviewed run (after),
   and ``discover --known <reviewed run>`` on B (the reviewed classes as known ones).

Printed (image level, on B): NMI / ARI / F1 (Hungarian-matched) for each, and for the reviewed
paths the *named* accuracy (the class name equals the true type, no matching).

Usage:
    python benchmarks/review_mtd.py [--per-type 15] [--epochs 50]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _shared import finish_report
from ncd_mtd import DEFAULT_MTD, DETECTOR_ROOT

from anomalib_ncd.cli import main as cli
from anomalib_ncd.data import load_mtd
from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.results import read_run_state

NORMAL_TYPE = "Free"
CHECKPOINT = DETECTOR_ROOT / "squash" / "detector" / "Patchcore" / "MTD" / "v0" / "weights" / "lightning" / "model.ckpt"


def typed_folder(rows: pd.DataFrame, root: Path) -> Path:
    """``root/<type>/<file>`` as symbolic links to the MTD images (a typed folder the CLI reads)."""
    for row in rows.itertuples(index=False):
        target = root / str(row.defect_type) / Path(row.image_path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(Path(row.image_path).resolve())
    return root


_TYPES: dict[str, str] = {}


def typed_folder_types(root: Path) -> None:
    """Remember the type of each image of a typed folder, by its link and by the file it points to.

    ``add --images`` reads a folder's files by their resolved paths, ``discover --data`` by the
    links, so both must name the type.
    """
    for link in root.glob("*/*"):
        _TYPES[str(link)] = _TYPES[str(link.resolve())] = link.parent.name


def true_type(path: str) -> str:
    """An image's type: its folder in the typed folder."""
    return _TYPES.get(str(path), Path(path).parent.name)


def simulated_review(run: Path, per_type: int, seed: int) -> dict[str, Any]:
    """The edits of an engineer who looked at ``per_type`` images of each type with their labels."""
    images = pd.read_csv(run / "assignments.csv")
    images["type"] = images["image_path"].map(true_type)
    looked = pd.concat(
        [group.sample(min(per_type, len(group)), random_state=seed) for _, group in images.groupby("type")]
    )
    name_of_type = {kind: ("normal" if kind == NORMAL_TYPE else kind) for kind in images["type"].unique()}
    classes: dict[str, str] = {}
    for name, group in looked[looked["class_name"] != "unknown"].groupby("class_name"):
        classes[str(name)] = name_of_type[group["type"].mode().iloc[0]]
    reviewed = looked["class_name"].map(lambda name: classes.get(name, name))
    wrong = looked[reviewed != looked["type"].map(name_of_type)]
    moves = {str(row.image_path): name_of_type[row.type] for row in wrong.itertuples(index=False)}
    renames = {old: new for old, new in classes.items() if old != new}
    return {
        "format": "anomalib-ncd-review",
        "version": 1,
        "run": "/".join(run.resolve().parts[-3:]),
        "classes": renames,
        "images": moves,
        "regions": {},
    }


def scores_of(table: pd.DataFrame) -> dict[str, float]:
    """Image NMI / ARI / F1 against the true types, and the share whose class name is the true type."""
    types = table["image_path"].map(true_type).map(lambda kind: "normal" if kind == NORMAL_TYPE else kind)
    report = clustering_report(types.to_numpy(), table["class_name"].astype(str).to_numpy()).as_dict()
    named = float((table["class_name"].astype(str) == types).mean())
    return {key: report[key] for key in ("nmi", "ari", "f1", "n_samples")} | {"named_accuracy": named}


def latest(root: Path) -> Path:
    """The newest run under a results root."""
    links = sorted(root.glob("NCD/*/*/latest"))
    if not links:
        raise SystemExit(f"no run under {root}")
    return links[0].resolve()


def unfinished(root: Path) -> list[Path]:
    """Run folders an interrupted benchmark left incomplete (``discover --resume`` continues one)."""
    return [run for run in sorted(root.glob("NCD/*/*/v*")) if not read_run_state(run).get("complete", False)]


def score_finished(out: Path) -> dict[str, Any]:
    """The scores of a finished benchmark's run folders (``--score-only``): versions in the order made."""
    typed_folder_types(out / "A")
    typed_folder_types(out / "B")
    runs = out / "runs" / "NCD" / "A" / "all"
    report = {
        "A, discovered": scores_of(pd.read_csv(runs / "v0" / "assignments.csv")),
        "A, reviewed": scores_of(pd.read_csv(runs / "v1" / "assignments.csv")),
    }
    for label, version in (("B, add to the unreviewed run", "v2"), ("B, add to the reviewed run", "v3")):
        rows = pd.read_csv(runs / version / "assignments.csv")
        report[label] = scores_of(rows[rows["batch"] == version])
    report["B, discover --known reviewed"] = scores_of(pd.read_csv(latest(out / "known") / "assignments.csv"))
    return report


def print_scores(report: dict[str, Any]) -> None:
    """One line per path: image NMI / ARI / F1 and the named accuracy."""
    for key, value in report.items():
        if isinstance(value, dict) and "nmi" in value:
            print(
                f"  {key:<52} NMI {value['nmi']:.3f}  ARI {value['ari']:.3f}  F1 {value['f1']:.3f}  "
                f"named {value['named_accuracy']:.3f}"
            )


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="the detector's anomalib checkpoint")
    parser.add_argument("--per-type", type=int, default=15, help="labeled images the engineer looks at per type")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-type", type=int, default=0, help="cap images per type in each half (0: none)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/review_mtd"))
    parser.add_argument("--score-only", action="store_true", help="score the run folders of a finished run again")
    args = parser.parse_args()
    if args.score_only:
        out = args.out.resolve()
        earlier = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
        report = earlier | score_finished(out) | {"rescored": True}  # time and memory stay the run's
        print_scores(report)
        atomic_write_text(out / "results.json", json.dumps(report, indent=2, default=str))
        return
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if not args.checkpoint.is_file():
        raise SystemExit(f"detector checkpoint {args.checkpoint} not found: run benchmarks/detector_mtd.py first")
    start = time.perf_counter()
    table = load_mtd(args.mtd)
    test = table[table["split"] == "test"]
    rng = np.random.default_rng(args.seed)
    chosen = []
    for kind in sorted(test["defect_type"].unique()):  # half of each type, seeded
        rows = test.index[test["defect_type"] == kind].to_numpy()
        chosen += list(rows[rng.permutation(len(rows))[: len(rows) // 2]])
    first, rest = test.loc[sorted(chosen)], test.drop(chosen)
    if args.max_per_type:  # a quick run of the same protocol
        first, rest = (part.groupby("defect_type", group_keys=False).head(args.max_per_type) for part in (first, rest))
    out = args.out.resolve()
    set_a, set_b = typed_folder(first, out / "A"), typed_folder(rest, out / "B")
    typed_folder_types(set_a)
    typed_folder_types(set_b)
    common = [f"--detector.checkpoint={args.checkpoint.resolve()}", f"--training.epochs={args.epochs}"]
    common += [f"--seed={args.seed}", "--report=true"]
    report: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    report["sizes"] = {"A": len(first), "B": len(rest)}
    timings: dict[str, float] = {}

    def step(name: str, arguments: list[str]) -> None:
        began = time.perf_counter()
        code = cli(arguments)
        timings[name] = round(time.perf_counter() - began, 1)
        if code != 0:
            raise SystemExit(f"{name} failed with exit code {code}")
        print(f"{name}: {timings[name]:.0f} s")

    discover_a = ["discover", f"--data={set_a}", "--n_novel_classes=6", f"--output={out / 'runs'}", *common]
    step("discover A", discover_a + [f"--resume={run}" for run in unfinished(out / "runs")][:1])
    run = latest(out / "runs")
    edits = simulated_review(run, args.per_type, args.seed)
    (out / "review.json").write_text(json.dumps(edits, indent=2))
    report["review"] = {"renamed": edits["classes"], "moved_images": len(edits["images"])}
    step("review", ["review", f"--run={run}", f"--edits={out / 'review.json'}"])
    reviewed = latest(out / "runs")
    report["A, discovered"] = scores_of(pd.read_csv(run / "assignments.csv"))
    report["A, reviewed"] = scores_of(pd.read_csv(reviewed / "assignments.csv"))

    for label, parent in (("B, add to the unreviewed run", run), ("B, add to the reviewed run", reviewed)):
        step(label, ["add", f"--run={parent}", f"--images={set_b}", "--n_new_classes=auto"])
        added = latest(out / "runs")
        rows = pd.read_csv(added / "assignments.csv")
        report[label] = scores_of(rows[rows["batch"] == added.name])
    known = ["discover", f"--data={set_b}", f"--known={reviewed}", "--n_novel_classes=2", f"--output={out / 'known'}"]
    step("B, discover with the reviewed run as known classes", [*known, *common])
    report["B, discover --known reviewed"] = scores_of(pd.read_csv(latest(out / "known") / "assignments.csv"))
    report["timings_s"] = timings
    print(f"\nMTD, {len(first)} images discovered and reviewed ({args.per_type} labeled per type), {len(rest)} added:")
    print_scores(report)
    finish_report(report, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
