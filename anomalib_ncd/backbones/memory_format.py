"""Channels-last convolution weights: the faster layout for the CNNs this package runs.

PyTorch's CPU convolutions (oneDNN) work in channels-last (NHWC) internally; with NCHW weights
every depthwise convolution of a MobileNet or EfficientNet reorders its input and output, which
doubles the time of a forward pass on 2 cores (``benchmarks/channels_last_speed.py`` prints the
ratio). On a GPU channels-last is the layout mixed precision prefers. A convolution whose weight
is channels-last gives a channels-last output whatever its input's layout, so converting the
weights once is enough. The results are the same up to float rounding.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def channels_last(module: ModuleT) -> ModuleT:
    """Store the module's 4-d weights channels-last, in place (other tensors are unchanged).

    Loading a state dict afterwards copies into these tensors and keeps their layout.

    Args:
        module: any module (a detector, a backbone).

    Returns:
        The same module.
    """
    module.to(memory_format=torch.channels_last)
    return module
