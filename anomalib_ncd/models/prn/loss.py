"""PRN's segmentation loss: Smooth L1 on the probabilities plus 5 x focal loss (alpha 0.5, gamma 4)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss (Lin et al., 2017), averaged over pixels.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p_t`` the probability of the true label and
    ``alpha_t = alpha`` for anomalous pixels, ``1 - alpha`` for normal ones.

    Args:
        logits: ``(B, 1, H, W)`` logits.
        target: ``(B, 1, H, W)`` masks in ``{0, 1}``.
        alpha: weight of the anomalous class.
        gamma: focusing exponent.

    Returns:
        The mean loss.

    Example:
        >>> logits, target = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])
        >>> round(focal_loss(logits, target).item(), 4)  # p_t = 0.5 everywhere: 0.5 * 0.5**4 * log 2
        0.0217
    """
    probability = torch.sigmoid(logits)
    p_t = torch.where(target > 0.5, probability, 1 - probability)
    alpha_t = torch.where(target > 0.5, torch.full_like(target, alpha), torch.full_like(target, 1 - alpha))
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # = -log p_t, stable
    return (alpha_t * (1 - p_t).pow(gamma) * cross_entropy).mean()


class PrnLoss(nn.Module):
    """``SmoothL1(sigmoid(logits), mask) + focal_weight * Focal(logits, mask)`` (PRN: weight 5).

    Args:
        focal_weight: weight of the focal term.
        alpha: focal alpha.
        gamma: focal gamma.
    """

    def __init__(self, focal_weight: float = 5.0, alpha: float = 0.5, gamma: float = 4.0) -> None:
        super().__init__()
        self.focal_weight, self.alpha, self.gamma = focal_weight, alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss.

        Args:
            logits: ``(B, 1, H, W)``.
            target: ``(B, 1, H, W)`` masks in ``{0, 1}``.

        Returns:
            The scalar loss.
        """
        smooth = F.smooth_l1_loss(torch.sigmoid(logits), target)
        return smooth + self.focal_weight * focal_loss(logits, target, self.alpha, self.gamma)
