"""Peak memory of classifying new images: each image read when its turn comes, against all read up front.

``DefectDiscovery.classify`` (and ``add_batch``, ``anomalib-ncd add``) used to read every image of the
set into a list before cutting regions; they now pass :class:`~anomalib_ncd.regions.extract.SetImages`,
which reads each image when the region stage reaches it. Both are run here on the same fitted model
and the same maps, alternately, with the resident-memory high-water mark reset before each
(Linux ``/proc/self/clear_refs``), on the high-resolution small-defect synthetic set (1024 x 768
colour images: 2.4 MB of pixels each) with oracle maps (see ``scaling.py``). The classes must agree.

Usage:
    python benchmarks/classify_memory.py [--images 200] [--repeats 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scaling import N_TYPES, make_set, oracle_maps, peak_rss_gb, reset_peak


def main() -> None:
    """Fit once, then classify the set both ways and print peak RSS and time side by side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/classify_memory"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from anomalib_ncd.pipeline.estimator import DefectDiscovery
    from anomalib_ncd.quiet import configure_output
    from anomalib_ncd.regions.extract import read_set_image

    configure_output(verbose=False)
    table = make_set(args.out / "data", "highres_small", args.images, args.seed)
    test = table[table["split"] == "test"].reset_index(drop=True)
    maps = oracle_maps(test, seed=args.seed)
    model = AnomalyNCD(n_novel_classes=N_TYPES + 1, training={"epochs": 1})
    discovery = DefectDiscovery(model, progress=False, root_dir=args.out / "engine", checkpoint_dir=None)
    discovery.fit(maps)
    fitted = discovery.model_

    def up_front() -> np.ndarray:  # the old way: every image's pixels in a list first
        images = [read_set_image(maps, index) for index in range(len(maps))]
        return fitted.classify_images(images, maps.maps).classes

    def when_needed() -> np.ndarray:
        return discovery.classify(maps).classes

    ways = {"all images read up front": up_front, "each read when needed (SetImages)": when_needed}
    peaks: dict[str, list[float]] = {name: [] for name in ways}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    classes: dict[str, np.ndarray] = {}
    for repeat in range(args.repeats):
        order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
        for name in order:
            reset_peak()
            baseline = peak_rss_gb()
            start = time.perf_counter()
            classes[name] = ways[name]()
            seconds[name].append(time.perf_counter() - start)
            peaks[name].append(peak_rss_gb() - baseline)
    first, second = (classes[name] for name in ways)
    print(f"\n{len(maps)} images of 1024 x 768, {len(discovery.regions_)} training regions")
    for name in ways:
        print(f"  {name}: peak RSS above the start {max(peaks[name]):.2f} GB, {np.median(seconds[name]):.1f} s")
    old, new = (max(peaks[name]) for name in ways)
    print(f"  memory ratio {old / max(new, 1e-9):.1f}x; same classes: {bool(np.array_equal(first, second))}")


if __name__ == "__main__":
    main()
