"""Channels-last against NCHW weights for the two CNN forward passes of a run, side by side.

1. The discovery model's frozen part (``CNNTokenBackbone.frozen``: MobileNetV2 to stride 16 at
   224 px), which builds the view cache and runs in every prediction.
2. Patchcore's embedding (anomalib's ``PatchcoreModel`` on ``mobilenetv2_100.tv_in1k``, layers
   ``blocks.2`` + ``blocks.4``, 288 px): the detector's training pass and its maps.

Both layouts run the same weights on the same random batches, alternately, after a warm-up; the
outputs are compared (they agree up to float rounding). Prints images/s per layout and the ratio.

Usage:
    python benchmarks/channels_last_speed.py [--batch 32] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch

from anomalib_ncd.discovery.backbone import CNNTokenBackbone


def to_nchw(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module with its weights in the default contiguous (NCHW) layout."""
    return copy.deepcopy(module).to(memory_format=torch.contiguous_format)


def side_by_side(
    name: str, forwards: dict[str, Callable[[torch.Tensor], torch.Tensor]], images: torch.Tensor, repeats: int
) -> None:
    """Time each forward alternately on the same batch; print rates, the ratio and the largest difference."""
    seconds = dict.fromkeys(forwards, 0.0)
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for forward in forwards.values():
            forward(images)  # warm-up: oneDNN picks its kernels
        for _ in range(repeats):
            for layout, forward in forwards.items():
                start = time.perf_counter()
                outputs[layout] = forward(images)
                seconds[layout] += time.perf_counter() - start
    rates = {layout: repeats * len(images) / total for layout, total in seconds.items()}
    reference, fast = outputs["nchw"], outputs["channels_last"]
    difference = float((reference - fast).abs().max() / reference.abs().max().clamp_min(1e-12))
    print(
        f"{name}: NCHW {rates['nchw']:.1f} images/s, channels-last {rates['channels_last']:.1f} images/s, "
        f"ratio {rates['channels_last'] / rates['nchw']:.2f}x; "
        f"largest difference {difference:.1e} of the output's range"
    )


def main() -> None:
    """Run both comparisons."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass (the default batch sizes)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tokens = CNNTokenBackbone().eval()  # channels-last since it was built
    plain_tokens = to_nchw(tokens)
    views, anomaly = torch.randn(args.batch, 3, 224, 224), torch.rand(args.batch, 196)
    side_by_side(
        "discovery frozen part (224 px views)",
        {"nchw": lambda x: plain_tokens.frozen(x, anomaly), "channels_last": lambda x: tokens.frozen(x, anomaly)},
        views,
        args.repeats,
    )

    from anomalib_ncd.detector import make_patchcore

    patchcore = make_patchcore().model.eval()  # channels-last as make_patchcore builds it
    plain_patchcore = to_nchw(patchcore)
    for module in (patchcore, plain_patchcore):
        module.training = False
    images = torch.randn(args.batch, 3, 288, 288)

    def embedding(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            features = model.feature_extractor(x)
            features = {layer: model.feature_pooler(feature) for layer, feature in features.items()}
            return model.generate_embedding(features)

        return forward

    side_by_side(
        "Patchcore embedding (288 px)",
        {"nchw": embedding(plain_patchcore), "channels_last": embedding(patchcore)},
        images,
        args.repeats,
    )


if __name__ == "__main__":
    main()
