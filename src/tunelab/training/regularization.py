"""Regularizers that limit how far fine-tuning moves the weights (against catastrophic forgetting).

- L2-SP (Li et al., 2018): strength/2 * sum ||theta - theta0||^2 over the trainable parameters.
- EWC (Kirkpatrick et al., 2017): strength/2 * sum F * (theta - theta0)^2, with F the diagonal empirical
  Fisher information estimated on general (non-target) data before fine-tuning: the mean over batches
  of squared gradients of the loss (a batch-level approximation of the per-example estimate).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


from tunelab.modeling import Arch
from tunelab.training.loss import completion_loss


class AnchoredPenalty:
    """strength/2 * sum w * (theta - theta0)^2, with w = 1 (L2-SP) or the Fisher diagonal (EWC)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        strength: float,
        weights: dict[torch.nn.Parameter, torch.Tensor] | None = None,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]
        self.strength = strength
        self.weights = [weights[p] for p in self.params] if weights is not None else None

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.params[0].device)
        if self.strength == 0:
            return total
        for i, (p, a) in enumerate(zip(self.params, self.anchors)):
            d2 = (p - a).pow(2)
            total = total + (d2 * self.weights[i]).sum() if self.weights is not None else total + d2.sum()
        return 0.5 * self.strength * total


def estimate_fisher(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], arch: Arch, max_batches: int | None = None
) -> dict[torch.nn.Parameter, torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = {p: torch.zeros_like(p) for p in params}
    was_training = model.training
    model.eval()  # no dropout noise in the estimate
    n = 0
    device = params[0].device
    for batch in batches:
        if max_batches is not None and n >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        completion_loss(model, {k: v.to(device) for k, v in batch.items()}, arch).backward()
        for p in params:
            if p.grad is not None:
                fisher[p] += p.grad.detach().pow(2)
        n += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {p: f / max(n, 1) for p, f in fisher.items()}
