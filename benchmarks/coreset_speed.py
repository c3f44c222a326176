"""Patchcore's coreset selection: anomalib's KCenterGreedy and FastKCenterGreedy side by side.

The embedding is what Patchcore (``mobilenetv2_100.tv_in1k``, layers ``blocks.2`` + ``blocks.4``,
256x256 input) stores for MTD's training images: 32x32 = 1024 patches per image, 32 + 96 = 128
dimensions (762 images: 780,288 rows; anomalib projects them to 334 dimensions). Without MTD, or
with ``--random``, the features come from random-weight MobileNetV2 on random images (same shape).
The embedding is cached under ``--out``.

Both samplers are seeded the same way (torch and numpy). anomalib's is slow, so it runs only the
first ``--reference-selections`` selections (the greedy choice of a prefix does not depend on the
coreset size); the fast one runs the whole 1% coreset. Selections/s exclude the one-off set-up
(random projection, first distance pass), which is timed with a one-index coreset and printed
apart. The indices of anomalib's prefix are compared with the fast sampler's.

Usage:
    python benchmarks/coreset_speed.py [--images 762] [--reference-selections 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from anomalib.models.components.sampling import KCenterGreedy

from anomalib_ncd.coreset import FastKCenterGreedy
from anomalib_ncd.detector import make_patchcore

DEFAULT_MTD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mtd"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def mtd_batches(root: Path, images: int, batch: int = 16):  # noqa: ANN201 - a generator of tensors
    import cv2

    from anomalib_ncd.data import load_mtd

    table = load_mtd(root)
    paths = table.loc[table["split"] == "train", "image_path"].tolist()[:images]
    for begin in range(0, len(paths), batch):
        pixels = [
            cv2.resize(cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1], (256, 256), interpolation=cv2.INTER_AREA)
            for path in paths[begin : begin + batch]
        ]
        yield (torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def random_batches(images: int, batch: int = 16):  # noqa: ANN201 - a generator of tensors
    generator = torch.Generator().manual_seed(0)
    for begin in range(0, images, batch):
        yield torch.randn(min(batch, images - begin), 3, 256, 256, generator=generator)


def patchcore_embedding(args: argparse.Namespace) -> tuple[torch.Tensor, str]:
    real = not args.random and args.mtd.is_dir()
    source = "MTD, ImageNet weights" if real else "random images, random weights"
    cache = args.out / f"embedding_{'mtd' if real else 'random'}_{args.images}.pt"
    if cache.is_file():
        return torch.load(cache), source
    model = make_patchcore(pre_trained=real).model.train()
    with torch.no_grad():
        for images in mtd_batches(args.mtd, args.images) if real else random_batches(args.images):
            model(images)
    embedding = torch.vstack(model.embedding_store)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(embedding, cache)
    return embedding, source


def timed_selection(sampler_class: type[KCenterGreedy], embedding: torch.Tensor, size: int) -> tuple[list[int], float]:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - anomalib's projection draws from numpy's global generator
    sampler = sampler_class(embedding, sampling_ratio=0.01)
    sampler.coreset_size = size
    start = time.perf_counter()
    indices = sampler.select_coreset_idxs()
    return indices, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--random", action="store_true", help="random-weight features of random images")
    parser.add_argument("--images", type=int, default=762)
    parser.add_argument("--reference-selections", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/coreset_speed"))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    embedding, source = patchcore_embedding(args)
    coreset_size = int(embedding.shape[0] * 0.01)
    print(f"embedding {tuple(embedding.shape)} ({source}), 1% coreset: {coreset_size} selections")
    print(f"torch threads {torch.get_num_threads()} (FastKCenterGreedy's selection loop: 1, its default)")

    rates = {}
    prefixes = {}
    for name, sampler_class, size in (
        ("anomalib KCenterGreedy", KCenterGreedy, args.reference_selections),
        ("FastKCenterGreedy", FastKCenterGreedy, coreset_size),
    ):
        _, setup = timed_selection(sampler_class, embedding, 1)
        indices, total = timed_selection(sampler_class, embedding, size)
        rates[name] = (size - 1) / max(total - setup, 1e-9)
        prefixes[name] = indices[: args.reference_selections]
        print(
            f"{name}: {size} selections in {total:.1f} s (set-up {setup:.1f} s): "
            f"{rates[name]:.1f} selections/s after set-up"
        )
        if sampler_class is KCenterGreedy:
            estimate = setup + (coreset_size - 1) / rates[name]
            print(f"  (whole {coreset_size}-selection coreset: about {estimate:.0f} s at that rate)")

    ratio = rates["FastKCenterGreedy"] / rates["anomalib KCenterGreedy"]
    same = prefixes["FastKCenterGreedy"] == prefixes["anomalib KCenterGreedy"]
    print(f"speed ratio (selections/s, fast / anomalib): {ratio:.1f}x")
    print(f"first {args.reference_selections} indices identical: {same}")


if __name__ == "__main__":
    main()
